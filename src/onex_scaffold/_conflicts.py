"""What an update can leave behind: conflict markers, ``.rej`` files, unmerged paths.

One rule for conflict markers, used by Stage 4.5's update gate, :func:`leftovers` and the
template's update migration: a file holds an unresolved conflict when it has both a line
opening one (``<<<<<<< ``) and a line closing one (``>>>>>>> ``). A lone ``=======``
(Markdown underline) or a single marker in prose is not a conflict.

The rule lives in the template's ``extensions/project_files.py`` (stdlib-only), not here: the
migration runs inside plain ``copier update``, where this package may not be installed,
and the wheel ships ``extensions/`` with the template, so this module loads that file.
"""

from __future__ import annotations

import os
from pathlib import Path

from onex_scaffold._files import relative_files
from onex_scaffold._git import run_git
from onex_scaffold._template import load_extension_module

__all__ = ["has_conflict_markers", "leftovers"]


def has_conflict_markers(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes) holds an unresolved merge conflict
    (the rule of ``extensions/project_files.py``)."""
    return bool(load_extension_module("project_files").has_conflict_markers(data))


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
