"""What an update can leave behind: conflict markers, ``.rej`` files, unmerged paths.

One rule for conflict markers, used by Stage 4.5's update gate and :func:`leftovers`: a file
holds an unresolved conflict when it has both a line opening one (``<<<<<<< ``) and a line
closing one (``>>>>>>> ``). A lone ``=======`` (Markdown underline) or a single marker in
prose is not a conflict.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from onex_scaffold._files import relative_files
from onex_scaffold._git import run_git

__all__ = ["has_conflict_markers", "leftovers"]

_OPENING: Final = re.compile(rb"^<{7}(?: |$)", re.MULTILINE)
_CLOSING: Final = re.compile(rb"^>{7}(?: |$)", re.MULTILINE)


def has_conflict_markers(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes) holds an unresolved merge conflict."""
    return bool(_OPENING.search(data) and _CLOSING.search(data))


def leftovers(project: str | os.PathLike[str]) -> list[str]:
    """Problems an update left behind: conflict markers, ``*.rej`` files, unmerged paths.

    An empty list means the project can be committed as it is.
    """
    root = Path(project)
    problems: list[str] = []
    for relative in relative_files(root):
        path = root / relative
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix == ".rej":
            problems.append(f"{relative}: rejected hunks; apply them by hand and delete the file")
            continue
        if has_conflict_markers(path.read_bytes()):
            problems.append(f"{relative}: unresolved conflict markers")
    if (root / ".git").exists():
        unmerged = run_git(root, "diff", "--name-only", "--diff-filter=U").stdout.split()
        problems.extend(f"{name}: unmerged in git" for name in unmerged)
    return problems
