"""Business logic of NodeValidatorCompute: the ``validator`` stage of the generation pipeline.

This file is the owner's: `copier update` never rewrites it. The stage itself is
``onex_scaffold.pipeline.stages`` (the same code the in-process pipeline runs); this node
consumes CODE_GENERATED / CODE_REFINED and publishes VALIDATION_COMPLETED: it runs the quality gates on the rendered node.
See docs/pipeline.md for the events.

A compute node is a pure function: its runtime consumes the command topic and publishes
what ``execute_compute`` returns on its ``completed`` topic (a failure travels there as the
``node_generation_failed`` payload, which the next stage reports). A payload that is not
this stage's input raises ``ValidationError``: the runtime dead-letters it and goes on.
"""

from __future__ import annotations

from typing import Any

from onex_scaffold.pipeline.bus import run_compute_stage
from onex_scaffold.pipeline.events import CodeGenerated, ValidationCompleted

# The models contract.yaml names.
ModelValidatorInput = CodeGenerated
ModelValidatorOutput = ValidationCompleted


def execute_compute(data: dict[str, Any]) -> dict[str, Any]:
    """The stage on one event payload; the same input always gives the same output."""
    return run_compute_stage("validator", data)
