"""The generation pipeline on the live stack: seven stage nodes on Kafka (`onex-node dev up`).

- the event-driven pipeline writes byte for byte what `onex-node generate` writes (apart from
  the answers file's commit), for all four node types;
- two instances of every stage: 20 concurrent requests all complete, each node written once;
- a stage node killed with SIGKILL mid-request: the request completes once it is back;
- a poison record on any stage topic goes to its dead-letter topic and the stage goes on.
"""

from __future__ import annotations

import asyncio
import filecmp
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import dev_root, free_port, unavailable

from onex_scaffold._offsets import end_offsets
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES, stage_source
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.devstack.testing import StackAddresses
from onex_scaffold.pipeline import archive, events
from onex_scaffold.pipeline.client import PipelineClient
from onex_scaffold.pipeline.runner import PipelineResult, make_request

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ENVIRONMENT = "dev"

PARSED: dict[str, dict[str, Any]] = {
    kind: {
        "node_type": kind,
        "service_name": f"e2e-{kind}-node",
        "domain": "testing",
        "description": f"An {kind} node made by the event-driven pipeline.",
        "operations": ["Handle the first thing", "Handle the second thing"],
        "features": ["fast"],
        "confidence": 0.9,
    }
    for kind in ("effect", "compute", "reducer", "orchestrator")
}


@pytest.fixture(scope="module")
def pipeline(stack: StackAddresses) -> StackAddresses:
    """The stack with every stage node answering.

    A stage that is running but not ready yet (its consumer still rejoining after a broker
    restart by an earlier test, say) gets up to a minute; a stage that is not running at all
    is reported at once.
    """
    deadline = time.monotonic() + 60.0
    while True:
        status = {s.name: s for s in Stack(dev_root()).status()}
        missing = [n for n in PIPELINE_SERVICES if n not in status or not status[n].running]
        silent = [n for n in PIPELINE_SERVICES if n not in status or not status[n].answering]
        if not silent:
            return stack
        if missing or time.monotonic() > deadline:
            unavailable(f"pipeline stages not answering: {', '.join(silent)} (`onex-node dev up`)")
        time.sleep(1.0)


async def _requests(
    stack: StackAddresses, requests: list[Any], timeout_s: float = 240.0
) -> list[PipelineResult]:
    async with PipelineClient(stack.kafka_bootstrap_servers, ENVIRONMENT) as client:
        return list(
            await asyncio.gather(*(client.request(r, timeout_s=timeout_s) for r in requests))
        )


def _differences(left: Path, right: Path) -> list[str]:
    found = []
    for rel in sorted(set(archive.node_files(left)) | set(archive.node_files(right))):
        a, b = left / rel, right / rel
        if rel == ".copier-answers.yml" and a.is_file() and b.is_file():
            strip = [ln for ln in a.read_text().splitlines() if not ln.startswith("_commit:")]
            if strip != [ln for ln in b.read_text().splitlines() if not ln.startswith("_commit:")]:
                found.append(rel)
        elif not (a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)):
            found.append(rel)
    return found


def test_same_node_as_onex_node_generate_for_every_node_type(
    pipeline: StackAddresses, tmp_path: Path
) -> None:
    requests = [
        make_request(json.dumps(data), tmp_path / "bus" / kind, prd_name=f"{kind}.json")
        for kind, data in PARSED.items()
    ]
    results = asyncio.run(_requests(pipeline, requests))
    for kind, result in zip(PARSED, results, strict=True):
        assert result.status == "completed", (kind, result.failure)
        assert result.completed is not None and result.completed.score == 100
        stages = [s.stage_name for s in result.stages]
        assert stages[0] == "prd_analyzer" and stages[-1] == "file_writer", stages
        prd = tmp_path / f"{kind}.json"
        prd.write_text(json.dumps(PARSED[kind]))
        direct = tmp_path / "direct" / kind
        done = subprocess.run(
            [sys.executable, "-m", "onex_scaffold.cli", "generate", "--prd", str(prd),
             "--out", str(direct)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert _differences(tmp_path / "bus" / kind, direct) == [], kind


def test_every_event_of_a_request_shares_its_correlation_id(
    pipeline: StackAddresses, tmp_path: Path
) -> None:
    prd = (EXAMPLES / "effect-order-writer.md").read_text()
    request = make_request(prd, tmp_path / "n", prd_name="p.md", validation="fast")
    (result,) = asyncio.run(_requests(pipeline, [request]))
    assert result.status == "completed", result.failure
    assert result.events == [
        "NODE_GENERATION_REQUESTED", "PRD_ANALYZED", "INTELLIGENCE_GATHERED", "CONTRACT_BUILT",
        "CODE_GENERATED", "VALIDATION_COMPLETED", "NODE_GENERATION_COMPLETED",
    ]  # fmt: skip
    # The gatherer found Consul: the stage nodes themselves are registered there.
    gatherer = next(s for s in result.stages if s.stage_name == "intelligence_gatherer")
    assert gatherer.metadata["consul"] == "ok"


def test_the_seven_stages_are_passing_in_consul(pipeline: StackAddresses) -> None:
    url = f"{pipeline.consul_url}/v1/health/state/passing"
    deadline = time.monotonic() + 60
    wanted = {node.service_name for node in events.STAGE_NODES}
    passing: set[str] = set()
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            passing = {check["ServiceName"] for check in json.loads(response.read())}
        if wanted <= passing:
            break
        time.sleep(1)
    assert wanted <= passing, f"not passing in Consul: {sorted(wanted - passing)}"


def test_invalid_prd_fails_with_the_stage_and_problems(
    pipeline: StackAddresses, tmp_path: Path
) -> None:
    request = make_request("Nothing to see.\nReally nothing.", tmp_path / "nothing")
    (result,) = asyncio.run(_requests(pipeline, [request]))
    assert result.failure is not None and result.failure.stage == "prd_analyzer"
    assert result.failure.invalid_input and result.failure.problems[0].field == "node_type"
    assert not (tmp_path / "nothing").exists()


# ---------------------------------------------------------------------------
# Two instances per stage, 20 concurrent requests
# ---------------------------------------------------------------------------


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url}: the instance exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready within {timeout_s} s")


@pytest.fixture
def second_instances(pipeline: StackAddresses, tmp_path: Path) -> Iterator[list[str]]:
    """A second instance of every stage (same consumer groups), stopped afterwards."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for name in PIPELINE_SERVICES:
            folder = name.removeprefix("pipeline-")
            port = free_port()
            env = dict(os.environ)
            env.update(
                KAFKA_BOOTSTRAP_SERVERS=pipeline.kafka_bootstrap_servers,
                CONSUL_HTTP_ADDR=pipeline.consul_http_addr,
                SERVICE_HOST="127.0.0.1",
                SERVICE_PORT=str(port),
                INSTANCE_ID="e2e-second",
                KAFKA_SESSION_TIMEOUT_MS="6000",
            )
            log = (tmp_path / f"{folder}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "onex_scaffold.pipeline.launch", str(stage_source(folder))],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            started.append((process, f"http://127.0.0.1:{port}/health"))
        for process, url in started:
            _wait_ready(url, process)
        time.sleep(3)  # the consumer groups rebalance onto the new members
        yield [url for _process, url in started]
    finally:
        for process, _url in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _url in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_twenty_concurrent_requests_with_two_instances_per_stage(
    pipeline: StackAddresses, second_instances: list[str], tmp_path: Path
) -> None:
    prd = (EXAMPLES / "compute-price-calculator.md").read_text()
    requests = [
        make_request(
            prd.replace("price-calculator", f"price-calculator-{i}"),
            tmp_path / "out" / f"node-{i}",
            prd_name="p.md",
            validation="fast",
        )
        for i in range(20)
    ]
    started = time.perf_counter()
    results = asyncio.run(_requests(pipeline, requests, timeout_s=300))
    elapsed = time.perf_counter() - started
    assert [r.status for r in results] == ["completed"] * 20, [
        (r.failure.stage, r.failure.reason) for r in results if r.failure
    ]
    for request, result in zip(requests, results, strict=True):
        assert result.completed is not None
        target = Path(request.output_directory)
        assert result.completed.output_path == str(target)
        assert archive.tree_digest(target) == result.completed.sha256  # written once, whole
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers
    instances = {source for r in results for source in r.sources}
    # Both instances of the stages took part (consumer groups share the partitions).
    assert any(source.endswith("/e2e-second") for source in instances), instances
    print(f"20 requests, two instances per stage: {elapsed:.1f} s")


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------


def test_a_stage_killed_mid_request_completes_once_back(
    pipeline: StackAddresses, tmp_path: Path
) -> None:
    stack = Stack(dev_root())
    victim = "pipeline-validator"
    record = {s.name: s for s in stack.status()}[victim]
    assert record.pid is not None
    prd = (EXAMPLES / "effect-order-writer.md").read_text()
    request = make_request(prd, tmp_path / "survivor", prd_name="p.md")

    async def scenario() -> PipelineResult:
        async with PipelineClient(pipeline.kafka_bootstrap_servers, ENVIRONMENT) as client:
            generated = asyncio.Event()

            def progress(name: str, _payload: Any) -> None:
                if name == events.CODE_GENERATED:
                    generated.set()

            task = asyncio.create_task(client.request(request, timeout_s=240, progress=progress))
            await asyncio.wait_for(generated.wait(), 120)
            await asyncio.sleep(0.3)  # the validator is at work on it now
            pid = record.pid
            assert pid is not None
            if _is_group_leader(pid):
                os.killpg(pid, signal.SIGKILL)  # the stage and anything it runs (its tools)
            else:
                os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(stack.restart, victim)
            return await task

    result = asyncio.run(scenario())
    assert result.status == "completed", result.failure
    assert archive.tree_digest(tmp_path / "survivor") == result.completed.sha256  # type: ignore[union-attr]


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def test_poison_records_are_dead_lettered_and_the_stages_go_on(
    pipeline: StackAddresses, tmp_path: Path
) -> None:
    from confluent_kafka import Consumer, Producer

    topics = sorted({events.input_topic(node.stage, ENVIRONMENT) for node in events.STAGE_NODES})
    dead = [f"{t}.dlq" for t in topics]
    consumer = Consumer(
        {"bootstrap.servers": pipeline.kafka_bootstrap_servers, "group.id": f"e2e-{uuid.uuid4()}",
         "enable.auto.commit": False, "allow.auto.create.topics": True}
    )  # fmt: skip
    producer = Producer({"bootstrap.servers": pipeline.kafka_bootstrap_servers})
    try:
        for topic in dead:  # make sure the dead-letter topics exist to read from their end
            producer.produce(topic, value=b"{}", key=b"e2e-marker")
        producer.flush(10)
        consumer.assign(end_offsets(consumer, dead))
        marker = f"poison-{uuid.uuid4()}"
        for topic in topics:
            producer.produce(topic, value=b"\xff not json " + marker.encode(), key=marker)
        producer.flush(10)
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while seen != set(dead) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if marker.encode() in (message.value() or b""):
                seen.add(message.topic())
        assert seen == set(dead), f"not dead-lettered from {sorted(set(dead) - seen)}"
    finally:
        consumer.close()
    # The stages went on: a normal request still completes.
    prd = (EXAMPLES / "effect-order-writer.md").read_text()
    request = make_request(prd, tmp_path / "after", prd_name="p.md", validation="fast")
    (result,) = asyncio.run(_requests(pipeline, [request]))
    assert result.status == "completed", result.failure
