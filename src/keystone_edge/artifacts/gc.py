"""Garbage collection of the artifact cache: what to keep, what to evict, and doing it.

The decisions are plain functions over values (:func:`retention`, :func:`plan_gc`); the
executor (:func:`collect_garbage`) lists the cache, plans, and removes entries through
:meth:`ArtifactCache.evict`, in worker threads. Rules:

- **Protected** entries are never removed: the artifacts of every component version in
  use, of the previous ``keep_versions`` versions of each component (for rollback), and
  every digest the caller adds (what a running or queued deployment needs).
- Everything else stays cached while the cache fits its quota: the cache is a cache, and an
  older version may come back offline. Once the entries' total size exceeds the quota,
  unprotected entries are evicted least recently used first (oldest ``last_used``, then
  digest order for ties) until the total fits.
- If the protected entries alone exceed the quota, they all stay and the plan says by how
  much the cache is over (:attr:`GcPlan.over_quota_bytes`).
- Execution re-checks each entry under its digest lock: an entry used after it was listed
  (a deployment just chose it) is skipped, not removed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from keystone_edge.artifacts.cache import ArtifactCache, CacheEntry

__all__ = [
    "Eviction",
    "GcPlan",
    "GcReport",
    "Retention",
    "VersionArtifacts",
    "collect_garbage",
    "plan_gc",
    "retention",
]


@dataclass(frozen=True, slots=True)
class VersionArtifacts:
    """The artifact digests one component version references."""

    component: str
    version: str
    digests: frozenset[str]
    in_use: bool = False  # installed now, or the version a deployment is installing


@dataclass(frozen=True, slots=True)
class Retention:
    """Why digests are kept: ``protected`` maps each kept digest to its reasons;
    ``references`` maps every digest of every listed version to ``component@version``."""

    protected: Mapping[str, tuple[str, ...]]
    references: Mapping[str, tuple[str, ...]]


def retention(
    versions: Iterable[VersionArtifacts],
    *,
    keep_versions: int,
    needed: Collection[str] = (),
) -> Retention:
    """Which digests the garbage collector must keep.

    ``versions`` lists, per component, its known versions **most recent first** (the
    order of the deployment history; versions of different components may interleave).
    Versions in use are kept, and so are the first ``keep_versions`` versions of each
    component that are not in use. ``needed`` are digests a running or queued deployment
    needs.
    """
    if keep_versions < 0:
        raise ValueError(f"keep_versions: expected zero or more, got {keep_versions}")
    protected: dict[str, list[str]] = {}
    references: dict[str, list[str]] = {}
    previous: dict[str, int] = {}
    for version in versions:
        ref = f"{version.component}@{version.version}"
        if version.in_use:
            why: str | None = f"{ref} in use"
        else:
            rank = previous.get(version.component, 0) + 1
            previous[version.component] = rank
            why = f"{ref} kept for rollback" if rank <= keep_versions else None
        for digest in sorted(version.digests):
            refs = references.setdefault(digest, [])
            if ref not in refs:
                refs.append(ref)
            if why is not None and why not in protected.get(digest, []):
                protected.setdefault(digest, []).append(why)
    for digest in needed:
        protected.setdefault(digest, []).append("needed by a deployment")
    return Retention(
        protected={d: tuple(r) for d, r in protected.items()},
        references={d: tuple(r) for d, r in references.items()},
    )


@dataclass(frozen=True, slots=True)
class Eviction:
    entry: CacheEntry
    reason: str


@dataclass(frozen=True, slots=True)
class GcPlan:
    """What to remove, and the sizes (bytes) before and after."""

    remove: tuple[Eviction, ...]
    total_bytes: int
    quota_bytes: int
    protected_bytes: int

    @property
    def freed_bytes(self) -> int:
        return sum(e.entry.size for e in self.remove)

    @property
    def remaining_bytes(self) -> int:
        return self.total_bytes - self.freed_bytes

    @property
    def over_quota_bytes(self) -> int:
        """How far the cache stays over its quota after the plan (protected content)."""
        return max(0, self.remaining_bytes - self.quota_bytes)


def plan_gc(entries: Iterable[CacheEntry], protected: Collection[str], quota_bytes: int) -> GcPlan:
    """Evict unprotected entries, least recently used first, until the cache fits."""
    if quota_bytes < 0:
        raise ValueError(f"quota_bytes: expected zero or more, got {quota_bytes}")
    listed = list(entries)
    total = sum(e.size for e in listed)
    protected_bytes = sum(e.size for e in listed if e.sha256 in protected)
    candidates = sorted(
        (e for e in listed if e.sha256 not in protected), key=lambda e: (e.last_used, e.sha256)
    )
    remove: list[Eviction] = []
    remaining = total
    for entry in candidates:
        if remaining <= quota_bytes:
            break
        remove.append(
            Eviction(
                entry,
                f"least recently used; the cache held {remaining} bytes, "
                f"over its quota of {quota_bytes}",
            )
        )
        remaining -= entry.size
    return GcPlan(tuple(remove), total, quota_bytes, protected_bytes)


@dataclass(frozen=True, slots=True)
class GcReport:
    """What a collection did (or, with ``dry_run``, would do)."""

    plan: GcPlan
    dry_run: bool
    removed: tuple[Eviction, ...] = ()
    skipped: tuple[Eviction, ...] = field(default=())  # used meanwhile, or already gone

    @property
    def freed_bytes(self) -> int:
        return sum(e.entry.size for e in self.removed)


async def collect_garbage(
    cache: ArtifactCache,
    *,
    protected: Collection[str],
    quota_bytes: int,
    dry_run: bool = False,
) -> GcReport:
    """List, plan and (unless ``dry_run``) evict; see the module rules."""
    plan = plan_gc(await cache.entries(), protected, quota_bytes)
    if dry_run:
        return GcReport(plan, dry_run=True, removed=plan.remove)
    removed: list[Eviction] = []
    skipped: list[Eviction] = []
    for eviction in plan.remove:
        entry = eviction.entry
        if await cache.evict(entry.sha256, unused_since=entry.last_used):
            removed.append(eviction)
        else:
            skipped.append(eviction)
    return GcReport(plan, dry_run=False, removed=tuple(removed), skipped=tuple(skipped))
