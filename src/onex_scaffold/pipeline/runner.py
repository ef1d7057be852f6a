"""The same seven stages called one after the other in this process (no broker).

Used to compare with the event-driven pipeline (same input, same node) and to measure
what the bus costs (``pipeline_overhead_ratio``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onex_scaffold import PipelineStage
from onex_scaffold._answers import ANSWERS_FILE
from onex_scaffold._template import is_url
from onex_scaffold.pipeline import stages
from onex_scaffold.pipeline.errors import PipelineRequestFailed
from onex_scaffold.pipeline.events import (
    CodeGenerated,
    CodeRefined,
    NodeGenerationCompleted,
    NodeGenerationFailed,
    NodeGenerationRequested,
    PipelineRequest,
    ValidationCompleted,
)


@dataclass
class PipelineResult:
    """How a request ended: ``completed`` or ``failed`` (then ``failure`` says why)."""

    request_id: uuid.UUID
    status: str
    stages: list[PipelineStage] = field(default_factory=list)
    completed: NodeGenerationCompleted | None = None
    failure: NodeGenerationFailed | None = None
    #: Pipeline event names in the order they were seen (duplicates dropped).
    events: list[str] = field(default_factory=list)
    duplicates: int = 0
    #: ``service/instance`` that published each event (on the bus only).
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.completed is not None

    def raise_for_failure(self) -> None:
        """Raise :class:`PipelineRequestFailed` when the request ended in failure."""
        if self.failure is not None:
            raise PipelineRequestFailed(self.failure)

    def summary(self) -> dict[str, Any]:
        return {
            "request_id": str(self.request_id),
            "status": self.status,
            "output_path": self.completed.output_path if self.completed else None,
            "node_name": self.completed.node_name if self.completed else None,
            "failure": self.failure.model_dump(mode="json", exclude={"request", "stages"})
            if self.failure
            else None,
            "events": self.events,
            "stages": [s.model_dump(mode="json") for s in self.stages],
        }


def make_request(
    prd: str,
    output_directory: str | os.PathLike[str],
    *,
    prd_name: str | None = None,
    template: str | None = None,
    vcs_ref: str | None = None,
    validation: str = "full",
    request_id: uuid.UUID | None = None,
    dry_run: bool = False,
) -> PipelineRequest:
    """A request; an ``output_directory`` that holds a node already is sent along (update)."""
    from onex_scaffold.pipeline import archive

    target = Path(os.fspath(output_directory)).expanduser().absolute()
    if template is not None and not is_url(template):
        # The stage nodes run elsewhere (another folder, another host): never a relative path.
        template = str(Path(template).expanduser().absolute())
    existing = None
    if (target / ANSWERS_FILE).is_file():
        existing = archive.pack(target)
    return PipelineRequest(
        request_id=request_id or uuid.uuid4(),
        prd=prd,
        prd_name=prd_name,
        output_directory=str(target),
        template=template,
        vcs_ref=vcs_ref,
        existing=existing,
        validation=validation,  # type: ignore[arg-type]
        dry_run=dry_run,
    )


def run_in_process(request: PipelineRequest, consul: str | None = None) -> PipelineResult:
    """Every stage in turn, exactly as the stage nodes run them."""
    result = PipelineResult(request.request_id, "running")
    step: Any = NodeGenerationRequested(request=request)
    result.events.append("NODE_GENERATION_REQUESTED")
    chain = (
        stages.analyze_prd,
        lambda event: stages.gather_intelligence(event, consul),
        stages.build_contract,
        stages.generate_code,
    )
    for function in chain:
        step = function(step)
        result.events.append(step.kind.upper())
        if isinstance(step, NodeGenerationFailed):
            return _end(result, step)
    generated: CodeGenerated | CodeRefined = step
    while True:
        validated = stages.validate_code(generated)
        result.events.append(validated.kind.upper())
        if isinstance(validated, NodeGenerationFailed):
            return _end(result, validated)
        assert isinstance(validated, ValidationCompleted)
        refined = stages.refine_code(validated)
        if refined is None:
            break
        result.events.append(refined.kind.upper())
        if isinstance(refined, NodeGenerationFailed):
            return _end(result, refined)
        generated = refined
    written = stages.write_files(validated)
    assert written is not None
    result.events.append(written.kind.upper())
    return _end(result, written)


def _end(
    result: PipelineResult, last: NodeGenerationCompleted | NodeGenerationFailed
) -> PipelineResult:
    result.stages = list(last.stages)
    if isinstance(last, NodeGenerationCompleted):
        result.status = "completed"
        result.completed = last
    else:
        result.status = "failed"
        result.failure = last
    return result
