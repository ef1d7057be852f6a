"""Every error onex_scaffold raises on purpose, in one hierarchy.

```
OnexError                      exit 1 (base; the CLI prints the message, never a traceback)
├── InvalidInputError          exit 2 (the user's input or arguments were refused)
│   ├── InvalidParsedData      parsed_data cannot become template answers (``problems``)
│   ├── ConsulQueryError       Consul cannot be asked (address, connection, refusal)
│   ├── AnalysisError          a PRD the pipeline cannot analyse (``onex_scaffold.pipeline``)
│   └── ArchiveError           a node archive that is damaged or too large (pipeline)
├── RenderError                Copier could not produce or update the node
│   └── AnswerError            exit 2, an answer refused by the template's validators
├── SnapshotError              the template cache could not be written
├── StageFailed                a Stage 4.5 run failed (``stage`` holds the gates)
├── GitError                   git failed (``onex_scaffold._git``)
├── PipelineError              the pipeline could not take or finish a request
│   ├── PipelineUnavailable    its broker did not answer (``onex_scaffold.pipeline.errors``)
│   ├── PipelineRequestFailed  the request ended failed (exit 2 when the PRD was refused)
│   └── SelfRegenerationError  regenerate-self cannot start (no PRDs, no broker)
├── PipelineTimeout            no end event in time (``onex_scaffold.pipeline.errors``)
└── DevStackError              the dev stack (``onex_scaffold.devstack.errors``)
```

Each class carries the exit code ``onex-node`` returns for it; ``onex_scaffold.cli.main``
catches :class:`OnexError` once and prints its message in one format. Older bases
(``RuntimeError``, ``ValueError``) are kept so existing ``except`` clauses still match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from onex_scaffold._mapping import Problem
    from onex_scaffold.stage import PipelineStage

__all__ = [
    "AnswerError",
    "ConsulQueryError",
    "InvalidInputError",
    "InvalidParsedData",
    "OnexError",
    "RenderError",
    "SnapshotError",
    "StageFailed",
]


class OnexError(Exception):
    """Base of every error onex_scaffold raises on purpose; the message tells what to do."""

    #: What ``onex-node`` exits with when this error ends a command.
    exit_code: ClassVar[int] = 1


class InvalidInputError(OnexError, ValueError):
    """The user's input was refused; the message names the field and the rule."""

    exit_code = 2


class InvalidParsedData(InvalidInputError):
    """``parsed_data`` cannot be turned into template answers; ``problems`` lists why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in parsed_data:\n{lines}")


class ConsulQueryError(InvalidInputError, RuntimeError):
    """Consul could not be asked; the message says where and what to do."""


class RenderError(OnexError, RuntimeError):
    """Copier could not produce the node project; the message says why."""


class AnswerError(RenderError, ValueError):
    """An answer was refused by the template's validators (the message names the question)."""

    exit_code = 2


class SnapshotError(OnexError, RuntimeError):
    """The template snapshot could not be written; the message says where and why."""


class StageFailed(OnexError, RuntimeError):
    """A Stage 4.5 run failed; ``stage`` has the gates, ``problems`` the refused fields.

    Exit code 2 when the input was refused (``problems``, or an answer the template
    refused), else 1. The message is one line per refused field (``field: rule (got
    value)``), else the stage's error.
    """

    def __init__(self, stage: PipelineStage) -> None:
        self.stage = stage
        self.problems: list[dict[str, str]] = list(stage.metadata.get("problems") or [])
        if self.problems:
            message = "\n".join(
                f"{problem['field']}: {problem['rule']} (got {problem['value']})"
                for problem in self.problems
            )
        else:
            message = stage.error or "Stage 4.5 failed"
        super().__init__(message)

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        refused = self.problems or self.stage.metadata.get("refused_input")
        return InvalidInputError.exit_code if refused else OnexError.exit_code
