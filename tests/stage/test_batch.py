"""``generate_nodes``: a batch over worker processes gives each job the result that
``generate_node`` would, in order, and refuses what it must without writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helpers.stage import leftovers_beside, tree_hashes

from onex_scaffold import generate_nodes

KINDS = ("effect", "compute", "reducer", "orchestrator")


def _data(kind: str) -> dict[str, Any]:
    return {
        "node_type": kind,
        "service_name": f"batch-{kind}",
        "domain": "batch",
        "description": f"The {kind} node of the batch.",
        "operations": [f"Handle {kind} requests"],
    }


def test_batch_in_two_workers(tmp_path: Path) -> None:
    jobs: list[tuple[dict[str, Any], Path]] = [(_data(k), tmp_path / k) for k in KINDS]
    jobs.append(({**_data("effect"), "service_name": "../escape"}, tmp_path / "bad"))
    jobs.append((_data("compute"), tmp_path / "effect"))  # the first job's folder again

    results = generate_nodes(jobs, workers=2)  # bundled template, from the snapshot

    assert len(results) == len(jobs)
    for kind, (stage, result) in zip(KINDS, results, strict=False):
        assert stage.status == "completed", (kind, stage.error)
        answers = yaml.safe_load((tmp_path / kind / ".copier-answers.yml").read_text())
        assert answers["node_type"] == kind
        assert answers["service_name"] == f"batch-{kind}"
        assert result["output_path"] == str(tmp_path / kind)
        assert Path(result["main_file"]).is_file()
        assert leftovers_beside(tmp_path / kind) == []

    bad_stage, bad_result = results[4]
    assert bad_stage.status == "failed"
    assert "service_name" in (bad_stage.error or "")
    assert "output_path" not in bad_result
    assert not (tmp_path / "bad").exists()

    duplicate, _ = results[5]
    assert duplicate.status == "failed"
    assert "earlier job in this batch" in (duplicate.error or "")
    # The folder holds the first job's effect node, untouched by the duplicate.
    answers = yaml.safe_load((tmp_path / "effect" / ".copier-answers.yml").read_text())
    assert answers["node_type"] == "effect"


def test_batch_in_process_matches(tmp_path: Path) -> None:
    results = generate_nodes([(_data("reducer"), tmp_path / "one")], workers=1)
    ((stage, result),) = results
    assert stage.status == "completed", stage.error
    assert result["node_type"] == "reducer"


def test_batch_rerun_updates_and_changes_nothing(tmp_path: Path) -> None:
    """The second batch updates every node (the template's migration runs and prints)
    and changes no file."""
    jobs = [(_data(kind), tmp_path / kind) for kind in KINDS[:2]]
    first = generate_nodes(jobs, workers=2)
    assert [stage.status for stage, _ in first] == ["completed", "completed"]
    before = {kind: tree_hashes(tmp_path / kind) for kind in KINDS[:2]}

    again = generate_nodes(jobs, workers=2)

    for (stage, result), kind in zip(again, KINDS[:2], strict=True):
        assert stage.status == "completed", stage.error
        assert stage.metadata["mode"] == "update"
        assert result["changed_files"] == []
        assert tree_hashes(tmp_path / kind) == before[kind]
