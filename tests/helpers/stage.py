"""Helpers for the Stage 4.5 tests (tests/stage): template git copies, file hashes, leftovers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from helpers import git
from onex_scaffold._template import copy_template as copy_template_parts


def copy_template(destination: Path) -> Path:
    """A git copy of the bundled template at tag 1.0.0."""
    copy_template_parts(destination)
    git(destination, "init", "-q", "-b", "main")
    git(destination, "add", "-A")
    git(destination, "commit", "-q", "-m", "template 1.0.0")
    git(destination, "tag", "1.0.0")
    return destination


def release(repo: Path, tag: str, change: Callable[[Path], None]) -> None:
    """Commit ``change`` to the template repo as version ``tag``."""
    change(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"template {tag}")
    git(repo, "tag", tag)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (``.git`` excluded), by relative path."""
    hashes: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            path = Path(dirpath, filename)
            hashes[path.relative_to(root).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return hashes


def leftovers_beside(target: Path) -> list[str]:
    """Staging folders the stage may have left next to ``target``."""
    if not target.parent.exists():
        return []
    return sorted(p.name for p in target.parent.iterdir() if ".onex-" in p.name)
