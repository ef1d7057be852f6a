"""Measurements of the registry on the real stack, printed (run with -s to see them).

- time from `python start_node.py` to the node passing in Consul (goal: median <= 3 s);
- registrations per second: N announcements on the bus until all N are in Consul (goal >= 100).

The goals are not asserted: a 2-core shared machine makes timings noisy. What is asserted is
that every node got registered and deregistered. ONEX_BENCH_STARTS and ONEX_BENCH_NODES
change the sample sizes; ONEX_BENCH_OUT names a JSON file to write the figures to.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import unavailable
from registry_helpers import (
    ConsulHttp,
    NodeProcess,
    announce,
    fake_introspection,
    health_server,
    naming,
    producer,
    registry_url,
    say_goodbye,
    start_node,
    wait_for,
)
from test_registry import SERVICE, writer_project  # noqa: F401 - the shared fixture

from onex_scaffold.devstack.registry import probe_registry
from onex_scaffold.devstack.testing import StackAddresses

STARTS = int(os.environ.get("ONEX_BENCH_STARTS", "5"))
NODES = int(os.environ.get("ONEX_BENCH_NODES", "300"))
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    out = os.environ.get("ONEX_BENCH_OUT")
    if out and FIGURES:
        Path(out).write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="module")
def live(stack: StackAddresses, database_url: str) -> ConsulHttp:
    url = registry_url()
    if url is None or probe_registry(url) is not None:
        unavailable("the registry of the dev stack is not ready")
    return ConsulHttp(stack)


def test_time_from_start_to_passing(
    live: ConsulHttp,
    writer_project: Path,  # noqa: F811
    stack: StackAddresses,
    tmp_path: Path,
) -> None:
    samples: list[float] = []
    for _ in range(STARTS):
        node: NodeProcess = start_node(writer_project, SERVICE, stack, tmp_path)
        try:
            wait_for(
                "passing",
                lambda n=node: live.status(n.service_id) == "passing",  # type: ignore[misc]
                30,
                0.02,
            )
            samples.append(time.monotonic() - node.started_at)
        finally:
            assert node.stop() == 0, node.log()
        wait_for("gone", lambda n=node: live.status(n.service_id) is None, 10)  # type: ignore[misc]
    median = statistics.median(samples)
    FIGURES["start_to_passing_s"] = {"samples": samples, "median": median}
    print(
        f"\n`python start_node.py` -> passing in Consul: median {median:.2f} s over "
        f"{len(samples)} starts ({', '.join(f'{s:.2f}' for s in samples)})"
    )


def test_registrations_per_second(live: ConsulHttp, stack: StackAddresses) -> None:
    prod = producer(stack)
    run = uuid.uuid4().hex[:6]
    with health_server() as base:
        events = [fake_introspection("e2e-bench", f"{run}-{i}", base) for i in range(NODES)]
        wanted = {naming.consul_service_id(e.service_name, e.node_id) for e in events}
        started = time.monotonic()
        for event in events:
            announce(prod, event, flush=False)
        assert prod.flush(30) == 0
        try:
            wait_for("all registered", lambda: wanted <= live.managed_ids(), 120, 0.05)
            registered_s = time.monotonic() - started
            passing = wait_for(
                "all passing",
                lambda: _all_passing(live, "e2e-bench", wanted),
                60,
                0.2,
            )
            assert passing
        finally:
            leaving = time.monotonic()
            for event in events:
                say_goodbye(prod, event, flush=False)
            assert prod.flush(30) == 0
        wait_for("all deregistered", lambda: not (wanted & live.managed_ids()), 120, 0.05)
        deregistered_s = time.monotonic() - leaving
    rate = NODES / registered_s
    FIGURES["registrations"] = {
        "nodes": NODES,
        "seconds": registered_s,
        "per_second": rate,
        "deregistrations_per_second": NODES / deregistered_s,
    }
    print(
        f"\n{NODES} announcements -> {NODES} Consul registrations in {registered_s:.2f} s "
        f"({rate:.0f}/s); {NODES} shutdowns -> deregistered in {deregistered_s:.2f} s "
        f"({NODES / deregistered_s:.0f}/s)"
    )


def _all_passing(consul: ConsulHttp, service: str, wanted: set[str]) -> bool:
    _, entries = consul.get(f"/v1/health/service/{service}?passing=true")
    return wanted <= {e["Service"]["ID"] for e in entries or []}
