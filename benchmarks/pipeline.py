"""Figures of the event-driven generation pipeline (issue 13), against the live stack.

- ``pipeline_request_s``: NODE_GENERATION_REQUESTED -> NODE_GENERATION_COMPLETED, median of
  sequential requests with the full validation (parse, ruff, ruff format, mypy --strict, the
  node's own tests), the stages warm (one request first that is not counted);
- ``pipeline_overhead_ratio``: that median / the median of the same seven stages called in
  this process (``run_in_process``) on the same PRD;
- ``pipeline_throughput_1_per_min`` / ``pipeline_throughput_2_per_min``: requests completed
  per minute with a batch of concurrent requests, one instance of each stage (the dev stack's)
  and then two (a second instance of every stage started here, stopped afterwards).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES, stage_source
from onex_scaffold.devstack.ports import free_port
from onex_scaffold.pipeline.client import PipelineClient
from onex_scaffold.pipeline.events import PipelineRequest
from onex_scaffold.pipeline.runner import make_request, run_in_process

REPO = Path(__file__).resolve().parents[1]
_RUN_TOKEN = f"r{uuid.uuid4().hex[:6]}"
PRD = (REPO / "examples" / "effect-order-writer.md").read_text(encoding="utf-8")


@dataclass
class PipelineFigures:
    bus_s: list[float] = field(default_factory=list)
    in_process_s: list[float] = field(default_factory=list)
    throughput_1_per_min: float | None = None
    throughput_2_per_min: float | None = None
    stage_ms: dict[str, list[int]] = field(default_factory=dict)


def _request(work: Path, label: str, validation: str = "full") -> PipelineRequest:
    # The run's token keeps names new across runs: the validator remembers results by the
    # node's files, so a repeat run with the same names would time cache hits.
    return make_request(
        PRD.replace("order-writer", f"order-writer-{_RUN_TOKEN}-{label}"),
        work / label,
        prd_name="order-writer.md",
        validation=validation,
    )


async def _bus_requests(kafka: str, environment: str, requests: list[PipelineRequest]) -> float:
    async with PipelineClient(kafka, environment) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(client.request(r, timeout_s=600) for r in requests))
        elapsed = time.perf_counter() - started
    failed = [
        f"{r.failure.reason} {[f'{p.field}: {p.rule}' for p in r.failure.problems[:5]]}"
        for r in results
        if r.failure is not None
    ]
    if failed:
        raise RuntimeError(f"pipeline requests failed: {failed[:3]}")
    return elapsed


@contextmanager
def second_instances(kafka: str, consul: str, log_dir: Path) -> Iterator[None]:
    """A second instance of every stage node (same consumer groups) while the block runs."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in PIPELINE_SERVICES:
            folder = name.removeprefix("pipeline-")
            port = free_port()
            env = dict(os.environ)
            env.update(
                KAFKA_BOOTSTRAP_SERVERS=kafka,
                CONSUL_HTTP_ADDR=consul,
                SERVICE_HOST="127.0.0.1",
                SERVICE_PORT=str(port),
                INSTANCE_ID="bench-second",
                KAFKA_SESSION_TIMEOUT_MS="6000",
            )
            log = (log_dir / f"{folder}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "onex_scaffold.pipeline.launch", str(stage_source(folder))],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            started.append((process, f"http://127.0.0.1:{port}/health"))
        deadline = time.monotonic() + 120
        for process, url in started:
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"second stage instance at {url} did not become ready")
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.5)
        time.sleep(3.0)  # consumer groups rebalance onto the new members
        yield
    finally:
        for process, _url in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _url in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def run(
    kafka: str, consul: str, environment: str, work: Path, samples: int, batch: int
) -> PipelineFigures:
    figures = PipelineFigures()
    # Warm-up (imports, mypy cache, template snapshot) in both modes, not counted.
    asyncio.run(_bus_requests(kafka, environment, [_request(work, "warm-bus")]))
    run_in_process(_request(work, "warm-local"), consul)
    for index in range(samples):
        # Alternating keeps machine noise from favouring either mode.
        figures.bus_s.append(
            asyncio.run(_bus_requests(kafka, environment, [_request(work, f"bus-{index}")]))
        )
        started = time.perf_counter()
        result = run_in_process(_request(work, f"local-{index}"), consul)
        figures.in_process_s.append(time.perf_counter() - started)
        if result.failure is not None:
            raise RuntimeError(f"in-process pipeline failed: {result.failure.reason}")
        for stage in result.stages:
            figures.stage_ms.setdefault(stage.stage_name, []).append(stage.duration_ms or 0)
    one = [_request(work, f"one-{i}") for i in range(batch)]
    figures.throughput_1_per_min = batch / asyncio.run(_bus_requests(kafka, environment, one)) * 60
    with second_instances(kafka, consul, work / "second-instance-logs"):
        two = [_request(work, f"two-{i}") for i in range(batch)]
        elapsed = asyncio.run(_bus_requests(kafka, environment, two))
        figures.throughput_2_per_min = batch / elapsed * 60
    return figures
