"""The seven stage nodes are products of the template like any node: the pipeline's own quality
gates pass on them (parse, ruff, ruff format everywhere; mypy --strict and their own tests on
one compute and one effect stage, whose handlers have the shape of all the others)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onex_scaffold.pipeline.events import STAGE_NODES
from onex_scaffold.pipeline.gates import run_gates

NODES = Path(__file__).resolve().parents[2] / "nodes"
FULLY_CHECKED = {"prd-analyzer", "file-writer"}


@pytest.mark.parametrize("folder", [node.folder for node in STAGE_NODES])
def test_stage_node_passes_the_gates(folder: str) -> None:
    level = "full" if folder in FULLY_CHECKED else "fast"
    results = run_gates(NODES / folder, level)
    failed = {r.name: [f.message for f in r.findings][:5] for r in results if not r.passed}
    assert failed == {}, failed


@pytest.mark.parametrize("node", STAGE_NODES, ids=lambda node: node.folder)
def test_stage_node_is_the_design_s_class(node: object) -> None:
    folder = NODES / node.folder  # type: ignore[attr-defined]
    answers = (folder / ".copier-answers.yml").read_text()
    assert f"node_name: {node.node_name}" in answers  # type: ignore[attr-defined]
    assert f"node_type: {node.node_type}" in answers  # type: ignore[attr-defined]
    handlers = next(folder.glob("*/handlers.py")).read_text()
    assert "onex_scaffold.pipeline" in handlers
