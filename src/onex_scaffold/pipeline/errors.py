"""The pipeline's errors, all :class:`~onex_scaffold.OnexError`: ``onex-node`` prints them
once, in its one format, and exits with their ``exit_code``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from onex_scaffold._exceptions import InvalidInputError, OnexError

if TYPE_CHECKING:
    from onex_scaffold.pipeline.events import NodeGenerationFailed

__all__ = ["PipelineError", "PipelineRequestFailed", "PipelineTimeout", "PipelineUnavailable"]


class PipelineError(OnexError, RuntimeError):
    """The pipeline could not take or finish a request; the message says why."""


class PipelineUnavailable(PipelineError):
    """The broker did not answer."""


class PipelineTimeout(OnexError, TimeoutError):
    """No end event in time; ``waiting_for`` names the stage that did not answer."""

    def __init__(self, request_id: uuid.UUID, waiting_for: str, timeout_s: float) -> None:
        self.request_id = request_id
        self.waiting_for = waiting_for
        super().__init__(
            f"request {request_id}: no answer within {timeout_s:g} s; waiting for the "
            f"{waiting_for} stage (is it running? `onex-node dev status`)"
        )


class PipelineRequestFailed(PipelineError):
    """A request ended in ``NODE_GENERATION_FAILED``; ``failure`` is that event.

    Exit code 2 when the PRD itself was refused (``invalid_input``), else 1. The message is
    ``stage: reason``, then one line per refused field (``field: rule (got value)``).
    """

    def __init__(self, failure: NodeGenerationFailed) -> None:
        self.failure = failure
        lines = [f"{failure.stage}: {failure.reason}"]
        lines += [
            f"{p.field}: {p.rule}" + (f" (got {p.value})" if p.value else "")
            for p in failure.problems
        ]
        super().__init__("\n".join(lines))

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return InvalidInputError.exit_code if self.failure.invalid_input else OnexError.exit_code
