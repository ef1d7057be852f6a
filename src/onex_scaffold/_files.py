"""Folders never looked into when a node or the template is copied, compared or scanned.

One list for the staging copy of a node, the template snapshot, the leftovers scan, the
re-render comparison and the template's update migration: version control, virtual
environments and tool caches. It lives in the template's ``extensions/project_files.py``
(stdlib-only) because the migration runs inside plain Copier, where this package may not be
installed; the wheel ships ``extensions/`` with the template.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from onex_scaffold._template import load_extension_module

__all__ = ["SKIPPED_DIRS", "relative_files"]

SKIPPED_DIRS: Final[frozenset[str]] = frozenset(load_extension_module("project_files").SKIPPED_DIRS)


def relative_files(root: Path) -> list[str]:
    """Every file under ``root`` as a sorted POSIX relative path, skipped folders left out."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for filename in filenames:
            files.append((Path(dirpath) / filename).relative_to(root).as_posix())
    return sorted(files)
