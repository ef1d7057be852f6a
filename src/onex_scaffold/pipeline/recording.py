"""What every stage shares: its ``PipelineStage`` record and how it fails.

A stage that cannot go on raises ``StageFailure`` inside its body; its one ``except``
turns that, or anything else it did not expect (``unexpected_failure``), into
``NodeGenerationFailed`` with ``StageRecord.failed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from onex_scaffold import PipelineStage, ValidationGate
from onex_scaffold.pipeline.events import NodeGenerationFailed, ProblemModel, _Payload


def now() -> datetime:
    return datetime.now(UTC)


class StageFailure(Exception):
    def __init__(
        self,
        reason: str,
        problems: list[ProblemModel] | None = None,
        *,
        invalid_input: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problems = problems or []
        self.invalid_input = invalid_input


class StageRecord:
    """Builds one stage's ``PipelineStage``."""

    def __init__(self, name: str) -> None:
        self.stage = PipelineStage(stage_name=name, status="running", start_time=now())
        self.started = time.perf_counter()
        self.gates: list[ValidationGate] = []
        self.metadata: dict[str, Any] = {}

    def gate(
        self, name: str, status: str, message: str | None = None, gate_type: str = "blocking"
    ) -> None:
        self.gates.append(
            ValidationGate.model_validate(
                {
                    "gate_id": f"{self.stage.stage_name[:2].upper()}{len(self.gates) + 1}",
                    "name": name,
                    "status": status,
                    "gate_type": gate_type,
                    "message": message,
                }
            )
        )

    def failed(self, payload: _Payload, error: Exception) -> NodeGenerationFailed:
        """The stage's end for ``error``: a ``StageFailure`` as it is, anything else as an
        unexpected failure."""
        failure = error if isinstance(error, StageFailure) else unexpected_failure(error)
        return stage_failed(payload, self, failure)

    def finish(self, status: str, error: str | None = None) -> PipelineStage:
        return self.stage.model_copy(
            update={
                "status": status,
                "end_time": now(),
                "duration_ms": round((time.perf_counter() - self.started) * 1000),
                "validation_gates": self.gates,
                "error": error,
                "metadata": self.metadata,
            }
        )


@contextmanager
def recording(name: str) -> Iterator[StageRecord]:
    yield StageRecord(name)


def stage_failed(
    payload: _Payload, record: StageRecord, failure: StageFailure
) -> NodeGenerationFailed:
    if failure.problems:
        record.metadata["problems"] = [p.model_dump() for p in failure.problems]
    return payload.follow(
        NodeGenerationFailed,
        record.finish("failed", failure.reason),
        stage=record.stage.stage_name,
        reason=failure.reason,
        problems=failure.problems,
        invalid_input=failure.invalid_input,
    )


def unexpected_failure(error: BaseException) -> StageFailure:
    return StageFailure(f"unexpected {type(error).__name__}: {error}")
