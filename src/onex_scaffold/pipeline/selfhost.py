"""Our own nodes through our own pipeline: ``onex-node pipeline regenerate-self``.

Every node under ``nodes/`` (the registry and the seven stage nodes) keeps the PRD it is
generated from beside it (``PRD.md``). :func:`regenerate_self` sends each of those PRDs
through the *running* pipeline in update mode (the node folder travels with the request, so
owner files come back untouched) and reports, per node, which files changed.

With ``check=True`` nothing in the checkout is written: each node is copied into a scratch
folder, the pipeline updates the copy, and the copy is compared with the node the way the
re-render check compares them (owner files and ``PRD.md`` left out, the answers file's
provenance lines ``_commit``/``_src_path`` ignored). Any difference in a template-owned file
is drift.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onex_scaffold._answers import read_answers, write_src_path
from onex_scaffold._files import SKIPPED_DIRS
from onex_scaffold._rerender import PRD_FILE, drift, node_folders
from onex_scaffold._template import is_url, published_source, template_root
from onex_scaffold.pipeline.client import PipelineClient, bus_address
from onex_scaffold.pipeline.errors import PipelineError
from onex_scaffold.pipeline.events import PipelineRequest
from onex_scaffold.pipeline.runner import PipelineResult, make_request

__all__ = ["NodeReport", "SelfRegenerationError", "own_nodes", "regenerate_self", "summary"]


class SelfRegenerationError(PipelineError):
    """regenerate-self cannot start (no PRDs, no broker); the message says what to do."""


@dataclass
class NodeReport:
    """What the pipeline made of one of our nodes."""

    node: Path
    status: str  # "completed" | "failed"
    #: Template-owned files that differ (``check``) or were rewritten (update).
    changed: list[str] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0
    template_version: str | None = None

    @property
    def drifted(self) -> bool:
        return self.status != "completed" or bool(self.changed)

    def line(self, check: bool) -> str:
        name = self.node.name
        if self.status != "completed":
            return f"{name}: FAILED: {self.reason}"
        if not self.changed:
            return f"{name}: up to date ({self.seconds:.1f} s)"
        verb = "differs from what the pipeline makes" if check else "updated"
        return f"{name}: {len(self.changed)} template-owned file(s) {verb}: " + ", ".join(
            self.changed
        )


def own_nodes(root: Path) -> list[Path]:
    """The nodes under ``root/nodes`` that keep a ``PRD.md``; refuses when one has none."""
    nodes = node_folders(root)
    if not nodes:
        raise SelfRegenerationError(f"no nodes under {root / 'nodes'}; run this in a checkout")
    missing = [n.name for n in nodes if not (n / PRD_FILE).is_file()]
    if missing:
        raise SelfRegenerationError(
            f"{', '.join(missing)}: no {PRD_FILE}; every node under nodes/ keeps the PRD it is "
            "generated from"
        )
    return nodes


def _scratch_copy(node: Path, parent: Path) -> Path:
    copy = parent / node.name
    shutil.copytree(node, copy, ignore=shutil.ignore_patterns(*SKIPPED_DIRS, "*.pyc"))
    return copy


def _local_template(template: str | None) -> Path:
    """The template folder whose ``copier.yml`` says which files are the owner's."""
    if template and Path(template).expanduser().is_dir():
        return Path(template).expanduser().resolve()
    return template_root()


def _keep_portable_source(node: Path) -> None:
    """Our nodes record the published template, never a folder of this machine (a
    ``--template`` checkout given for the run), so they update from any clone."""
    recorded = str(read_answers(node).get("_src_path", ""))
    if recorded and not is_url(recorded):
        write_src_path(node, published_source())


def _report(
    node: Path, target: Path, result: PipelineResult, check: bool, template: Path, seconds: float
) -> NodeReport:
    if result.completed is None:
        failure = result.failure
        reason = f"{failure.stage}: {failure.reason}" if failure else result.status
        return NodeReport(node, "failed", reason=reason, seconds=seconds)
    version = next(
        (s.metadata.get("template_version") for s in result.stages if s.stage_name ==
         "code_generator"), None,
    )  # fmt: skip
    if check:
        found = drift(node, target, template)
        changed = sorted({*found.changed, *found.missing, *found.extra})
    else:
        changed = sorted(result.completed.changed_files)
        _keep_portable_source(target)
    return NodeReport(node, "completed", changed, seconds=seconds, template_version=version)


async def regenerate_self(
    root: str | os.PathLike[str],
    *,
    check: bool = False,
    template: str | None = None,
    vcs_ref: str | None = None,
    bootstrap_servers: str | None = None,
    environment: str | None = None,
    validation: str = "full",
    timeout_s: float = 600.0,
    nodes: Sequence[Path] | None = None,
) -> list[NodeReport]:
    """Send every node's PRD through the running pipeline (update mode), concurrently.

    ``check``: write nothing in ``root``; report template-owned files that would differ.
    """
    folders = await asyncio.to_thread(
        lambda: list(nodes) if nodes is not None else own_nodes(Path(root).resolve())
    )
    servers, env = bus_address(bootstrap_servers, environment)
    local_template = _local_template(template)
    with tempfile.TemporaryDirectory(prefix="onex-regenerate-self-") as scratch:

        def prepare(node: Path) -> tuple[Path, PipelineRequest]:
            target = _scratch_copy(node, Path(scratch)) if check else node
            request = make_request(
                (node / PRD_FILE).read_text(encoding="utf-8"),
                target,
                prd_name=f"{node.name}/{PRD_FILE}",
                template=template,
                vcs_ref=vcs_ref,
                validation=validation,
            )
            return target, request

        client_id = f"onex-regenerate-self-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        async with PipelineClient(servers, env, client_id=client_id) as client:

            async def one(node: Path) -> NodeReport:
                target, request = await asyncio.to_thread(prepare, node)
                started = time.perf_counter()
                result = await client.request(request, timeout_s=timeout_s)
                seconds = time.perf_counter() - started
                return await asyncio.to_thread(
                    _report, node, target, result, check, local_template, seconds
                )

            reports = await asyncio.gather(*(one(node) for node in folders))
    return list(reports)


def summary(reports: Sequence[NodeReport]) -> dict[str, Any]:
    """JSON-ready view of the reports (``--json``)."""
    return {
        "nodes": [
            {
                "node": r.node.name,
                "status": r.status,
                "changed": r.changed,
                "reason": r.reason,
                "seconds": round(r.seconds, 2),
                "template_version": r.template_version,
            }
            for r in reports
        ],
        "drift": any(r.drifted for r in reports),
    }
