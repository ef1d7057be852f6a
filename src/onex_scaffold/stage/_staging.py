"""Staging, merging and installing: the file-system side of a run.

A node is never written in place. It is rendered (new) or updated (existing) in a staging
folder beside the output folder, on the same file system, and only moved in when every gate
passed. Copier changes the process working directory while it runs (plumbum's
``local.cwd`` calls ``os.chdir``), so every Copier call holds one process-wide lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onex_scaffold._answers import ANSWERS_FILE, recorded_answers
from onex_scaffold._conflicts import has_conflict_markers
from onex_scaffold._exceptions import AnswerError, RenderError
from onex_scaffold._git import GIT_ENV, GitError, git, has_commit, toplevel
from onex_scaffold.stage._gates import GateFailed

__all__ = [
    "dirty_under",
    "drop_draft_commit_change",
    "folder_lock",
    "install_new",
    "install_update",
    "missing_merge_base",
    "run_copier",
    "stage_git",
    "staged_changes",
    "target_lock",
]

# Copier changes the process cwd (see module docstring): one Copier call at a time.
_COPIER_LOCK = threading.Lock()
_TARGET_LOCKS: dict[Path, threading.Lock] = {}
_TARGET_LOCKS_GUARD = threading.Lock()


def stage_git(cwd: Path, *args: str) -> str:
    """git for the stage: a failure fails the current gate."""
    try:
        return git(cwd, *args)
    except GitError as error:
        raise GateFailed(str(error)) from error


def run_copier(action: Callable[[], Any], src: str, vcs_ref: str | None) -> list[str]:
    """Run one render call under the lock; returns the text of dirty-template warnings."""
    from plumbum import local

    from onex_scaffold._snapshot import cache_dir, reading

    cache = cache_dir()
    # The snapshot repository is only read while Copier clones it (no repack meanwhile).
    hold = reading(cache) if src == str(cache) else contextlib.nullcontext()
    # Copier commits in its own temporary repositories during updates; give those commits
    # an identity so they work without a user git config (CI, containers).
    with (
        hold,
        _COPIER_LOCK,
        local.env(**GIT_ENV),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            action()
        except RenderError as error:
            raise GateFailed(
                f"rendering {src} at {vcs_ref or 'its newest tag'} failed: {error}",
                refused_input=isinstance(error, AnswerError),
            ) from error
    return [str(item.message) for item in caught if "Dirty" in type(item.message).__name__]


def dirty_under(folder: Path) -> list[str]:
    """Uncommitted paths under ``folder`` when it is in a git work tree, else []."""
    if toplevel(folder) is None:
        return []
    status = stage_git(folder, "status", "--porcelain", "--untracked-files=all", "--", ".")
    return [line[3:] for line in status.splitlines() if line.strip()]


def missing_merge_base(recorded: Mapping[str, Any], template_dir: Path | None) -> str | None:
    """Why ``copier update`` cannot run for this node (no base to merge from), or None."""
    commit = recorded.get("_commit")
    if not isinstance(commit, str) or not commit:
        return "the node records no template commit (its template was not a git repository)"
    if template_dir is None:
        return None  # a URL: Copier fetches it and checks the commit itself
    if toplevel(template_dir) is None:
        return f"the template {template_dir} is not a git repository"
    if not has_commit(template_dir, commit):
        return (
            f"template commit {commit!r} is not in {template_dir} (the node was made from "
            "uncommitted template changes, or the template history changed)"
        )
    return None


def drop_draft_commit_change(target: Path, staged: Path, changed: list[str]) -> list[str]:
    """Nothing but a new draft ``_commit`` changed: keep the node as it is.

    A template with uncommitted changes gets a new throw-away commit id on every render,
    which says nothing about the node; rewriting the answers file for it would make
    every re-run look like a change.
    """
    old, new = recorded_answers(target), recorded_answers(staged)
    old.pop("_commit", None)
    new.pop("_commit", None)
    if old == new:
        (staged / ANSWERS_FILE).write_bytes((target / ANSWERS_FILE).read_bytes())
        return []
    return changed


def staged_changes(staged: Path) -> tuple[list[str], list[str]]:
    """(changed paths, conflicting paths) in the staging repository after an update."""
    status = stage_git(staged, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    changed: list[str] = []
    conflicts: list[str] = []
    entries = status.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC" and index < len(entries):
            changed.append(entries[index])  # the rename source: gone from the node
            index += 1
        changed.append(path)
        if "U" in code or code in ("AA", "DD") or path.endswith(".rej"):
            conflicts.append(path)
            continue
        file = staged / path
        if file.is_file() and not file.is_symlink() and has_conflict_markers(file.read_bytes()):
            conflicts.append(path)
    return sorted(set(changed)), sorted(set(conflicts))


def install_new(staging_root: Path, target: Path) -> None:
    """Rename the staged node to ``target`` (absent or an empty folder)."""
    staged = staging_root / "node"
    try:
        if target.exists():
            target.rmdir()  # only an empty folder gets here; rmdir refuses anything else
        os.rename(staged, target)
    except OSError as error:
        raise GateFailed(
            f"{target} changed while the node was rendered (something else wrote there); "
            f"nothing was installed: {error.strerror}"
        ) from error
    staging_root.rmdir()


def install_update(staging_root: Path, target: Path, changed: list[str]) -> None:
    """Move changed files from the staged copy into ``target``; undo everything on error."""
    staged = staging_root / "node"
    backup = staging_root / "backup"
    done: list[tuple[Path, Path | None]] = []  # (target file, its backup or None if new)
    try:
        for rel in changed:
            source = staged / rel
            destination = target / rel
            saved: Path | None = None
            if destination.exists() or destination.is_symlink():
                saved = backup / rel
                saved.parent.mkdir(parents=True, exist_ok=True)
                os.rename(destination, saved)
            done.append((destination, saved))
            if source.exists() or source.is_symlink():
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, destination)
    except BaseException:
        for destination, saved in reversed(done):
            if destination.exists() or destination.is_symlink():
                destination.unlink()
            if saved is not None:
                os.rename(saved, destination)
        raise


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Across processes: one update of an existing node folder at a time (flock on it)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise GateFailed(
                f"another process is updating {folder} right now; wait for it to finish"
            ) from error
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


@contextmanager
def target_lock(target: Path) -> Iterator[None]:
    """In this process: one run at a time per output folder (refused, not queued)."""
    with _TARGET_LOCKS_GUARD:
        lock = _TARGET_LOCKS.setdefault(target, threading.Lock())
    if not lock.acquire(blocking=False):
        raise GateFailed(
            f"another Stage 4.5 run is writing {target} right now; wait for it to finish"
        )
    try:
        yield
    finally:
        lock.release()
