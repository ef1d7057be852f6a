"""Four nodes generated at once into different folders, from one event loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import yaml
from helpers.stage import leftovers_beside

from onex_scaffold.stage import stage_4_5_event_bus_integration

KINDS = ("effect", "compute", "reducer", "orchestrator")


async def test_four_nodes_concurrently(template_repo: Path, tmp_path: Path):
    cwd = os.getcwd()
    jobs: list[Any] = []
    for kind in KINDS:
        data = {
            "node_type": kind,
            "service_name": f"{kind}-worker",
            "domain": "concurrency",
            "description": f"The {kind} node.",
            "operations": [f"Handle {kind} requests"],
        }
        jobs.append(
            stage_4_5_event_bus_integration(
                {}, data, output_directory=tmp_path / kind, template=template_repo
            )
        )

    ticks = 0

    async def ticker() -> None:
        # The loop must stay responsive while Copier works in threads.
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*jobs)
    finally:
        ticking.cancel()

    assert ticks > 5
    assert os.getcwd() == cwd
    for kind, (stage, result) in zip(KINDS, results, strict=True):
        assert stage.status == "completed", (kind, stage.error)
        out = tmp_path / kind
        answers = yaml.safe_load((out / ".copier-answers.yml").read_text())
        assert answers["node_type"] == kind
        assert answers["service_name"] == f"{kind}-worker"
        assert answers["actions"] == [f"handle_{kind}_requests"]
        assert result["node_name"] == f"Node{kind.capitalize()}Worker{kind.capitalize()}"
        package = f"{kind}_worker"
        assert (
            f"class Node{kind.capitalize()}Worker{kind.capitalize()}"
            in (out / package / "node.py").read_text()
        )
        # nothing from another node leaked into this folder
        others = {f"{k}_worker" for k in KINDS} - {package}
        assert not any((out / other).exists() for other in others)
        assert leftovers_beside(out) == []
