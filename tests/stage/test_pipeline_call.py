"""The design's two-argument call: the output folder comes from Stage 4's generation_result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.stage import leftovers_beside

from onex_scaffold import stage_4_5_event_bus_integration


async def test_output_path_in_generation_result_is_used(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "nodes" / "postgres-writer"
    generation_result = {"node_name": "NodePostgresqlWriterEffect", "output_path": str(out)}

    stage, result = await stage_4_5_event_bus_integration(
        generation_result, parsed_data, template=template_repo
    )

    assert stage.status == "completed", stage.error
    assert result["output_path"] == str(out)
    assert (out / "postgres_writer" / "node.py").is_file()
    output = next(g for g in stage.validation_gates if g.name == "output_location")
    assert "generation_result" in (output.message or "")


async def test_the_folder_of_main_file_is_used_when_there_is_no_output_path(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "stage4"
    stage, result = await stage_4_5_event_bus_integration(
        {"main_file": str(out / "node.py")}, parsed_data, template=template_repo
    )
    assert stage.status == "completed", stage.error
    assert result["output_path"] == str(out)


async def test_without_any_output_folder_the_stage_fails_clearly(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    stage, result = await stage_4_5_event_bus_integration({}, parsed_data, template=template_repo)
    assert stage.status == "failed"
    assert [g.name for g in stage.failed_gates] == ["output_location"]
    assert "output_directory" in (stage.error or "") and "output_path" in (stage.error or "")
    assert result == {}

    stage, _ = await stage_4_5_event_bus_integration(
        {"output_path": 42}, parsed_data, template=template_repo
    )
    assert stage.status == "failed" and "output_path" in (stage.error or "")


async def test_a_postgres_writer_prd_renders_a_postgres_node_and_says_so(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "writer"
    stage, result = await stage_4_5_event_bus_integration(
        {}, parsed_data, output_directory=out, template=template_repo
    )
    assert stage.status == "completed", stage.error
    assert stage.metadata["answers"]["use_postgres"] is True
    assert result["derived_answers"]["use_postgres"].startswith("description")
    assert (out / "postgres_writer" / "runtime" / "postgres.py").is_file()
    assert leftovers_beside(out) == []
