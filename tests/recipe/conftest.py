"""Fixtures for the recipe tests: a scratch working directory to write recipes in."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.recipe.helpers import Write


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Write:
    """Write files under a fresh working directory; return each path relative to it.

    Relative paths keep error messages short and exact: ``app.recipe.toml:3: ...``.
    """
    monkeypatch.chdir(tmp_path)

    def write(name: str, text: str) -> Path:
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write
