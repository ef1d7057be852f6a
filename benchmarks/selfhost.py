"""Self-hosting figures (issue 14), against the live stack's pipeline.

- ``self_regeneration_s``: ``regenerate_self(check=True)``: every node under ``nodes/`` sent
  through the running pipeline from its ``PRD.md``, with the full validation;
- ``rollout_requests`` / ``rollout_lost`` / ``rollout_duplicated``: generation requests sent
  four at a time while every stage node is replaced by a new instance (``Stack.roll``), and how
  many never completed or completed twice, counted on the completed topic itself (the client
  drops duplicates, so it cannot be the judge). The goal is 0 lost and 0 duplicated of at least
  50.

The stream and the count are used by ``tests/e2e/test_self_hosting.py`` too.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.pipeline import events
from onex_scaffold.pipeline.client import PipelineClient
from onex_scaffold.pipeline.runner import PipelineResult, make_request
from onex_scaffold.pipeline.selfhost import regenerate_self

REPO = Path(__file__).resolve().parents[1]
#: Requests in flight during a rollout (the issue asks for at least 50).
MIN_REQUESTS = 50
IN_FLIGHT = 4


@dataclass
class SelfHostFigures:
    regeneration_s: float
    regeneration_drift: bool
    rollout_requests: int
    rollout_lost: int
    rollout_duplicated: int
    rollout_s: float


def rollout_prd(index: int) -> str:
    """A small compute node's parsed_data, one per request."""
    return json.dumps({
        "node_type": "compute", "service_name": f"rolling-{index}", "domain": "testing",
        "description": "A node requested while the pipeline rolls onto a new version.",
        "operations": ["Compute a total"], "features": [], "confidence": 0.9,
    })  # fmt: skip


async def steady_requests(
    bootstrap: str,
    environment: str,
    out: Path,
    stop: threading.Event,
    results: list[PipelineResult],
    minimum: int = MIN_REQUESTS,
) -> None:
    """Requests, IN_FLIGHT at a time, until ``stop`` is set and ``minimum`` were sent."""
    async with PipelineClient(bootstrap, environment) as client:
        index = 0
        in_flight: set[asyncio.Task[PipelineResult]] = set()
        while not (stop.is_set() and index >= minimum):
            while len(in_flight) < IN_FLIGHT:
                request = make_request(rollout_prd(index), out / f"node-{index}", validation="fast")
                in_flight.add(asyncio.create_task(client.request(request, timeout_s=300)))
                index += 1
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            results.extend(task.result() for task in done)
        results.extend(await asyncio.gather(*in_flight))


def completed_counts(
    bootstrap: str, environment: str, request_ids: set[str], timeout_s: float = 60
) -> Counter[str]:
    """NODE_GENERATION_COMPLETED records per request id, read from the topic itself."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"onex-rollout-count-{uuid.uuid4().hex[:6]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([events.event_topic(events.NODE_GENERATION_COMPLETED, environment)])
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
            value = record.value()
            try:
                correlation = json.loads(value).get("correlation_id") if value else None
            except (ValueError, AttributeError):
                continue
            if correlation in request_ids:
                counts[correlation] += 1
    finally:
        consumer.close()
    return counts


def rollout_under_load(
    bootstrap: str, environment: str, out: Path, roll: Callable[[], None]
) -> tuple[list[PipelineResult], Counter[str], float]:
    """Run ``roll`` while requests stream; (results, completed count per request, seconds)."""
    stop = threading.Event()
    results: list[PipelineResult] = []
    stream = threading.Thread(
        target=lambda: asyncio.run(steady_requests(bootstrap, environment, out, stop, results)),
        name="rollout-requests",
    )
    started = time.perf_counter()
    stream.start()
    try:
        time.sleep(3)  # requests are flowing before the first stage is replaced
        roll()
    finally:
        stop.set()
        stream.join(timeout=600)
    seconds = time.perf_counter() - started
    if stream.is_alive():
        raise RuntimeError("the request stream did not end within 600 s")
    counts = completed_counts(bootstrap, environment, {str(r.request_id) for r in results})
    return results, counts, seconds


def run(stack_root: Path, kafka: str, environment: str, work: Path) -> SelfHostFigures:
    started = time.perf_counter()
    reports = asyncio.run(
        regenerate_self(REPO, check=True, bootstrap_servers=kafka, environment=environment)
    )
    regeneration_s = time.perf_counter() - started
    stack = Stack(stack_root)

    def roll() -> None:
        for name in PIPELINE_SERVICES:
            stack.roll(name)

    results, counts, seconds = rollout_under_load(kafka, environment, work / "rollout", roll)
    ids = {str(r.request_id) for r in results}
    return SelfHostFigures(
        regeneration_s=regeneration_s,
        regeneration_drift=any(r.drifted for r in reports),
        rollout_requests=len(results),
        rollout_lost=len(ids - set(counts)) + sum(1 for r in results if not r.ok),
        rollout_duplicated=sum(1 for n in counts.values() if n > 1),
        rollout_s=seconds,
    )
