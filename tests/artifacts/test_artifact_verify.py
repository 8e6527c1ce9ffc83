"""The artifact rules that need no I/O: digests, sizes, schemes, file names."""

from __future__ import annotations

import pytest

from keystone_edge.artifacts import artifact_file_name
from keystone_edge.artifacts.verify import (
    require_digest,
    supported_scheme,
    uri_scheme,
    verify_content,
)
from keystone_edge.errors import ArtifactError
from keystone_edge.recipe.model import Artifact

A = "a" * 64
B = "b" * 64


def test_matching_content_is_accepted() -> None:
    verify_content("file:///x", sha256=A, size=3, expected_sha256=A, expected_size=3)
    verify_content("file:///x", sha256=A, size=3, expected_sha256=None, expected_size=None)


def test_digest_mismatch_names_both_digests() -> None:
    with pytest.raises(ArtifactError) as info:
        verify_content("https://h/x", sha256=B, size=3, expected_sha256=A, expected_size=None)
    assert str(info.value) == f"sha256 mismatch for https://h/x: expected {A}, got {B}"
    assert info.value.uri == "https://h/x"


def test_size_is_checked_before_the_digest() -> None:
    with pytest.raises(ArtifactError, match=r"^size mismatch for /d/x \(local copy of u\): "):
        verify_content(
            "u",
            sha256=B,
            size=2,
            expected_sha256=A,
            expected_size=3,
            source="/d/x (local copy of u)",
        )


def test_remote_artifact_needs_a_digest_local_one_does_not() -> None:
    require_digest("file:///opt/x.bin", None)
    with pytest.raises(ArtifactError, match=r"^remote artifact https://h/x.bin has no sha256$"):
        require_digest("https://h/x.bin", None)


def test_a_malformed_digest_cannot_name_a_directory() -> None:
    with pytest.raises(ArtifactError, match="expected 64 lower-case hex digits, got '../x'"):
        require_digest("https://h/x", "../x")
    with pytest.raises(ArtifactError, match="lower-case"):
        require_digest("https://h/x", A.upper())


def test_unsupported_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(ArtifactError) as info:
        supported_scheme("ftp://h/x.tgz", {"https", "file"})
    assert str(info.value) == (
        "unsupported artifact URI scheme 'ftp' in ftp://h/x.tgz; supported: file, https"
    )
    assert supported_scheme("FILE:///x", {"file"}) == "file"


def test_uri_without_scheme_is_refused() -> None:
    with pytest.raises(ArtifactError, match="has no scheme"):
        uri_scheme("/opt/x.bin")


@pytest.mark.parametrize(
    ("uri", "name", "expected"),
    [
        ("https://h/dl/tool-1.0.tar.gz?token=1", None, "tool-1.0.tar.gz"),
        ("file:///opt/my%20tool.bin", None, "my tool.bin"),
        ("https://h/dl/download", "tool.bin", "tool.bin"),
    ],
)
def test_file_name_is_the_name_field_else_the_last_uri_segment(
    uri: str, name: str | None, expected: str
) -> None:
    assert artifact_file_name(Artifact(uri=uri, name=name)) == expected


@pytest.mark.parametrize(
    ("uri", "name", "message"),
    [
        ("https://h/x", "../evil", "expected a single path segment"),
        ("https://h/x", "a/b", "expected a single path segment"),
        ("https://h/x", "..", "expected a single path segment"),
        ("https://h/x", ".keystone-entry.json", "reserved for the artifact cache"),
        ("https://h/dir/", None, "its path has no last segment; set the artifact's 'name'"),
        ("https://h/%2e%2e", None, "expected a single path segment"),
    ],
)
def test_unsafe_file_names_are_refused(uri: str, name: str | None, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        artifact_file_name(Artifact(uri=uri, name=name))
