"""Constants and types shared by the recipe tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# write(name, text) -> path relative to the test's working directory
Write = Callable[[str, str], Path]

MINIMAL = """\
[metadata]
name = "com.example.app"
version = "1.0.0"
"""
