"""Gate bookkeeping and the checks every staged node must pass before it is installed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import yaml

from onex_scaffold._answers import ANSWERS_FILE
from onex_scaffold._mapping import Problem, safe_repr
from onex_scaffold.stage._models import GateStatus, GateType, ValidationGate, now

__all__ = ["REQUIRED_FILES", "GateFailed", "Gates", "check_answers", "check_rendered"]

#: Files every generated node must have (relative; ``{package}`` is the package name).
REQUIRED_FILES: Final = (
    ANSWERS_FILE,
    "pyproject.toml",
    "start_node.py",
    ".env.template",
    "Dockerfile",
    "compose.node.yaml",
    "{package}/__init__.py",
    "{package}/node.py",
    "{package}/handlers.py",
)

_JINJA_MARKERS: Final = ("{{", "{%")
_JINJA_FRAGMENT: Final = re.compile(r"\{[{%][^\"'\\\n]*")


class GateFailed(Exception):
    """A blocking gate failed; the stage stops with ``message`` as its error.

    ``problems`` are refused input fields; ``refused_input`` marks a failure caused by the
    caller's data (the template refused an answer), so the CLI exits 2 for it.
    """

    def __init__(
        self, message: str, problems: list[Problem] | None = None, *, refused_input: bool = False
    ) -> None:
        self.problems = problems or []
        self.refused_input = refused_input or bool(self.problems)
        super().__init__(message)


class Gates:
    """The gates of one run, in the order they ran."""

    def __init__(self) -> None:
        self.gates: list[ValidationGate] = []

    @contextmanager
    def gate(
        self, gate_id: str, name: str, gate_type: GateType = "blocking"
    ) -> Iterator[list[str]]:
        """Time a gate. The body appends notes; raising GateFailed fails it (blocking
        gates stop the stage). Notes on a warning gate make it ``warning``."""
        notes: list[str] = []
        started = time.perf_counter()
        timestamp = now()
        try:
            yield notes
        except GateFailed as failure:
            self._record(gate_id, name, "fail", gate_type, str(failure), started, timestamp)
            raise
        except Exception as error:
            message = f"unexpected {type(error).__name__}: {error}"
            self._record(gate_id, name, "fail", gate_type, message, started, timestamp)
            raise
        status: GateStatus = "warning" if notes and gate_type == "warning" else "pass"
        self._record(gate_id, name, status, gate_type, "; ".join(notes) or None, started, timestamp)

    def skip(self, gate_id: str, name: str, reason: str, gate_type: GateType = "blocking") -> None:
        self.gates.append(
            ValidationGate(
                gate_id=gate_id, name=name, status="skipped", gate_type=gate_type, message=reason
            )
        )

    def _record(
        self,
        gate_id: str,
        name: str,
        status: GateStatus,
        gate_type: GateType,
        message: str | None,
        started: float,
        timestamp: Any,
    ) -> None:
        self.gates.append(
            ValidationGate(
                gate_id=gate_id,
                name=name,
                status=status,
                gate_type=gate_type,
                message=message,
                duration_ms=round((time.perf_counter() - started) * 1000),
                timestamp=timestamp,
            )
        )


def copier_data(answers: Mapping[str, Any]) -> dict[str, Any]:
    """The answers Copier is given (``package_name`` is derived, not a question)."""
    return {key: value for key, value in answers.items() if key != "package_name"}


def _free_text_fragments(answers: Mapping[str, Any]) -> list[str]:
    """Pieces of user free text that legitimately contain ``{{``/``{%`` after rendering."""
    fragments: set[str] = set()
    for value in answers.values():
        if isinstance(value, str) and any(marker in value for marker in _JINJA_MARKERS):
            fragments.update(_JINJA_FRAGMENT.findall(value))
    return sorted(fragments, key=len, reverse=True)


def _answer_texts(answers: Mapping[str, Any]) -> list[str]:
    """Every answer that is text (list items too), whitespace folded to single spaces."""
    texts: list[str] = []
    for value in answers.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and any(marker in item for marker in _JINJA_MARKERS):
                texts.append(" ".join(item.split()))
    return texts


def _in_answers(match: str, texts: list[str]) -> bool:
    folded = " ".join(match.split())
    return any(folded in text for text in texts)


def check_rendered(gates: Gates, root: Path, answers: Mapping[str, Any], files: list[str]) -> None:
    """Gates G4-G6: required files present, Python compiles, no template syntax left."""
    package = answers["package_name"]
    with gates.gate("G4", "required_files"):
        missing = [
            rel
            for rel in (item.format(package=package) for item in REQUIRED_FILES)
            if not (root / rel).is_file()
        ]
        if missing:
            raise GateFailed(f"the rendered node lacks {', '.join(missing)}")

    with gates.gate("G5", "generated_code_compiles") as notes:
        errors: list[str] = []
        compiled = 0
        for rel in files:
            if not rel.endswith(".py"):
                continue
            source = (root / rel).read_bytes()
            try:
                # compile() checks syntax like py_compile without writing .pyc files.
                compile(source, rel, "exec", dont_inherit=True)
                compiled += 1
            except (SyntaxError, ValueError) as error:
                errors.append(f"{rel}: {error}")
        if errors:
            raise GateFailed("generated code does not compile: " + "; ".join(errors))
        notes.append(f"{compiled} Python files compile")

    with gates.gate("G6", "no_template_leftovers"):
        from onex_scaffold._render import jinja_leftovers

        fragments = _free_text_fragments(answers)
        texts = _answer_texts(answers)
        leftovers: list[str] = []
        for rel in files:
            try:
                text = (root / rel).read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if rel.endswith(".jinja") or any(marker in rel for marker in _JINJA_MARKERS):
                leftovers.append(f"{rel} (file name)")
                continue
            for fragment in fragments:
                text = text.replace(fragment, "")
            # What is left and also appears in the answers is PRD text, rendered inert (the
            # answers file folds long lines, so fragments alone do not catch every copy).
            found = [match for match in jinja_leftovers(text) if not _in_answers(match, texts)]
            if found:
                leftovers.append(f"{rel} ({safe_repr(found[0])})")
        if leftovers:
            raise GateFailed("unrendered Jinja left in " + ", ".join(leftovers))


def check_answers(gates: Gates, root: Path, answers: Mapping[str, Any], src: str) -> dict[str, Any]:
    """Gate G7: the answers file records the given answers and ``src`` as the source."""
    with gates.gate("G7", "answers_recorded"):
        try:
            recorded = yaml.safe_load((root / ANSWERS_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise GateFailed(f"{ANSWERS_FILE} cannot be read: {error}") from error
        if not isinstance(recorded, dict):
            raise GateFailed(f"{ANSWERS_FILE} is not a mapping")
        wrong = [key for key, value in copier_data(answers).items() if recorded.get(key) != value]
        if wrong:
            raise GateFailed(
                f"{ANSWERS_FILE} does not record the given {', '.join(wrong)}: not a question "
                f"of the template, or one that does not apply to a {answers['node_type']} node"
            )
        if recorded.get("_src_path") != src:
            raise GateFailed(
                f"{ANSWERS_FILE} records _src_path {safe_repr(recorded.get('_src_path'))}, "
                f"expected {src!r}"
            )
        return recorded
