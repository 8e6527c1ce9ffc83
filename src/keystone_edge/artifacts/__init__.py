"""The artifact manager: fetch, verify, cache by content, and place into components.

``ArtifactCache.ensure`` turns a recipe's :class:`~keystone_edge.recipe.model.Artifact` into
a verified entry of the content-addressed cache (``runtime/artifacts/<sha256>/``);
``ArtifactCache.materialize`` copies or safely unpacks it into a component version's
directory. Fetchers for URI schemes plug in through :class:`ArtifactFetcher`. The rules
live in the modules: :mod:`.verify` (what is accepted), :mod:`.fetch` (the fetcher
contract), :mod:`.http` (downloads: retry, resume, redirects, TLS), :mod:`.cache` (how
entries are made and reused), :mod:`.gc` (what is kept and what is evicted) and
:mod:`.unpack` (what an archive may do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keystone_edge.artifacts.cache import ArtifactCache, CachedArtifact, CacheEntry
from keystone_edge.artifacts.fetch import (
    ArtifactFetcher,
    FetchResult,
    LocalFetcher,
    ProgressCallback,
    ResumableFetcher,
    file_uri_path,
)
from keystone_edge.artifacts.gc import (
    GcPlan,
    GcReport,
    VersionArtifacts,
    collect_garbage,
    plan_gc,
    retention,
)
from keystone_edge.artifacts.http import HttpFetcher, HttpOptions, HttpSource
from keystone_edge.artifacts.verify import UnpackLimits, artifact_file_name, public_uri

if TYPE_CHECKING:
    from keystone_edge.artifacts.unpack import ArchiveFormat, detect_format, safe_unpack


def __getattr__(name: str) -> Any:
    # The unpacker (tarfile, zipfile, lzma, bz2) loads on first use, not with the agent.
    if name in ("ArchiveFormat", "detect_format", "safe_unpack"):
        from keystone_edge.artifacts import unpack

        return getattr(unpack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArchiveFormat",
    "ArtifactCache",
    "ArtifactFetcher",
    "CacheEntry",
    "CachedArtifact",
    "FetchResult",
    "GcPlan",
    "GcReport",
    "HttpFetcher",
    "HttpOptions",
    "HttpSource",
    "LocalFetcher",
    "ProgressCallback",
    "ResumableFetcher",
    "UnpackLimits",
    "VersionArtifacts",
    "artifact_file_name",
    "collect_garbage",
    "detect_format",
    "file_uri_path",
    "plan_gc",
    "public_uri",
    "retention",
    "safe_unpack",
]
