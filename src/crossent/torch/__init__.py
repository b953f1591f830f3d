"""PyTorch back end of crossent (placeholder; the front end lands from another branch)."""
