"""A rendered node as bytes in an event: a deterministic tar.gz, its tree digest, and a
safe unpacker (the bus is not trusted: no links, no absolute paths, no ``..``, bounded size).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Final

from onex_scaffold._exceptions import InvalidInputError
from onex_scaffold._files import SKIPPED_DIRS
from onex_scaffold.pipeline.events import NodeArchive

#: Most files and bytes (uncompressed) an archive may unpack to.
MAX_FILES: Final = 2000
MAX_UNPACKED_BYTES: Final = 64 * 1024 * 1024


class ArchiveError(InvalidInputError):
    """The archive is damaged, too large or holds something a node never has."""


def _private(filename: str) -> bool:
    """The owner's environment files (``.env``, ``.env.local`` ...): they may hold secrets, so
    they never travel on the bus and the pipeline never writes them (``.env.template`` does)."""
    return filename == ".env" or (filename.startswith(".env.") and filename != ".env.template")


def node_files(root: Path) -> list[str]:
    """Regular files under ``root`` (relative, sorted), skipping caches and VCS folders."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for filename in filenames:
            path = Path(dirpath) / filename
            if _private(filename):
                continue
            if path.is_file() and not path.is_symlink() and not filename.endswith(".pyc"):
                files.append(path.relative_to(root).as_posix())
    return sorted(files)


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o100)


def tree_digest(root: Path) -> str:
    """sha256 over every file's path, executable bit and content: equal trees, equal digest."""
    digest = hashlib.sha256()
    for rel in node_files(root):
        path = root / rel
        digest.update(rel.encode() + b"\0" + (b"x" if _executable(path) else b"-") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def pack(root: Path) -> NodeArchive:
    """``root`` as a reproducible tar.gz (sorted, no owners, no times)."""
    files = node_files(root)
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in files:
            path = root / rel
            data = path.read_bytes()
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if _executable(path) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    blob = raw.getvalue()
    return NodeArchive(
        data=base64.b64encode(blob).decode("ascii"),
        sha256=tree_digest(root),
        files=len(files),
        size=len(blob),
    )


def unpack(archive: NodeArchive, dest: Path) -> list[str]:
    """Write the archive's files under ``dest`` (created); check the digest. Returns the files."""
    try:
        blob = base64.b64decode(archive.data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ArchiveError(f"the node archive is not valid base64: {error}") from error
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar:
                name = member.name
                parts = Path(name).parts
                if not member.isfile():
                    raise ArchiveError(f"the node archive holds {name!r}, which is not a file")
                if name.startswith("/") or ".." in parts or not parts:
                    raise ArchiveError(f"the node archive holds an unsafe path {name!r}")
                if any(part in SKIPPED_DIRS for part in parts):
                    raise ArchiveError(f"the node archive holds {name!r} (a cache or VCS folder)")
                total += member.size
                if total > MAX_UNPACKED_BYTES or len(written) >= MAX_FILES:
                    raise ArchiveError(
                        f"the node archive unpacks to more than {MAX_FILES} files or "
                        f"{MAX_UNPACKED_BYTES} bytes"
                    )
                source = tar.extractfile(member)
                if source is None:
                    raise ArchiveError(f"cannot read {name!r} from the node archive")
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
                target.chmod(0o755 if member.mode & 0o100 else 0o644)
                written.append(name)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as error:
        raise ArchiveError(f"the node archive cannot be read: {error}") from error
    actual = tree_digest(dest)
    if actual != archive.sha256:
        raise ArchiveError(
            f"the node archive's files do not match its digest (sha256 {actual}, the event "
            f"says {archive.sha256}): it was damaged or altered on the way"
        )
    return sorted(written)


def encoded_size(archive: NodeArchive) -> int:
    return len(archive.data)
