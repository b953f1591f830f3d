"""docs/derivation.md stays true: every test and function it names exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOC = (ROOT / "docs" / "derivation.md").read_text(encoding="utf-8")


def test_every_named_test_exists():
    named = 0
    for path, first, rest in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`((?:, `::\w+`)*)", DOC):
        source = (ROOT / path).read_text(encoding="utf-8")
        for name in [first, *re.findall(r"::(\w+)", rest)]:
            assert f"def {name}(" in source, f"docs/derivation.md names {path}::{name}"
            named += 1
    assert named >= 30, f"only {named} tests named: did the table format change?"


def test_every_named_function_exists():
    names = re.findall(r"`crossent\.(\w+):(\w+)", DOC)
    assert len(names) >= 8
    for module, function in names:
        assert hasattr(importlib.import_module(f"crossent.{module}"), function), (module, function)
