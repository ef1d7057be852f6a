"""Which template version this node was rendered from.

Copier records it as ``_commit`` in the project's answers file (``git describe`` of
the template: a version tag such as ``v0.3.0``, or ``v0.3.0-4-gabc1234`` / a commit
hash between tags). It is read when the node starts rather than rendered into the
code: a rendered constant would change every template-owned file's bytes with every
template commit. ``TEMPLATE_VERSION`` (environment or ``.env``) overrides the file,
e.g. where the image is built without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

ANSWERS_FILE: Final = ".copier-answers.yml"
#: What a ``_commit`` value may look like: a tag, ``git describe`` output or a hash.
VERSION_PATTERN: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,127}")
_COMMIT_LINE: Final = re.compile(r"^_commit:[ \t]*['\"]?([^'\"\r\n#]*?)['\"]?[ \t]*$", re.M)
#: The answers file is a few hundred bytes; never read a planted huge file whole.
_MAX_READ: Final = 64 * 1024


def answers_file_candidates() -> list[Path]:
    """The working directory (``start_node.py`` runs from the project root, in the image
    too), then the project this package sits in (a checkout or an editable install)."""
    return [Path.cwd() / ANSWERS_FILE, Path(__file__).resolve().parents[2] / ANSWERS_FILE]


def read_commit(path: Path) -> str | None:
    """``_commit`` of one answers file, or None when absent or not a version."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(_MAX_READ)
    except OSError:
        return None
    match = _COMMIT_LINE.search(text)
    if match is None:
        return None
    value = match.group(1).strip()
    return value if VERSION_PATTERN.fullmatch(value) else None


def template_version(override: str = "", candidates: Iterable[Path] | None = None) -> str:
    """``override`` if given, else the first answers file's ``_commit``, else ``"unknown"``."""
    if override:
        return override
    for path in answers_file_candidates() if candidates is None else candidates:
        found = read_commit(path)
        if found:
            return found
    return "unknown"
