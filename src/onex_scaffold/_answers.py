"""The answers file Copier writes into every node: its name, reading it, its source line.

``.copier-answers.yml`` records the answers, the template version (``_commit``) and where the
template came from (``_src_path``); ``copier update`` reads it to know what to merge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import yaml

from onex_scaffold._exceptions import RenderError

__all__ = [
    "ANSWERS_FILE",
    "is_node_from_template",
    "read_answers",
    "recorded_answers",
    "user_answers",
    "write_src_path",
]

ANSWERS_FILE: Final = ".copier-answers.yml"


def read_answers(project: str | os.PathLike[str]) -> dict[str, Any]:
    """The answers Copier recorded in the project (``_commit``, ``_src_path`` included).

    Raises :class:`RenderError` when the file is missing or not a mapping.
    """
    path = Path(project) / ANSWERS_FILE
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RenderError(f"{path} is missing: {project} was not made from the template") from error
    if not isinstance(loaded, dict):
        raise RenderError(f"{path} is not a mapping of answers; restore it from git")
    return loaded


def recorded_answers(folder: Path) -> dict[str, Any]:
    """The answers file as a dict, ``{}`` when it is absent or unreadable (never raises)."""
    try:
        data = yaml.safe_load((folder / ANSWERS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def user_answers(answers: dict[str, Any]) -> dict[str, Any]:
    """The answers without Copier's own ``_``-prefixed keys."""
    return {key: value for key, value in answers.items() if not str(key).startswith("_")}


def is_node_from_template(folder: Path) -> bool:
    """Whether ``folder`` holds a node made from a Copier template (answers with a source)."""
    return isinstance(recorded_answers(folder).get("_src_path"), str)


def write_src_path(folder: Path, src: str) -> None:
    """Record ``src`` as the node's template source, changing no other line."""
    path = folder / ANSWERS_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    entry = yaml.safe_dump({"_src_path": src}, width=1_000_000, allow_unicode=True)
    for index, line in enumerate(lines):
        if line.startswith("_src_path:"):
            lines[index] = entry
            break
    else:
        lines.append(entry)
    path.write_text("".join(lines), encoding="utf-8")
