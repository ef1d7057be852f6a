"""Helpers of the registry's end-to-end tests: real Kafka, real Consul, real node processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from helpers import dev_root, free_port

from onex_scaffold._offsets import end_offsets
from onex_scaffold.devstack import procs
from onex_scaffold.devstack.registry import REGISTRY_VAR
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.devstack.state import parse_env
from onex_scaffold.devstack.testing import StackAddresses

REPO = Path(__file__).resolve().parents[2]
REGISTRY_DIR = REPO / "nodes" / "registry"

from onex_registry.runtime import naming  # noqa: E402
from onex_registry.runtime.events import (  # noqa: E402
    ModelEventEnvelope,
    ModelEventSource,
    ModelNodeIntrospectionEvent,
    ModelNodeShutdownEvent,
)

#: The registry of the dev stack reads this environment's topics.
ENV = os.environ.get("KAFKA_ENVIRONMENT", "dev")
T = TypeVar("T")


def registry_url() -> str | None:
    """ONEX_REGISTRY_URL from the environment or the dev stack's env file, if it answers."""
    url = os.environ.get(REGISTRY_VAR)
    if not url:
        env_file = dev_root() / ".onex-dev" / "env"
        url = parse_env(env_file.read_text()).get(REGISTRY_VAR) if env_file.is_file() else None
    return url


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after the limit."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


# -- Consul ----------------------------------------------------------------------------------


def unready_reasons(registry: str, about: Callable[[str], bool]) -> str | None:
    """The registry's /health reasons, joined, while it answers 503 with a reason ``about``
    accepts; None while it answers 200, or 503 for other reasons only."""
    try:
        with urllib.request.urlopen(registry + "/health", timeout=2):
            return None
    except urllib.error.HTTPError as error:
        reasons = json.loads(error.read())["reasons"]
        return "; ".join(reasons) if any(about(r) for r in reasons) else None


def stop_stack_service(dev: Stack, name: str) -> None:
    """Stop the dev stack's ``name`` process, as a crash would (``dev.restart`` brings it back)."""
    record = dev.store.load().services[name]
    assert record.pid is not None and record.start_ticks is not None
    procs.stop(procs.ProcessInfo(record.pid, record.start_ticks))


class ConsulHttp:
    """Plain HTTP reads of the agent, so the test checks Consul itself, not our client."""

    def __init__(self, stack: StackAddresses) -> None:
        self.url = stack.consul_url.rstrip("/")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return error.code, json.loads(body) if body else None
            except ValueError:
                return error.code, body.decode(errors="replace")

    def status(self, service_id: str) -> str | None:
        """passing | warning | critical, or None when the agent does not have the service."""
        code, body = self.get(f"/v1/agent/health/service/id/{service_id}")
        if code == 404:
            return None
        if isinstance(body, dict):
            return str(body.get("AggregatedStatus"))
        return None

    def service(self, service_id: str) -> dict[str, Any] | None:
        code, body = self.get(f"/v1/agent/service/{service_id}")
        return body if code == 200 and isinstance(body, dict) else None

    def check(self, service_id: str) -> dict[str, Any] | None:
        _, checks = self.get("/v1/agent/checks")
        for check in (checks or {}).values():
            if check.get("ServiceID") == service_id:
                return dict(check)
        return None

    def kv(self, key: str) -> dict[str, Any] | None:
        code, body = self.get(f"/v1/kv/{key}?raw")
        return body if code == 200 and isinstance(body, dict) else None

    def managed_ids(self) -> set[str]:
        _, services = self.get("/v1/agent/services")
        return {
            sid
            for sid, svc in (services or {}).items()
            if (svc.get("Meta") or {}).get("onex_managed_by") == "onex-registry"
        }


# -- Kafka -----------------------------------------------------------------------------------


def producer(stack: StackAddresses) -> Producer:
    return Producer({"bootstrap.servers": stack.kafka_bootstrap_servers, "linger.ms": 5})


def produce(prod: Producer, topic: str, value: bytes | None, key: str | None = None) -> None:
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    prod.produce(topic, value=value, key=key, on_delivery=on_delivery)
    remaining = prod.flush(15)
    assert remaining == 0 and not errors, f"produce to {topic} failed: {errors or remaining}"


def envelope(
    event_type: str,
    payload: dict[str, Any],
    correlation_id: uuid.UUID | None = None,
    service: str = "e2e-test",
) -> bytes:
    return ModelEventEnvelope(
        event_type=event_type,
        correlation_id=correlation_id or uuid.uuid4(),
        source=ModelEventSource(service=service, instance_id="e2e"),
        payload=payload,
    ).to_bytes()


@contextlib.contextmanager
def reader(stack: StackAddresses, topics: list[str], from_beginning: bool) -> Iterator[Consumer]:
    """A consumer assigned to every partition of ``topics`` (no group membership)."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka_bootstrap_servers,
            "group.id": f"e2e-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        missing = [t for t in topics if t not in metadata.topics]
        if missing:
            # A node creates its output topic on first publish; the reader must be there first.
            admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap_servers})
            for future in admin.create_topics([NewTopic(t) for t in missing]).values():
                with contextlib.suppress(KafkaException):  # created meanwhile
                    future.result(15)

            def ready() -> Any:
                meta = consumer.list_topics(timeout=10)
                ok = all(t in meta.topics and not meta.topics[t].error for t in topics)
                return meta if ok else None

            metadata = wait_for("topics created", ready, 15, 0.2)
        if from_beginning:
            parts: list[TopicPartition] = []
            for topic in topics:
                meta = metadata.topics.get(topic)
                assert meta is not None and meta.error is None, f"topic {topic} is missing"
                parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        else:
            # Resolve "end" now, so records produced after this line are seen.
            parts = end_offsets(consumer, topics)
        consumer.assign(parts)
        yield consumer
    finally:
        consumer.close()


def find_record(consumer: Consumer, match: Callable[[Any], bool], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.2):
            if message.error() is None and match(message):
                return message
    raise AssertionError(f"no matching record within {timeout_s:.0f} s")


# -- node processes --------------------------------------------------------------------------


@dataclass
class NodeProcess:
    project: Path
    service_name: str
    instance_id: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def node_id(self) -> str:
        return str(naming.node_id_for(self.service_name, self.instance_id))

    @property
    def service_id(self) -> str:
        return naming.consul_service_id(self.service_name, self.node_id)

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout_s)


def start_node(
    project: Path,
    service_name: str,
    stack: StackAddresses,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> NodeProcess:
    """``python start_node.py`` in ``project``, as its owner would run it, on the live stack."""
    instance = f"e2e-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = dict(os.environ)
    env.update(stack.env())
    env.update(
        KAFKA_ENVIRONMENT=ENV,
        SERVICE_HOST="127.0.0.1",
        SERVICE_PORT=str(port),
        INSTANCE_ID=instance,
        HEARTBEAT_INTERVAL_S="2",
        SHUTDOWN_GRACE_S="10",
        PYTHONUNBUFFERED="1",
        **(extra_env or {}),
    )
    log_path = log_dir / f"{service_name}-{instance}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "start_node.py"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return NodeProcess(project, service_name, instance, port, process, log_path, started)


# -- fake nodes: announcements with a health endpoint the test serves ------------------------


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when hundreds of fake nodes are
    # probed at once, and each dropped client waits a second for its SYN retry.
    request_queue_size = 1024
    daemon_threads = True


@contextlib.contextmanager
def health_server() -> Iterator[str]:
    """An HTTP server answering 200 on every path: the health endpoint of fake nodes."""
    server = _Server(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, name="fake-health", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fake_introspection(
    service_name: str, instance: str, health_base: str | None
) -> ModelNodeIntrospectionEvent:
    return ModelNodeIntrospectionEvent(
        node_id=naming.node_id_for(service_name, instance),
        node_name="E2eFake",
        node_type="compute",
        service_name=service_name,
        domain="e2e",
        version="0.0.1",
        instance_id=instance,
        description="fake node of the registry e2e tests",
        tags=["e2e"],
        health_endpoint=f"{health_base}/health/{instance}" if health_base else None,
    )


def announce(prod: Producer, event: ModelNodeIntrospectionEvent, flush: bool = True) -> None:
    value = envelope(naming.EVENT_NODE_INTROSPECTION, event.model_dump(mode="json"))
    prod.produce(naming.introspection_topic(ENV), value=value, key=str(event.node_id))
    if flush:
        assert prod.flush(15) == 0


def say_goodbye(prod: Producer, event: ModelNodeIntrospectionEvent, flush: bool = True) -> None:
    """What a node's runtime sends on a graceful stop: shutdown event, then a tombstone."""
    goodbye = ModelNodeShutdownEvent(
        node_id=event.node_id, service_name=event.service_name, instance_id=event.instance_id
    )
    key = str(event.node_id)
    prod.produce(
        naming.shutdown_topic(ENV),
        value=envelope(naming.EVENT_NODE_SHUTDOWN, goodbye.model_dump(mode="json")),
        key=key,
    )
    prod.produce(naming.introspection_topic(ENV), value=None, key=key)
    if flush:
        assert prod.flush(15) == 0


# -- abuse tests: dead letters, a registry restarted with other settings ---------------------


def produce_record(
    prod: Producer,
    topic: str,
    value: bytes | None,
    key: str | None,
    headers: list[tuple[str, str | bytes]] | None = None,
) -> None:
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    prod.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
    remaining = prod.flush(15)
    assert remaining == 0 and not errors, f"produce to {topic} failed: {errors or remaining}"


def dead_letters(consumer: Consumer, keys: set[str], timeout_s: float = 30) -> dict[str, Any]:
    """key -> the dead letter's payload, for every key in ``keys`` (fails after the limit)."""
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while seen.keys() < keys and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=200, timeout=0.2):
            key = (message.key() or b"").decode(errors="replace")
            if message.error() is None and key in keys:
                seen[key] = json.loads(message.value() or b"null")["payload"]
    missing = keys - seen.keys()
    assert not missing, f"not dead-lettered within {timeout_s:.0f} s: {sorted(missing)}"
    return seen


def registry_ready(timeout_s: float = 120) -> str:
    from onex_scaffold.devstack.registry import probe_registry

    def ready() -> str | None:
        url = registry_url()
        return url if url is not None and probe_registry(url) is None else None

    return wait_for("the registry answering /health with 200", ready, timeout_s, 0.2)


@contextlib.contextmanager
def registry_restarted_with(**env: str) -> Iterator[None]:
    """Run the dev stack's registry with ``env`` added, then restart it as it was."""
    from onex_scaffold.devstack.stack import Stack

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        Stack(dev_root()).restart("registry")
        registry_ready()
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        Stack(dev_root()).restart("registry")
        registry_ready()
