"""Render and update ONEX node projects with Copier: the one place that calls it.

The Stage 4.5 API, ``onex-node new`` and the tests all go through
``render_node`` / ``update_node`` so every copy is made the same way: absolute
template path (a relative one is recorded in the answers file and breaks later
updates), trusted extensions, no prompts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from onex_scaffold._answers import read_answers
from onex_scaffold._exceptions import AnswerError, RenderError
from onex_scaffold._template import resolve_source

# Jinja syntax that rendering should have consumed: an expression closed on its line
# (``{{ node_name }}``, ``{{ 7 * 6 }}``) or a statement tag (``{% if %}``). A bare ``{{``
# is legal in generated Python (f-string braces such as ``f'{{"id": {x}}}'``, ``{{}}``),
# so it is not a leftover by itself.
_JINJA_LEFTOVER = re.compile(
    r"(?<!\{)\{\{-?\s*[^\s\"'{}][^\n]*?\}\}"
    r"|\{%-?\s*(?:if|elif|else|endif|for|endfor|set|endset|raw|endraw|macro|endmacro"
    r"|include|import|from|block|endblock|extends|with|endwith|filter|endfilter|call"
    r"|endcall|yield)\b"
)


def jinja_leftovers(text: str) -> list[str]:
    """Unrendered Jinja expressions or tags in ``text`` (empty when there are none)."""
    return [match.group(0) for match in _JINJA_LEFTOVER.finditer(text)]


@dataclass(frozen=True)
class RenderedNode:
    path: Path
    answers: dict[str, Any]

    @property
    def template_version(self) -> str | None:
        """Template commit or tag the project was rendered from (``_commit``)."""
        value = self.answers.get("_commit")
        return str(value) if value is not None else None


def _template_src(template: str | os.PathLike[str] | None) -> str:
    src, folder = resolve_source(template)
    if folder is not None and not (folder / "copier.yml").is_file():
        raise RenderError(f"{folder} is not an ONEX template: it has no copier.yml")
    return src


def _run_copier(
    run: Callable[..., Any], *args: Any, failed: Callable[[Exception], str], **options: Any
) -> None:
    """``copier.run_copy`` / ``run_update`` as every copy is made: no prompts, trusted
    extensions; an answer the template refused becomes ``AnswerError``, any other failure
    ``RenderError`` with the message ``failed`` makes."""
    try:
        run(*args, defaults=True, unsafe=True, **options)
    except ValueError as error:
        raise AnswerError(str(error)) from error
    except RenderError:
        raise
    except Exception as error:
        raise RenderError(failed(error)) from error


def render_node(
    dst: str | os.PathLike[str],
    data: Mapping[str, Any],
    *,
    template: str | os.PathLike[str] | None = None,
    vcs_ref: str | None = None,
    quiet: bool = True,
    overwrite: bool = False,
) -> RenderedNode:
    """Create a node project in ``dst`` from ``data`` (answers by question name).

    ``template``: a template folder or git URL (default: the bundled template).
    ``vcs_ref``: tag/commit to use; ``"HEAD"`` includes uncommitted template work;
    ``None`` takes the newest tag. Raises ``AnswerError`` for refused answers.
    """
    from copier import run_copy

    destination = Path(dst).expanduser().resolve()
    _run_copier(
        lambda **options: run_copy(_template_src(template), destination, **options),
        data=dict(data),
        vcs_ref=vcs_ref,
        quiet=quiet,
        overwrite=overwrite,
        failed=lambda error: f"copier copy into {destination} failed: {error}",
    )
    return RenderedNode(destination, read_answers(destination))


def update_node(
    project: str | os.PathLike[str],
    *,
    data: Mapping[str, Any] | None = None,
    vcs_ref: str | None = None,
    conflict: Literal["inline", "rej"] = "inline",
    quiet: bool = True,
) -> RenderedNode:
    """``copier update`` a project (a clean git work tree) to ``vcs_ref`` or the newest tag.

    Conflicts are left inline for the owner; ``leftovers`` lists them.
    """
    from copier import run_update

    path = Path(project).expanduser().resolve()
    _run_copier(
        run_update,
        path,
        data=dict(data or {}),
        vcs_ref=vcs_ref,
        quiet=quiet,
        overwrite=True,
        conflict=conflict,
        failed=lambda error: (
            f"copier update of {path} failed: {error}. It needs a git repository with "
            "everything committed (untracked files count as changes)."
        ),
    )
    return RenderedNode(path, read_answers(path))


def template_version(project: str | os.PathLike[str]) -> str | None:
    """Template version (tag or commit) recorded in the project's answers file."""
    return RenderedNode(Path(project), read_answers(project)).template_version
