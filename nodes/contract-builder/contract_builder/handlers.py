"""Business logic of NodeContractBuilderCompute: the ``contract_builder`` stage of the generation pipeline.

This file is the owner's: `copier update` never rewrites it. The stage itself is
``onex_scaffold.pipeline.stages`` (the same code the in-process pipeline runs); this node
consumes INTELLIGENCE_GATHERED and publishes CONTRACT_BUILT: it builds the contract and the Copier answers under the naming rules.
See docs/pipeline.md for the events.

A compute node is a pure function: its runtime consumes the command topic and publishes
what ``execute_compute`` returns on its ``completed`` topic (a failure travels there as the
``node_generation_failed`` payload, which the next stage reports). A payload that is not
this stage's input raises ``ValidationError``: the runtime dead-letters it and goes on.
"""

from __future__ import annotations

from typing import Any

from onex_scaffold.pipeline.bus import run_compute_stage
from onex_scaffold.pipeline.events import ContractBuilt, IntelligenceGathered

# The models contract.yaml names.
ModelContractBuilderInput = IntelligenceGathered
ModelContractBuilderOutput = ContractBuilt


def execute_compute(data: dict[str, Any]) -> dict[str, Any]:
    """The stage on one event payload; the same input always gives the same output."""
    return run_compute_stage("contract_builder", data)
