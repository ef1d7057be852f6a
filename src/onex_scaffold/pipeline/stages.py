"""The seven stages as plain functions: one pipeline payload in, the next one out.

The stage nodes' ``handlers.py`` call these, and so does the in-process runner, so the
event-driven pipeline and the in-process one do exactly the same work. Every function
appends its ``PipelineStage`` record to the payload's ``stages`` and never raises for bad
input: a stage that cannot go on returns ``NodeGenerationFailed`` (stage, reason,
problems). The refiner and the writer both consume ``VALIDATION_COMPLETED`` and return
``None`` for the outcome that belongs to the other.

The stages live by concern in ``intake`` (1-3), ``rendering`` (4-6) and ``writer`` (7),
sharing ``recording``; this module is the one name the nodes and the runner import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onex_scaffold.pipeline.intake import (
    CONSUL_TIMEOUT_S,
    analyze_prd,
    build_contract,
    consul_address,
    gather_intelligence,
)
from onex_scaffold.pipeline.rendering import (
    MAX_ARCHIVE_BYTES,
    generate_code,
    refine_code,
    validate_code,
)
from onex_scaffold.pipeline.writer import write_files

__all__ = [
    "CONSUL_TIMEOUT_S",
    "MAX_ARCHIVE_BYTES",
    "analyze_prd",
    "build_contract",
    "consul_address",
    "describe",
    "gather_intelligence",
    "generate_code",
    "refine_code",
    "validate_code",
    "write_files",
]


def describe(payload: Mapping[str, Any]) -> str:
    return str(payload.get("kind"))
