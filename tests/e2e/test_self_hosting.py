"""The next version of itself: the running pipeline regenerates its own nodes from a new
template version, and the stage nodes roll onto it while requests keep flowing.

On a stack of its own (Apache Kafka, Consul, the registry and the seven stage nodes, run
from a clone's ``nodes/``), so the checkout is never touched:

1. a new template version is made in the clone: a commit with a visible change in the
   runtime, tagged;
2. ``onex-node pipeline regenerate-self --template <clone> --vcs-ref <tag>`` sends every
   node's PRD.md through the running pipeline: each node's runtime gets the change;
3. ``onex-node dev restart pipeline --rolling`` moves each stage node onto its new code while
   a steady stream of generation requests is in flight;
4. afterwards every stage node reports the new template version in Consul, every request
   completed exactly once (counted on the completed topic itself), every owner file is
   byte-identical, and a fresh request through the new generation succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO_ROOT, git

from onex_scaffold._answers import read_answers
from onex_scaffold._rerender import (
    PRD_FILE,
    committed_template,
    node_folders,
    owner_files,
    render_fresh,
)
from onex_scaffold._template import published_source
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.pipeline import events
from onex_scaffold.pipeline.client import PipelineClient
from onex_scaffold.pipeline.runner import PipelineResult, make_request

pytestmark = pytest.mark.e2e

NEW_VERSION = "v99.0.0"
MARK = "SELF_HOSTING_EDITION"
#: Requests in flight during the rolling upgrade (the issue asks for at least 50).
MIN_REQUESTS = 50
STACK_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "CONSUL_HTTP_ADDR", "DATABASE_URL", "ONEX_DEV_ROOT")


def _cli(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onex_scaffold.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _owner_files(nodes: Path, scratch: Path) -> dict[str, set[str]]:
    """Each node's owner files (what the committed template does not render for it)."""
    found: dict[str, set[str]] = {}
    with committed_template(REPO_ROOT) as template:
        for node in node_folders(nodes.parent):
            rendered = render_fresh(node, template, scratch / node.name)
            found[node.name] = owner_files(node, rendered, template)
    return found


def _digests(nodes: Path, owned: dict[str, set[str]]) -> dict[str, str]:
    return {
        f"{name}/{rel}": _digest(nodes / name / rel)
        for name, files in owned.items()
        for rel in sorted(files)
        if (nodes / name / rel).is_file()
    }


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository at HEAD, with a new template version tagged on top."""
    folder = tmp_path_factory.mktemp("selfhost") / "repo"
    git(REPO_ROOT, "clone", "--quiet", "--no-hardlinks", str(REPO_ROOT), str(folder))
    return folder


@pytest.fixture(scope="module")
def own_stack(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Apache Kafka, Consul, the registry and the stage nodes from the clone's nodes/."""
    root = tmp_path_factory.mktemp("selfhost-stack")
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARS}
    env.update(ONEX_DEV_NODES_DIR=str(clone / "nodes"), ONEX_DEV_ROOT=str(root))
    up = _cli("dev", "--root", str(root), "up", "--ignore-env", env=env, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env.update(Stack(root).env())
        env["ONEX_STACK_ROOT"] = str(root)
        yield env
    finally:
        _cli("dev", "--root", str(root), "down", env=env, timeout=300)


def _consul_versions(consul: str) -> dict[str, list[str]]:
    """Template version of every registered instance, by service."""
    base = consul if "://" in consul else f"http://{consul}"
    with urllib.request.urlopen(f"{base}/v1/agent/services", timeout=5) as response:
        services = json.loads(response.read())
    found: dict[str, list[str]] = {}
    for service in services.values():
        meta = service.get("Meta") or {}
        found.setdefault(service["Service"], []).append(meta.get("template_version", ""))
    return found


def _completed_counts(bootstrap: str, request_ids: set[str], timeout_s: float = 60) -> Counter[str]:
    """NODE_GENERATION_COMPLETED records per request id, read from the topic itself."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"selfhost-count-{uuid.uuid4().hex[:6]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    topic = events.event_topic(events.NODE_GENERATION_COMPLETED, "dev")
    consumer.subscribe([topic])
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None or record.error() is not None:
                if set(counts) >= request_ids and time.monotonic() - quiet_since > 5:
                    break
                continue
            quiet_since = time.monotonic()
            envelope = json.loads(record.value())
            if envelope.get("correlation_id") in request_ids:
                counts[envelope["correlation_id"]] += 1
    finally:
        consumer.close()
    return counts


def _prd(index: int) -> str:
    return json.dumps({
        "node_type": "compute", "service_name": f"rolling-{index}", "domain": "testing",
        "description": "A node requested while the pipeline rolls onto a new version.",
        "operations": ["Compute a total"], "features": [], "confidence": 0.9,
    })  # fmt: skip


async def _stream(
    bootstrap: str, out: Path, stop: threading.Event, results: list[PipelineResult]
) -> None:
    """Requests, four at a time, until the rolling restart is over and MIN_REQUESTS were sent."""
    async with PipelineClient(bootstrap, "dev") as client:
        index = 0
        in_flight: set[asyncio.Task[PipelineResult]] = set()
        while not (stop.is_set() and index >= MIN_REQUESTS):
            while len(in_flight) < 4:
                request = make_request(_prd(index), out / f"node-{index}", validation="fast")
                in_flight.add(asyncio.create_task(client.request(request, timeout_s=300)))
                index += 1
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            results.extend(task.result() for task in done)
        results.extend(await asyncio.gather(*in_flight))


def test_the_pipeline_regenerates_itself_and_rolls_onto_the_new_version(
    clone: Path, own_stack: dict[str, str], tmp_path: Path
) -> None:
    env = own_stack
    nodes = clone / "nodes"
    owned = _owner_files(nodes, tmp_path / "rendered")
    assert len(owned) == 8 and all(PRD_FILE in files for files in owned.values())
    assert "onex_registry/discovery.py" in owned["registry"]
    owners_before = _digests(nodes, owned)

    # 1. A new template version: a visible change in the runtime, committed and tagged.
    runtime_init = clone / "template" / "{{package_name}}" / "runtime" / "__init__.py"
    runtime_init.write_text(
        runtime_init.read_text() + f"\n#: Marks nodes rendered from {NEW_VERSION}.\n"
        f'{MARK} = "{NEW_VERSION}"\n'
    )
    git(clone, "commit", "--quiet", "-am", f"runtime: {MARK}")
    git(clone, "tag", NEW_VERSION)

    # 2. The running pipeline regenerates its own nodes from it.
    started = time.perf_counter()
    regenerated = _cli(
        "pipeline", "regenerate-self", "--root", str(clone), "--template", str(clone),
        "--vcs-ref", NEW_VERSION, "--fast", "--json", env=env,
    )  # fmt: skip
    regeneration_s = time.perf_counter() - started
    assert regenerated.returncode == 0, regenerated.stdout + regenerated.stderr
    report = json.loads(regenerated.stdout)
    assert {n["status"] for n in report["nodes"]} == {"completed"}
    for name in owned:
        inits = list((nodes / name).glob("*/runtime/__init__.py"))
        assert inits and MARK in inits[0].read_text(), f"{name}: runtime not updated"
        recorded = read_answers(nodes / name)
        assert recorded["_commit"] == NEW_VERSION
        assert recorded["_src_path"] == published_source(), "a path of this machine recorded"
    assert _digests(nodes, owned) == owners_before, "an owner file changed"

    # 3. Each stage node rolls onto its new code while requests are in flight.
    stop = threading.Event()
    results: list[PipelineResult] = []
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    stream = threading.Thread(
        target=lambda: asyncio.run(_stream(bootstrap, tmp_path / "out", stop, results))
    )
    stream.start()
    try:
        time.sleep(3)  # requests are flowing before the first stage is replaced
        rolled = _cli(
            "dev", "--root", env["ONEX_STACK_ROOT"], "restart", "pipeline", "--rolling", env=env
        )
    finally:
        stop.set()
        stream.join(timeout=600)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert not stream.is_alive()

    # 4. Nothing lost, nothing answered twice; the fleet runs the new version.
    assert len(results) >= MIN_REQUESTS
    failed = [(r.request_id, r.failure) for r in results if not r.ok]
    assert not failed, failed
    ids = {str(r.request_id) for r in results}
    counts = _completed_counts(bootstrap, ids)
    assert set(counts) == ids, f"{len(ids - set(counts))} request(s) never completed"
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
    assert all((tmp_path / "out" / f"node-{i}").is_dir() for i in range(len(results)))

    versions = _consul_versions(env["CONSUL_HTTP_ADDR"])
    for name in PIPELINE_SERVICES:
        service = name.removeprefix("pipeline-")  # a stage node's service name is its folder
        assert versions.get(service) == [NEW_VERSION], (service, versions.get(service))
    assert _digests(nodes, owned) == owners_before, "an owner file changed"

    # A fresh request through the new generation, fully validated.
    async def fresh() -> PipelineResult:
        async with PipelineClient(bootstrap, "dev") as client:
            request = make_request(_prd(10_000), tmp_path / "fresh")
            return await client.request(request, timeout_s=300)

    result = asyncio.run(fresh())
    assert result.ok, result.failure
    print(f"self_regeneration_s={regeneration_s:.1f} requests_during_rollout={len(results)}")
