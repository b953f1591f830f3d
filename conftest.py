"""Collection rules for the doctests of ``src/crossent``: optional back ends are skipped
where their dependency is not installed (CI installs both)."""

from __future__ import annotations

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("src/crossent/torch")
if importlib.util.find_spec("triton") is None:
    collect_ignore.append("src/crossent/torch/_triton.py")
