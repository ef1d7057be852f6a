"""What counts as a node project's own files, and what an unresolved conflict in one looks
like. Stdlib-only.

Two users, one file: the template's update migration (``migrate.py``, run by plain Copier
where ``onex_scaffold`` may not be installed) loads it from beside itself, and
``onex_scaffold`` (``_files.SKIPPED_DIRS``, ``_conflicts``: Stage 4.5's update gate and
``leftovers``) loads it from the template it ships (``extensions/`` is in the wheel).

* :data:`SKIPPED_DIRS`: folders never looked into when a node or the template is copied,
  compared or scanned: version control, virtual environments, tool caches, the dev stack.
* :func:`has_conflict_markers`: a file holds an unresolved conflict when it has both a line
  opening one (``<<<<<<<`` alone or followed by a space and a label) and a line closing one
  (``>>>>>>>`` likewise). A lone ``=======`` (a Markdown underline) or a single marker quoted
  in prose is not a conflict.
"""

from __future__ import annotations

import re
from typing import Final

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

OPENING = re.compile(rb"^<{7}(?: |$)", re.MULTILINE)
CLOSING = re.compile(rb"^>{7}(?: |$)", re.MULTILINE)


def has_conflict_markers(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes) holds an unresolved merge conflict."""
    return bool(OPENING.search(data) and CLOSING.search(data))
