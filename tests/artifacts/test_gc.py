"""Garbage collection: retention and eviction decisions, then the executor on a real cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.artifacts import (
    ArtifactCache,
    CacheEntry,
    LocalFetcher,
    VersionArtifacts,
    collect_garbage,
    plan_gc,
    retention,
)
from keystone_edge.recipe.model import Artifact


def entry(name: str, size: int, last_used: float) -> CacheEntry:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return CacheEntry(digest, name, size, last_used, f"https://h/{name}")


A, B, C, D = (entry(n, 100, t) for n, t in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)))


def removed(plan_entries: list[CacheEntry], protected: set[str], quota: int) -> list[str]:
    return [e.entry.file for e in plan_gc(plan_entries, protected, quota).remove]


# -- plan_gc ---------------------------------------------------------------------------------


def test_nothing_goes_while_the_cache_fits_its_quota() -> None:
    plan = plan_gc([A, B, C, D], set(), 400)
    assert plan.remove == ()
    assert (plan.total_bytes, plan.remaining_bytes, plan.over_quota_bytes) == (400, 400, 0)


def test_least_recently_used_go_first_until_the_cache_fits() -> None:
    assert removed([D, C, B, A], set(), 250) == ["a", "b"]
    plan = plan_gc([D, C, B, A], set(), 250)
    assert plan.freed_bytes == 200
    assert plan.remaining_bytes == 200
    assert plan.remove[0].reason == (
        "least recently used; the cache held 400 bytes, over its quota of 250"
    )
    assert plan.remove[1].reason == (
        "least recently used; the cache held 300 bytes, over its quota of 250"
    )


def test_protected_entries_are_never_removed_even_over_quota() -> None:
    protected = {A.sha256, C.sha256}
    assert removed([A, B, C, D], protected, 0) == ["b", "d"]
    plan = plan_gc([A, B, C, D], protected, 50)
    assert plan.protected_bytes == 200
    assert plan.over_quota_bytes == 150


def test_ties_in_last_use_are_broken_by_digest() -> None:
    x, y = entry("x", 100, 5.0), entry("y", 100, 5.0)
    first = min(x, y, key=lambda e: e.sha256)
    assert removed([y, x], set(), 100) == [first.file]


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.floats(0, 1e9), st.booleans()),
        max_size=30,
    ),
    st.integers(0, 200_000),
)
def test_plans_respect_protection_order_and_quota(
    specs: list[tuple[int, float, bool]], quota: int
) -> None:
    entries = [entry(f"f{i}", size, t) for i, (size, t, _) in enumerate(specs)]
    protected = {e.sha256 for e, (_, _, keep) in zip(entries, specs, strict=True) if keep}
    plan = plan_gc(entries, protected, quota)
    gone = [e.entry for e in plan.remove]
    assert not {e.sha256 for e in gone} & protected
    # Oldest first, and nothing newer than a kept evictable entry goes before it.
    assert gone == sorted(gone, key=lambda e: (e.last_used, e.sha256))
    kept_candidates = [e for e in entries if e.sha256 not in protected and e not in gone]
    if gone and kept_candidates:
        assert max((e.last_used, e.sha256) for e in gone) < min(
            (e.last_used, e.sha256) for e in kept_candidates
        )
    # Fits the quota unless only protected entries are left; removes no more than needed.
    if plan.remaining_bytes > quota:
        assert not kept_candidates
    if gone:
        assert plan.remaining_bytes + gone[-1].size > quota


def test_a_negative_quota_is_refused() -> None:
    with pytest.raises(ValueError, match="quota_bytes: expected zero or more, got -1"):
        plan_gc([], set(), -1)


# -- retention -------------------------------------------------------------------------------


def v(component: str, version: str, *digests: str, in_use: bool = False) -> VersionArtifacts:
    return VersionArtifacts(component, version, frozenset(digests), in_use)


def test_in_use_and_the_previous_versions_are_protected() -> None:
    history = [
        v("app", "3.0.0", "d3", in_use=True),
        v("app", "2.0.0", "d2"),
        v("app", "1.0.0", "d1"),
        v("app", "0.9.0", "d0"),
        v("db", "1.0.0", "shared", in_use=True),
        v("app", "0.8.0", "shared"),
    ]
    kept = retention(history, keep_versions=2, needed={"queued"})
    assert kept.protected == {
        "d3": ("app@3.0.0 in use",),
        "d2": ("app@2.0.0 kept for rollback",),
        "d1": ("app@1.0.0 kept for rollback",),
        "shared": ("db@1.0.0 in use",),
        "queued": ("needed by a deployment",),
    }
    assert kept.references["shared"] == ("db@1.0.0", "app@0.8.0")
    assert kept.references["d0"] == ("app@0.9.0",)
    assert "d0" not in kept.protected


def test_keep_zero_keeps_only_what_is_in_use() -> None:
    kept = retention([v("app", "2", "x", in_use=True), v("app", "1", "y")], keep_versions=0)
    assert set(kept.protected) == {"x"}


# -- the executor, on real files --------------------------------------------------------------


async def _fill(cache: ArtifactCache, sources: Path, names: list[str]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for name in names:
        data = name.encode() * 1000
        path = sources / name
        path.write_bytes(data)
        cached = await cache.ensure(
            Artifact(uri=path.as_uri(), sha256=hashlib.sha256(data).hexdigest())
        )
        digests[name] = cached.sha256
    return digests


def _last_used(root: Path, digest: str, when: float) -> None:
    os.utime(root / digest, (when, when))


async def test_entries_list_what_the_cache_holds(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    digests = await _fill(cache, sources, ["a.bin", "b.bin"])
    _last_used(cache_root, digests["a.bin"], 1_000_000.0)
    (cache_root / ("f" * 64)).mkdir()  # debris: no record
    (cache_root / ".keystone-partial").mkdir()

    listed = await cache.entries()

    assert [(e.file, e.size) for e in listed] == sorted(
        [("a.bin", 5000), ("b.bin", 5000)], key=lambda t: digests[t[0]]
    )
    by_name = {e.file: e for e in listed}
    assert by_name["a.bin"].last_used == 1_000_000.0
    assert by_name["a.bin"].sha256 == digests["a.bin"]
    assert by_name["a.bin"].uri == (sources / "a.bin").as_uri()


async def test_collect_evicts_lru_and_keeps_protected(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    digests = await _fill(cache, sources, ["a.bin", "b.bin", "c.bin", "d.bin"])
    for i, name in enumerate(["a.bin", "b.bin", "c.bin", "d.bin"]):
        _last_used(cache_root, digests[name], 1_000_000.0 + i)
    protected = {digests["a.bin"]}

    dry = await collect_garbage(cache, protected=protected, quota_bytes=10_000, dry_run=True)
    assert [e.entry.file for e in dry.removed] == ["b.bin", "c.bin"]
    assert len(await cache.entries()) == 4  # a dry run removes nothing

    report = await collect_garbage(cache, protected=protected, quota_bytes=10_000)

    assert [e.entry.file for e in report.removed] == ["b.bin", "c.bin"]
    assert report.freed_bytes == 10_000
    assert sorted(e.file for e in await cache.entries()) == ["a.bin", "d.bin"]
    assert sorted(p.name for p in cache_root.iterdir()) == sorted(
        [digests["a.bin"], digests["d.bin"]]
    )
    # The cache still works for what was evicted: it is fetched again.
    again = await _fill(cache, sources, ["b.bin"])
    assert (cache_root / again["b.bin"] / "b.bin").exists()


async def test_an_entry_used_after_listing_is_skipped(
    cache: ArtifactCache, cache_root: Path, sources: Path
) -> None:
    digests = await _fill(cache, sources, ["a.bin"])
    _last_used(cache_root, digests["a.bin"], 1_000_000.0)
    (listed,) = await cache.entries()
    # A deployment uses it in between (ensure refreshes the last-used time).
    await _fill(cache, sources, ["a.bin"])

    assert await cache.evict(listed.sha256, unused_since=listed.last_used) is False
    assert (cache_root / digests["a.bin"]).exists()
    assert await cache.evict(listed.sha256) is True
    assert not (cache_root / digests["a.bin"]).exists()
    assert await cache.evict(listed.sha256) is False
    assert [p.name for p in cache_root.iterdir()] == []


async def test_evict_refuses_what_is_not_a_digest(cache: ArtifactCache) -> None:
    from keystone_edge.errors import ArtifactError

    with pytest.raises(ArtifactError, match=r"cannot evict '\.\./x': expected a sha256 digest"):
        await cache.evict("../x")


def test_a_fresh_cache_has_no_entries(tmp_path: Path) -> None:
    import asyncio

    cache = ArtifactCache(tmp_path / "nothing", [LocalFetcher()])
    assert asyncio.run(cache.entries()) == []
