"""Folders never looked into when a node or the template is copied, compared or scanned.

One list for the staging copy of a node, the template snapshot, the leftovers scan and the
re-render comparison: version control, virtual environments and tool caches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["SKIPPED_DIRS", "relative_files"]

SKIPPED_DIRS: Final = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        ".nox",
        ".tox",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".onex-dev",
    }
)


def relative_files(root: Path) -> list[str]:
    """Every file under ``root`` as a sorted POSIX relative path, skipped folders left out."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for filename in filenames:
            files.append((Path(dirpath) / filename).relative_to(root).as_posix())
    return sorted(files)
