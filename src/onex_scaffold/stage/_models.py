"""The pipeline's records of a stage: :class:`PipelineStage` and its :class:`ValidationGate` s."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "STAGE_NAME",
    "GateStatus",
    "GateType",
    "PipelineStage",
    "StageStatus",
    "ValidationGate",
    "now",
    "refused",
]

STAGE_NAME: Final = "event_bus_integration"

GateStatus = Literal["pass", "fail", "warning", "skipped"]
GateType = Literal["blocking", "warning"]
StageStatus = Literal["pending", "running", "completed", "failed", "skipped"]


def now() -> datetime:
    return datetime.now(UTC)


class ValidationGate(BaseModel):
    """One check of the stage, in the pipeline's shape."""

    model_config = ConfigDict(extra="forbid")

    gate_id: str
    name: str
    status: GateStatus
    gate_type: GateType = "blocking"
    message: str | None = None
    duration_ms: int = 0
    timestamp: datetime = Field(default_factory=now)


class PipelineStage(BaseModel):
    """The pipeline's stage record: what ran, how long, which gates passed or failed."""

    model_config = ConfigDict(extra="forbid")

    stage_name: str = STAGE_NAME
    status: StageStatus = "pending"
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: int | None = None
    validation_gates: list[ValidationGate] = Field(default_factory=list)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed_gates(self) -> list[ValidationGate]:
        return [gate for gate in self.validation_gates if gate.status == "fail"]

    @property
    def warning_gates(self) -> list[ValidationGate]:
        return [gate for gate in self.validation_gates if gate.status == "warning"]


def refused(
    output_directory: str, reason: str, gate_id: str = "G2", name: str = "output_location"
) -> tuple[PipelineStage, dict[str, Any]]:
    """A stage that failed before it began (one failed gate), with an empty result."""
    moment = now()
    gate = ValidationGate(gate_id=gate_id, name=name, status="fail", message=reason)
    stage = PipelineStage(
        status="failed",
        start_time=moment,
        end_time=moment,
        duration_ms=0,
        validation_gates=[gate],
        error=reason,
        metadata={"output_directory": output_directory},
    )
    return stage, {}
