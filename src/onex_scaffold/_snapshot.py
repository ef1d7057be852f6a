"""A small git repository holding only the bundled template, for Copier to clone.

Copier clones a local template repository and, for uncommitted work, copies the whole
work tree into a draft commit that exists only in its clone. For the bundled template
that means cloning this entire project (tests, nodes, benchmarks) on every render, and
nodes that record a commit no later run can find, so updates cannot 3-way merge. In an
installed wheel the template is a plain folder without git, so there is no commit at all.

``snapshot()`` fixes all three: it copies ``copier.yml``, ``template/`` and
``extensions/`` into a cache repository (``$ONEX_SCAFFOLD_CACHE``, else
``$XDG_CACHE_HOME/onex-scaffold/template``, else ``~/.cache/onex-scaffold/template``) and
commits them when they changed. Snapshots form one linear history tagged with the package
version at its first snapshot, so Copier sees versions like ``0.1.0.post3`` that only
grow, and every node's recorded commit stays resolvable for as long as the cache exists.
When the cache is lost, Stage 4.5 falls back to re-rendering (see :mod:`onex_scaffold.stage`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from onex_scaffold._exceptions import SnapshotError
from onex_scaffold._files import SKIPPED_DIRS
from onex_scaffold._git import GitError, git, has_commit, run_git
from onex_scaffold._template import TEMPLATE_PARTS

CACHE_ENV: Final = "ONEX_SCAFFOLD_CACHE"
_STATE_FILE: Final = "onex-snapshot-state"

_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where the snapshot repository lives."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return (root / "onex-scaffold" / "template").resolve()


def _git(repo: Path, *args: str) -> str:
    try:
        return git(repo, *args).strip()
    except GitError as error:
        raise SnapshotError(
            f"{error} (the template cache); delete that folder or point {CACHE_ENV} elsewhere"
        ) from error


def _source_files(root: Path) -> list[str]:
    files: list[str] = []
    for part in TEMPLATE_PARTS:
        path = root / part
        if path.is_file():
            files.append(part)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
            for name in sorted(filenames):
                if not name.endswith((".pyc", ".pyo")):
                    files.append((Path(dirpath) / name).relative_to(root).as_posix())
    return files


def _fingerprint(root: Path, files: list[str]) -> str:
    """Cheap identity of the template's current content: paths, sizes, mtimes, modes."""
    digest = hashlib.sha256(str(root).encode())
    for rel in files:
        stat = (root / rel).stat()
        digest.update(f"\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_mode}".encode())
    return digest.hexdigest()


@contextmanager
def _exclusive(repo: Path) -> Iterator[None]:
    """Across threads and processes: one writer of the cache repository at a time,
    and no writer while a render reads it (see :func:`reading`)."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, open(repo.parent / f".{repo.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def reading(repo: Path) -> Iterator[None]:
    """Hold while Copier clones ``repo``: a shared lock, so any number of renders (in any
    process) read at once while a new snapshot (commit, repack) waits for them."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with open(repo.parent / f".{repo.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def snapshot(root: Path, version: str) -> tuple[Path, str]:
    """(repository, commit) holding the template at ``root`` exactly as it is now."""
    repo = cache_dir()
    files = _source_files(root)
    if "copier.yml" not in files:
        raise SnapshotError(f"{root} has no copier.yml: it is not the ONEX template")
    fingerprint = _fingerprint(root, files)
    with _exclusive(repo):
        state = repo / ".git" / _STATE_FILE
        if state.is_file():
            recorded, _, commit = state.read_text().partition(" ")
            if recorded == fingerprint and commit:
                return repo, commit
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q")
        # We hold the writer's lock, so an index lock can only be left by a run that was
        # killed mid-commit; without this every later snapshot would fail on it.
        (repo / ".git" / "index.lock").unlink(missing_ok=True)
        for entry in repo.iterdir():
            if entry.name == ".git":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for rel in files:
            destination = repo / rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, destination)
        _git(repo, "add", "-A")
        unchanged = (
            has_commit(repo, "HEAD")
            and run_git(repo, "diff", "--cached", "--quiet").returncode == 0
        )
        if not unchanged:
            _git(repo, "commit", "-q", "--no-verify", "-m", f"template from {root}")
            # One pack instead of loose objects: Copier clones this repository and deletes
            # the clone on every render, and ~80 object folders cost more than the render.
            # Deleting the old packs is safe: readers hold the shared lock (``reading``).
            _git(repo, "repack", "-a", "-d", "-q")
            _git(repo, "prune-packed")
        commit = _git(repo, "rev-parse", "HEAD")
        if not _git(repo, "tag", "--list", version):
            _git(repo, "tag", version)
        state.write_text(f"{fingerprint} {commit}")
        return repo, commit
