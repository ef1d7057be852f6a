"""Chaos tests: a three-broker Kafka, a three-server Consul and two registries of their own.

`nox -s chaos` starts that cluster in a temporary folder (`onex-node dev --root DIR up
--kafka-brokers 3 --consul-servers 3 --registries 2`), runs the tests marked `chaos` with
ONEX_CHAOS_ROOT=DIR, and stops it again. Without ONEX_CHAOS_ROOT the tests are skipped (or fail,
with ONEX_CHAOS_REQUIRED=1). The figures they measure are printed at the end of the run as the
chaos report and written to DIR/chaos-report.json (or $ONEX_CHAOS_REPORT).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import REPORT

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.layout import service_of
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.devstack.testing import StackAddresses, StackUnavailable, read_stack_addresses

CHAOS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CHAOS_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("chaos report")
    for key, value in REPORT.items():
        terminalreporter.write_line(f"{key}: {json.dumps(value)}")
    root = os.environ.get("ONEX_CHAOS_ROOT")
    target = os.environ.get("ONEX_CHAOS_REPORT") or (
        str(Path(root) / "chaos-report.json") if root else ""
    )
    if target:
        Path(target).write_text(json.dumps(REPORT, indent=2) + "\n")
        terminalreporter.write_line(f"written to {target}")


def _unavailable(reason: str) -> None:
    message = f"{reason}; run `nox -s chaos` (it starts its own cluster)"
    if os.environ.get("ONEX_CHAOS_REQUIRED") == "1":
        pytest.fail(f"ONEX_CHAOS_REQUIRED=1 but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cluster_root() -> Path:
    root = os.environ.get("ONEX_CHAOS_ROOT")
    if not root:
        _unavailable("ONEX_CHAOS_ROOT names no clustered dev stack")
    return Path(str(root)).resolve()


@pytest.fixture(scope="session")
def cluster(cluster_root: Path) -> Stack:
    """The clustered stack; every member answering, and its memory recorded once."""
    stack = Stack(cluster_root)
    members = {item.name: item for item in stack.status()}
    wanted = {"kafka-1", "kafka-2", "kafka-3", "consul-1", "consul-2", "consul-3"}
    wanted |= {"consul-agent", "registry-1", "registry-2"}
    if not wanted <= members.keys():
        _unavailable(f"{cluster_root} runs {sorted(members)}, not the chaos cluster")
    silent = [name for name, item in members.items() if not item.answering]
    if silent:
        _unavailable(f"members not answering in {cluster_root}: {silent}")
    REPORT.setdefault("memory_mb", memory_by_service(stack))
    return stack


@pytest.fixture(scope="session")
def addresses(cluster: Stack) -> StackAddresses:
    try:
        return read_stack_addresses(cluster.root, environ={})
    except StackUnavailable as error:
        _unavailable(str(error))
        raise


def rss_mb(pid: int) -> float:
    """Resident memory of a process group (the member and what it forked), in MB."""
    total = 0
    for member in procs.group_members(pid) or [pid]:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def memory_by_service(stack: Stack) -> dict[str, float]:
    """RSS per member and summed per service and in total (MB)."""
    figures: dict[str, float] = {}
    sums: dict[str, float] = {}
    for item in stack.status():
        if item.pid is None or not item.running:
            continue
        mb = rss_mb(item.pid)
        figures[item.name] = mb
        service = service_of(item.name)
        sums[f"sum_{service}"] = round(sums.get(f"sum_{service}", 0.0) + mb, 1)
    figures.update(sums)
    figures["total"] = round(sum(v for k, v in figures.items() if not k.startswith("sum_")), 1)
    return figures


@pytest.fixture
def members_back(cluster: Stack) -> Iterator[Stack]:
    """Every member answers when the test begins; whatever member it stops is started again
    afterwards, so the next test has all."""
    deadline = time.monotonic() + 60
    silent = ["?"]
    while silent and time.monotonic() < deadline:
        silent = [f"{i.name}: {i.detail}" for i in cluster.status() if not i.answering]
        if silent:
            time.sleep(1)
    assert not silent, f"members not answering before the test: {silent}"
    yield cluster
    deadline = time.monotonic() + 120
    for item in cluster.status():
        if not item.running and time.monotonic() < deadline:
            cluster.start(item.name)
