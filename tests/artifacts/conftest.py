"""Artifact tests run against real files in a per-test temp directory.

``async def`` tests here run on a fresh event loop each (``asyncio.run``): pytest-asyncio is
not a dependency, and one loop per test keeps the per-digest locks from leaking between
tests.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from keystone_edge.artifacts import ArtifactCache, LocalFetcher


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    names = inspect.signature(function).parameters
    asyncio.run(function(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "runtime" / "artifacts"


@pytest.fixture
def cache(cache_root: Path) -> ArtifactCache:
    return ArtifactCache(cache_root, [LocalFetcher()])


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    path = tmp_path / "sources"
    path.mkdir()
    return path
