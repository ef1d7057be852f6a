"""Stage 4.5 through its Python API: real Copier renders from a git copy of the template."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.stage import leftovers_beside, tree_hashes

import onex_scaffold
from onex_scaffold.stage import (
    PipelineStage,
    StageFailed,
    generate_node,
    stage_4_5_event_bus_integration,
)


def check_named_files(result: dict[str, Any], out: Path) -> None:
    for key, relative in {
        "main_file": "postgres_writer/node.py",
        "startup_script": "start_node.py",
        "env_template": ".env.template",
        "dockerfile": "Dockerfile",
        "compose_fragment": "compose.node.yaml",
        "answers_file": ".copier-answers.yml",
    }.items():
        assert result[key] == str(out / relative)
        assert Path(result[key]).is_file()
        assert relative in result["generated_files"]


def read_yaml(path: str | Path) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def gate(stage: PipelineStage, name: str) -> str:
    return next(g.status for g in stage.validation_gates if g.name == name)


async def test_generates_a_node(template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path):
    out = tmp_path / "nodes" / "postgres-writer"
    generation_result = {"node_name": "NodePostgresqlWriterEffect", "kept": "by the stage"}

    stage, result = await stage_4_5_event_bus_integration(
        generation_result, parsed_data, output_directory=out, template=template_repo
    )

    assert stage.status == "completed", stage.error
    assert stage.stage_name == "event_bus_integration"
    assert stage.error is None
    assert stage.duration_ms is not None and stage.start_time and stage.end_time
    assert [g.status for g in stage.validation_gates if g.gate_type == "blocking"]
    assert all(g.status in {"pass", "skipped"} for g in stage.validation_gates), [
        (g.name, g.status, g.message) for g in stage.validation_gates
    ]
    for name in (
        "input_validation",
        "template_render",
        "required_files",
        "generated_code_compiles",
        "no_template_leftovers",
        "answers_recorded",
    ):
        assert gate(stage, name) == "pass"
    # the caller's dict is updated, not replaced, and not mutated in place
    assert result["kept"] == "by the stage"
    assert generation_result == {"node_name": "NodePostgresqlWriterEffect", "kept": "by the stage"}
    assert result["node_name"] == "NodePostgresqlWriterEffect"
    assert result["template_version"] == "1.0.0"
    assert result["output_path"] == str(out)
    check_named_files(result, out)
    assert sorted(result["generated_files"]) == sorted(tree_hashes(out))
    assert "class NodePostgresqlWriterEffect" in (out / "postgres_writer/node.py").read_text()

    answers = yaml.safe_load((out / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(template_repo)
    assert answers["_commit"] == "1.0.0"
    assert answers["service_name"] == "postgres-writer"
    assert answers["actions"] == ["insert_rows_into_postgresql_tables", "validate_row_schema"]
    assert answers["tags"] == ["database", "connection-pooling", "retries"]
    assert leftovers_beside(out) == []


def test_sync_generate_node_and_lazy_exports(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    stage, result = onex_scaffold.generate_node(parsed_data, out, template=template_repo)
    assert isinstance(stage, onex_scaffold.PipelineStage)
    assert stage.status == "completed", stage.error
    # without a node name from generation, it comes from the service name
    assert result["node_name"] == "NodePostgresWriterEffect"
    assert onex_scaffold.stage_4_5_event_bus_integration is stage_4_5_event_bus_integration


async def test_generate_node_works_inside_a_running_loop(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    stage, _ = generate_node(parsed_data, tmp_path / "n", template=template_repo)
    assert stage.status == "completed", stage.error


async def test_invalid_data_fails_cleanly_and_writes_nothing(template_repo: Path, tmp_path: Path):
    out = tmp_path / "parent" / "node"
    bad = {"node_type": "gateway", "service_name": "../../etc", "operations": "x", "domain": 3}

    stage, result = await stage_4_5_event_bus_integration(
        {}, bad, output_directory=out, template=template_repo
    )

    assert stage.status == "failed"
    assert stage.error is not None and "4 problem(s)" in stage.error
    failed = stage.failed_gates
    assert [g.name for g in failed] == ["input_validation"]
    assert failed[0].gate_type == "blocking"
    assert [p["field"] for p in stage.metadata["problems"]] == [
        "node_type",
        "service_name",
        "domain",
        "operations",
    ]
    assert result == {}
    assert not out.parent.exists()


@pytest.mark.parametrize("payload", [None, "text", 42, ["a"]])
async def test_wrong_top_level_types_never_raise(payload: Any, tmp_path: Path):
    stage, _ = await stage_4_5_event_bus_integration({}, payload, output_directory=tmp_path / "n")
    assert stage.status == "failed"
    assert "parsed_data" in (stage.error or "")


async def test_refuses_a_foreign_non_empty_folder(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = tree_hashes(out)

    stage, _ = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=template_repo
    )

    assert stage.status == "failed"
    assert "not empty" in (stage.error or "")
    assert [g.name for g in stage.failed_gates] == ["output_location"]
    assert tree_hashes(out) == before
    assert leftovers_beside(out) == []


async def test_fills_an_existing_empty_folder(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "empty"
    out.mkdir()
    stage, _ = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=template_repo
    )
    assert stage.status == "completed", stage.error
    assert (out / "postgres_writer" / "node.py").is_file()


async def test_refuses_a_file_as_output(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "file"
    out.write_text("x")
    stage, _ = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=template_repo
    )
    assert stage.status == "failed" and "not a folder" in (stage.error or "")
    assert out.read_text() == "x"


async def test_missing_template_fails_with_a_clear_error(
    parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "n"
    stage, _ = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=tmp_path / "nowhere"
    )
    assert stage.status == "failed"
    assert "copier.yml" in (stage.error or "")
    assert not out.exists()
    assert leftovers_beside(out) == []


async def refused_http_port(
    parsed_data: dict[str, Any], out: Path, template: Path, port: int
) -> PipelineStage:
    """Stage 4.5 into ``out`` with an ``http_port`` the template refuses (below 1024)."""
    stage, _ = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=template, extra_answers={"http_port": port}
    )
    return stage


async def test_answers_refused_by_the_template_fail_the_render_gate(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "n"
    stage = await refused_http_port(parsed_data, out, template_repo, port=80)
    assert stage.status == "failed"
    assert [g.name for g in stage.failed_gates] == ["template_render"]
    assert "http_port" in (stage.error or "")
    assert not out.exists()
    assert leftovers_beside(out) == []


def test_raise_on_failure(template_repo: Path, tmp_path: Path):
    with pytest.raises(StageFailed) as caught:
        generate_node({}, tmp_path / "n", template=template_repo, raise_on_failure=True)
    assert caught.value.stage.status == "failed"
    assert "is required" in str(caught.value)


async def test_cancelling_the_caller_leaves_no_staging_folder(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "n"
    task = asyncio.create_task(
        stage_4_5_event_bus_integration(
            {}, parsed_data, output_directory=out, template=template_repo
        )
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the worker thread finishes (or cleans up) on its own; wait for it
    for _ in range(200):
        if not leftovers_beside(out):
            break
        await asyncio.sleep(0.05)
    assert leftovers_beside(out) == []


@pytest.mark.parametrize("node_type", ["effect", "compute", "reducer", "orchestrator"])
async def test_every_node_type(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path, node_type: str
):
    data = {**parsed_data, "node_type": node_type.upper(), "operations": []}
    stage, result = await stage_4_5_event_bus_integration(
        {}, data, output_directory=tmp_path / node_type, template=template_repo
    )
    assert stage.status == "completed", stage.error
    assert result["node_name"] == f"NodePostgresWriter{node_type.capitalize()}"
    answers = read_yaml(result["answers_file"])
    assert answers["node_type"] == node_type
    assert answers["actions"]  # the type's defaults


async def test_missing_parent_folders_are_created_and_removed_on_failure(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "a" / "b" / "node"
    stage = await refused_http_port(parsed_data, out, template_repo, port=1)
    assert stage.status == "failed"
    assert not (tmp_path / "a").exists()

    stage, _ = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=template_repo
    )
    assert stage.status == "completed", stage.error


@pytest.mark.parametrize("generation_result", ["NodeX", ["node_name"], 3])
async def test_wrong_generation_result_type_is_a_problem(
    generation_result: Any, parsed_data: dict[str, Any], tmp_path: Path
):
    stage, result = await stage_4_5_event_bus_integration(
        generation_result, parsed_data, output_directory=tmp_path / "n"
    )
    assert stage.status == "failed"
    assert stage.metadata["problems"][0]["field"] == "generation_result"
    assert result == {}


async def test_two_runs_into_the_same_folder_do_not_mix(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "same"
    other = {**parsed_data, "service_name": "other-writer"}
    (a, _), (b, _) = await asyncio.gather(
        stage_4_5_event_bus_integration(
            {}, parsed_data, output_directory=out, template=template_repo
        ),
        stage_4_5_event_bus_integration({}, other, output_directory=out, template=template_repo),
    )
    # Usually the second run is refused while the first writes; on a slow machine it may
    # instead start after the first finished and then update that node. Never both write.
    assert "completed" in (a.status, b.status)
    if "failed" in (a.status, b.status):
        loser = a if a.status == "failed" else b
        assert "another Stage 4.5 run" in (loser.error or "")
        assert len([p for p in ("postgres_writer", "other_writer") if (out / p).exists()]) == 1
    else:
        assert {a.metadata["mode"], b.metadata["mode"]} == {"create", "update"}
    assert leftovers_beside(out) == []


async def test_answers_that_do_not_apply_are_reported(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "n"
    stage, _ = await stage_4_5_event_bus_integration(
        {},
        {**parsed_data, "node_type": "compute"},
        output_directory=out,
        template=template_repo,
        extra_answers={"use_postgres": True},  # an effect-only question
    )
    assert stage.status == "failed"
    assert [g.name for g in stage.failed_gates] == ["answers_recorded"]
    assert "use_postgres" in (stage.error or "") and "compute node" in (stage.error or "")
    assert not out.exists()
    assert leftovers_beside(out) == []
