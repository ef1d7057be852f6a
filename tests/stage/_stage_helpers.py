"""Helpers for the Stage 4.5 tests: template git copies, file hashes, leftovers."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from helpers import git

from onex_scaffold import template_root


def copy_template(destination: Path) -> Path:
    root = template_root()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
    destination.mkdir(parents=True)
    shutil.copy2(root / "copier.yml", destination / "copier.yml")
    for folder in ("template", "extensions"):
        shutil.copytree(root / folder, destination / folder, ignore=ignore)
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
