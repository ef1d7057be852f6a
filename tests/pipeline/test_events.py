"""``follow``: the next event of a request carries on what it shares with the previous one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from onex_scaffold import PipelineStage
from onex_scaffold.pipeline.events import (
    CodeRefined,
    IntelligenceGathered,
    NodeArchive,
    PipelineRequest,
    PrdAnalyzed,
    ValidationCompleted,
)

REQUEST = PipelineRequest(request_id=uuid.uuid4(), prd="x", output_directory="/tmp/x")
ARCHIVE = NodeArchive(data="", sha256="0" * 64, files=0, size=0)


def _stage(name: str) -> PipelineStage:
    return PipelineStage(stage_name=name, status="completed", start_time=datetime.now(UTC))


def test_the_analysis_is_carried_on_and_the_stage_appended() -> None:
    analyzed = PrdAnalyzed(
        request=REQUEST,
        stages=[_stage("prd_analyzer")],
        prd_format="markdown",
        parsed_data={"node_type": "effect"},
        extra_answers={"http_port": 8100},
    )
    gathered = analyzed.follow(
        IntelligenceGathered,
        _stage("intelligence_gatherer"),
        intelligence={"consul": "not_configured", "mode": "create"},
    )
    assert gathered.kind == "intelligence_gathered"
    assert gathered.request == REQUEST
    assert gathered.prd_format == "markdown"
    assert gathered.parsed_data == {"node_type": "effect"}
    assert gathered.extra_answers == {"http_port": 8100}
    assert [s.stage_name for s in gathered.stages] == ["prd_analyzer", "intelligence_gatherer"]
    assert analyzed.stages[-1].stage_name == "prd_analyzer"  # the earlier event is unchanged


def test_given_fields_win_and_fields_the_next_event_lacks_stay_behind() -> None:
    validated = ValidationCompleted(
        request=REQUEST,
        answers={"a": 1},
        contract={"name": "n"},
        archive=ARCHIVE,
        mode="update",
        changed_files=["x.py"],
        round=1,
        passed=False,
        score=50,
        fixable=True,
    )
    refined = validated.follow(CodeRefined, _stage("code_refiner"), round=2, fixes=["ruff"])
    assert (refined.kind, refined.round, refined.fixes) == ("code_refined", 2, ["ruff"])
    assert (refined.answers, refined.mode, refined.changed_files) == ({"a": 1}, "update", ["x.py"])
    assert not hasattr(refined, "passed") and not hasattr(refined, "score")
