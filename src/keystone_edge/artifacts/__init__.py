"""The artifact manager: fetch, verify, cache by content, and place into components.

``ArtifactCache.ensure`` turns a recipe's :class:`~keystone_edge.recipe.model.Artifact` into
a verified entry of the content-addressed cache (``runtime/artifacts/<sha256>/``);
``ArtifactCache.materialize`` copies or safely unpacks it into a component version's
directory. Fetchers for URI schemes plug in through :class:`ArtifactFetcher`. The rules
live in the modules: :mod:`.verify` (what is accepted), :mod:`.fetch` (the fetcher
contract), :mod:`.cache` (how entries are made and reused) and :mod:`.unpack` (what an
archive may do).
"""

from keystone_edge.artifacts.cache import ArtifactCache, CachedArtifact
from keystone_edge.artifacts.fetch import ArtifactFetcher, FetchResult, LocalFetcher, file_uri_path
from keystone_edge.artifacts.unpack import ArchiveFormat, UnpackLimits, detect_format, safe_unpack
from keystone_edge.artifacts.verify import artifact_file_name

__all__ = [
    "ArchiveFormat",
    "ArtifactCache",
    "ArtifactFetcher",
    "CachedArtifact",
    "FetchResult",
    "LocalFetcher",
    "UnpackLimits",
    "artifact_file_name",
    "detect_format",
    "file_uri_path",
    "safe_unpack",
]
