"""Rendered nodes travel in events as a tar.gz with a tree digest; the unpacker trusts nothing."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from onex_scaffold.pipeline import archive
from onex_scaffold.pipeline.events import NodeArchive


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("x = 1\n")
    (root / "start.py").write_text("print()\n")
    (root / "start.py").chmod(0o755)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    return root


def test_round_trip_is_reproducible(tmp_path: Path) -> None:
    root = _tree(tmp_path / "node")
    packed = archive.pack(root)
    assert packed == archive.pack(root)  # byte for byte: no times, no owners
    assert packed.files == 2
    files = archive.unpack(packed, tmp_path / "copy")
    assert files == ["pkg/a.py", "start.py"]
    assert archive.tree_digest(tmp_path / "copy") == packed.sha256
    assert (tmp_path / "copy" / "start.py").stat().st_mode & 0o100


def test_altered_content_is_refused(tmp_path: Path) -> None:
    packed = archive.pack(_tree(tmp_path / "node"))
    other = archive.pack(_tree(tmp_path / "other") and tmp_path / "other")
    (tmp_path / "other" / "pkg" / "a.py").write_text("x = 2\n")
    changed = archive.pack(tmp_path / "other")
    forged = NodeArchive(data=changed.data, sha256=packed.sha256, files=2, size=changed.size)
    assert other.sha256 == packed.sha256
    with pytest.raises(archive.ArchiveError, match="do not match its digest"):
        archive.unpack(forged, tmp_path / "dest")


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil", "a/.git/config"])
def test_unsafe_paths_are_refused(tmp_path: Path, name: str) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    blob = raw.getvalue()
    bad = NodeArchive(
        data=base64.b64encode(blob).decode(), sha256="0" * 64, files=1, size=len(blob)
    )
    with pytest.raises(archive.ArchiveError):
        archive.unpack(bad, tmp_path / "dest")
    assert not (tmp_path / "evil.py").exists()


def test_links_are_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    blob = raw.getvalue()
    bad = NodeArchive(
        data=base64.b64encode(blob).decode(), sha256="0" * 64, files=1, size=len(blob)
    )
    with pytest.raises(archive.ArchiveError, match="not a file"):
        archive.unpack(bad, tmp_path / "dest")
