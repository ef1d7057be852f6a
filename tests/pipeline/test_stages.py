"""The seven stages in one process: same node as Stage 4.5, failures, refinement, idempotence."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from onex_scaffold import generate_node
from onex_scaffold.pipeline import archive, rendering, stages
from onex_scaffold.pipeline.events import CodeGenerated, NodeGenerationFailed
from onex_scaffold.pipeline.runner import make_request, run_in_process

PARSED = {
    "node_type": "effect",
    "service_name": "order-writer",
    "domain": "billing",
    "description": "Writes confirmed orders.",
    "operations": ["Insert an order row"],
    "features": ["idempotent"],
    "confidence": 0.9,
}


def _same_tree(left: Path, right: Path) -> list[str]:
    differ = []
    for rel in sorted(set(archive.node_files(left)) | set(archive.node_files(right))):
        a, b = left / rel, right / rel
        if not (a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)):
            differ.append(rel)
    return differ


def test_same_node_as_stage_4_5_with_full_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEX_PIPELINE_VALIDATION_CACHE", "0")  # every gate really runs
    result = run_in_process(make_request(json.dumps(PARSED), tmp_path / "piped"))
    assert result.status == "completed", result.failure
    assert result.completed is not None and result.completed.score == 100
    names = [s.stage_name for s in result.stages]
    assert names == [
        "prd_analyzer",
        "intelligence_gatherer",
        "contract_builder",
        "code_generator",
        "validator",
        "file_writer",
    ]
    validator = result.stages[4]
    assert {g.name for g in validator.validation_gates} >= {"mypy_strict", "unit_tests"}
    assert all(g.status == "pass" for g in validator.validation_gates)
    generate_node(PARSED, tmp_path / "direct", raise_on_failure=True)
    assert _same_tree(tmp_path / "piped", tmp_path / "direct") == []


def test_invalid_prd_fails_at_the_analyzer_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "node"
    result = run_in_process(make_request("Something nice.\nIt is lovely.", target))
    assert result.status == "failed" and result.failure is not None
    assert result.failure.stage == "prd_analyzer"
    assert result.failure.invalid_input
    assert [p.field for p in result.failure.problems] == ["node_type"]
    assert not (tmp_path / "deep").exists()


def test_naming_rule_problems_name_field_and_rule(tmp_path: Path) -> None:
    bad = {**PARSED, "service_name": "Bad Name!", "domain": "9x"}
    result = run_in_process(make_request(json.dumps(bad), tmp_path / "n"), consul="")
    assert result.failure is not None and result.failure.stage == "contract_builder"
    fields = {p.field for p in result.failure.problems}
    assert {"service_name", "domain"} <= fields
    assert not (tmp_path / "n").exists()


def _generated(tmp_path: Path, prd: str) -> CodeGenerated:
    request = make_request(prd, tmp_path / "out", validation="fast")
    from onex_scaffold.pipeline.events import NodeGenerationRequested

    step = stages.analyze_prd(NodeGenerationRequested(request=request))
    step = stages.gather_intelligence(step, "")  # type: ignore[arg-type]
    step = stages.build_contract(step)  # type: ignore[arg-type]
    generated = stages.generate_code(step)  # type: ignore[arg-type]
    assert isinstance(generated, CodeGenerated)
    return generated


def test_refiner_fixes_what_ruff_can_fix(tmp_path: Path, effect_prd: str) -> None:
    generated = _generated(tmp_path, effect_prd)
    folder = tmp_path / "broken"
    archive.unpack(generated.archive, folder)
    handlers = folder / "order_writer" / "handlers.py"
    text = handlers.read_text().replace(
        "from __future__ import annotations\n", "from __future__ import annotations\nimport os\n"
    )
    handlers.write_text(text + "VALUE=[1,2 ,3]\n")
    broken = generated.model_copy(update={"archive": archive.pack(folder)})
    validated = stages.validate_code(broken)
    assert not validated.passed and validated.fixable  # type: ignore[union-attr]
    assert stages.write_files(validated) is None  # type: ignore[arg-type]
    refined = stages.refine_code(validated)  # type: ignore[arg-type]
    assert refined is not None and refined.kind == "code_refined" and refined.round == 1
    again = stages.validate_code(refined)  # type: ignore[arg-type]
    assert again.passed, again.findings  # type: ignore[union-attr]


def test_unfixable_findings_fail_with_problems(tmp_path: Path, effect_prd: str) -> None:
    generated = _generated(tmp_path, effect_prd)
    folder = tmp_path / "broken"
    archive.unpack(generated.archive, folder)
    (folder / "order_writer" / "handlers.py").write_text("def f(:\n")
    validated = stages.validate_code(generated.model_copy(update={"archive": archive.pack(folder)}))
    assert not validated.passed and not validated.fixable  # type: ignore[union-attr]
    failed = stages.refine_code(validated)  # type: ignore[arg-type]
    assert isinstance(failed, NodeGenerationFailed)
    assert failed.problems[0].field == "order_writer/handlers.py"


def test_archive_over_the_limit_fails_clearly(
    tmp_path: Path, effect_prd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rendering, "MAX_ARCHIVE_BYTES", 1000)
    request = make_request(effect_prd, tmp_path / "out", validation="fast")
    result = run_in_process(request, consul="")
    assert result.failure is not None and result.failure.stage == "code_generator"
    assert "over the 1000-byte limit" in result.failure.reason
    assert not (tmp_path / "out").exists()


def test_writer_is_idempotent_and_update_keeps_owner_files(tmp_path: Path, effect_prd: str) -> None:
    target = tmp_path / "node"
    first = run_in_process(make_request(effect_prd, target, validation="fast"), consul="")
    assert first.status == "completed"
    handlers = target / "order_writer" / "handlers.py"
    # A second delivery of the same validated event writes nothing.
    before = {rel: (target / rel).stat().st_mtime_ns for rel in archive.node_files(target)}
    generated = _generated(tmp_path / "again", effect_prd)
    validated = stages.validate_code(generated)
    assert validated.kind == "validation_completed"
    # Update: the owner's edit survives, the request carries the existing node.
    handlers.write_text(handlers.read_text() + "\n# the owner's line\n")
    updated = run_in_process(make_request(effect_prd, target, validation="fast"), consul="")
    assert updated.status == "completed", updated.failure
    assert updated.completed is not None and updated.completed.mode in ("update", "regenerate")
    assert "# the owner's line" in handlers.read_text()
    assert before  # files existed before the update


def test_dry_run_writes_nothing_and_lists_the_changes(tmp_path: Path, effect_prd: str) -> None:
    target = tmp_path / "node"
    dry = run_in_process(make_request(effect_prd, target, validation="fast", dry_run=True), "")
    assert dry.completed is not None and not target.exists()
    assert "order_writer/handlers.py" in dry.completed.changed_files


def test_the_owner_s_env_file_never_travels(tmp_path: Path, effect_prd: str) -> None:
    target = tmp_path / "node"
    assert run_in_process(make_request(effect_prd, target, validation="fast"), "").completed
    (target / ".env").write_text("SECRET=1\n")
    (target / ".env.local").write_text("SECRET=2\n")
    request = make_request(effect_prd, target, validation="fast")
    assert request.existing is not None
    packed = archive.unpack(request.existing, tmp_path / "unpacked")
    assert ".env" not in packed and ".env.local" not in packed and ".env.template" in packed
    assert run_in_process(request, "").completed is not None
    assert (target / ".env").read_text() == "SECRET=1\n"


def test_the_same_files_are_validated_once(
    tmp_path: Path, effect_prd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEX_PIPELINE_CACHE", str(tmp_path / "cache"))
    generated = _generated(tmp_path, effect_prd)
    first = stages.validate_code(generated)
    again = stages.validate_code(generated)
    assert first.passed and again.passed  # type: ignore[union-attr]
    names = [g.name for g in again.stages[-1].validation_gates]
    assert "validation_cache" in names
    assert "validation_cache" not in [g.name for g in first.stages[-1].validation_gates]


def test_a_plugged_refiner_gets_the_findings_no_tool_can_fix(
    tmp_path: Path, effect_prd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    generated = _generated(tmp_path, effect_prd)
    folder = tmp_path / "broken"
    archive.unpack(generated.archive, folder)
    handlers = folder / "order_writer" / "handlers.py"
    original = handlers.read_text()
    handlers.write_text("def f(:\n")
    seen: list[str] = []

    class Restorer:
        def refine(self, root: Path, findings: object) -> list[str]:
            seen.extend(f.file or "" for f in findings)  # type: ignore[attr-defined]
            (root / "order_writer" / "handlers.py").write_text(original)
            return ["restored handlers.py"]

    plugin = types.ModuleType("fake_refiner")
    plugin.Restorer = Restorer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_refiner", plugin)
    monkeypatch.setenv("ONEX_PIPELINE_REFINER", "fake_refiner:Restorer")
    validated = stages.validate_code(generated.model_copy(update={"archive": archive.pack(folder)}))
    assert not validated.passed and not validated.fixable  # type: ignore[union-attr]
    refined = stages.refine_code(validated)  # type: ignore[arg-type]
    assert refined is not None and refined.kind == "code_refined", refined
    assert "restored handlers.py" in refined.fixes  # type: ignore[union-attr]
    assert "order_writer/handlers.py" in seen
    assert stages.validate_code(refined).passed  # type: ignore[arg-type, union-attr]
