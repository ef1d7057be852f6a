"""``onex-node pipeline``: its errors go through the one OnexError hierarchy, printed once by
``main`` as ``error: ...`` lines, with meaningful exit codes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from onex_scaffold.cli import main
from onex_scaffold.pipeline.errors import PipelineRequestFailed
from onex_scaffold.pipeline.events import NodeGenerationFailed, PipelineRequest, ProblemModel


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.splitlines()


def test_an_unreadable_prd_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.md"
    code = main(["pipeline", "request", "--prd", str(missing), "--out", str(tmp_path / "n")])
    assert code == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot read {missing}: ")


def test_a_refused_prd_names_the_stage_and_field_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prd = tmp_path / "prd.json"
    prd.write_text('{"node_type": ', encoding="utf-8")
    out = tmp_path / "node"
    code = main(["pipeline", "request", "--prd", str(prd), "--out", str(out), "--in-process"])
    assert code == 2
    lines = _stderr_lines(capsys)
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors[0].startswith("error: prd_analyzer: ")
    assert "error: prd: valid JSON" in errors
    assert not out.exists()


def test_no_kafka_is_one_error_line_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("ONEX_DEV_ROOT", str(tmp_path))  # no dev stack there
    prd = tmp_path / "prd.md"
    prd.write_text("# anything\n", encoding="utf-8")
    code = main(["pipeline", "request", "--prd", str(prd), "--out", str(tmp_path / "n")])
    assert code == 1
    lines = _stderr_lines(capsys)
    assert lines == [line for line in lines if line.startswith("error: ")]
    assert "error: no Kafka to reach the pipeline" in lines[0]


def test_regenerate_self_outside_a_checkout_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["pipeline", "regenerate-self", "--root", str(tmp_path)])
    assert code == 1
    assert _stderr_lines(capsys) == [
        f"error: no nodes under {tmp_path.resolve() / 'nodes'}; run this in a checkout"
    ]


def test_a_failed_request_exits_1_unless_the_input_was_refused() -> None:
    request = PipelineRequest(request_id=uuid.uuid4(), prd="x", output_directory="/tmp/x")
    failed = NodeGenerationFailed(
        request=request,
        stage="validator",
        reason="quality gates failed",
        problems=[ProblemModel(field="node.py", rule="ruff: F401", value="os")],
    )
    error = PipelineRequestFailed(failed)
    assert error.exit_code == 1
    assert str(error).splitlines() == [
        "validator: quality gates failed",
        "node.py: ruff: F401 (got os)",
    ]
    refused = PipelineRequestFailed(failed.model_copy(update={"invalid_input": True}))
    assert refused.exit_code == 2
