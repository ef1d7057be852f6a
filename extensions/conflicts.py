"""The one rule for unresolved merge conflicts in a file. Stdlib-only.

Two users, one file: the template's update migration (``migrate.py``, run by plain Copier
where ``onex_scaffold`` may not be installed) loads it from beside itself, and
``onex_scaffold._conflicts`` (Stage 4.5's update gate, ``leftovers``) loads it from the
template it ships (``extensions/`` is in the wheel).

A file holds an unresolved conflict when it has both a line opening one (``<<<<<<<`` alone
or followed by a space and a label) and a line closing one (``>>>>>>>`` likewise). A lone
``=======`` (a Markdown underline) or a single marker quoted in prose is not a conflict.
"""

from __future__ import annotations

import re

OPENING = re.compile(rb"^<{7}(?: |$)", re.MULTILINE)
CLOSING = re.compile(rb"^>{7}(?: |$)", re.MULTILINE)


def has_conflict_markers(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes) holds an unresolved merge conflict."""
    return bool(OPENING.search(data) and CLOSING.search(data))
