"""Implementation of the ``crossent`` command; the entry point is :func:`crossent.cli.main`.

Modules: ``_parser`` (argparse), ``_common`` (data loading, output folders, atomic files),
``_model`` (model files and preprocessing), ``_summary`` (text and JSON summaries),
``_train`` (training, checkpoints, Ctrl-C), ``_predict`` (evaluate, predict),
``_gradcheck`` (finite-difference check of the gradient).
"""
