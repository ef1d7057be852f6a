"""Registry throughput: M synthetic nodes announce themselves; how fast does Consul list them?

Each synthetic node has a real health endpoint: one small HTTP server answers
``/nodes/<i>/health`` for every i with 200, so the registry's first probe and Consul's HTTP
checks both pass. The announcements are the ones a node sends (introspection event keyed by
node_id on the introspection topic, published with the generated node's EventPublisher). The
clock runs from the first publish until Consul reports all M passing. Afterwards every node is
removed the way a stopped node is (a tombstone on the compacted topic).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from benchmarks.nodes import ConsulHealth
from onex_scaffold import naming

_HEALTH_PATH: Final = re.compile(r"^/nodes/\d+/health$")


class RegistryBenchError(RuntimeError):
    """Not every synthetic node reached Consul in time."""


class _HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = bool(_HEALTH_PATH.match(self.path))
        body = b'{"status":"healthy"}' if ok else b'{"error":"unknown path"}'
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # thousands of probes: keep stderr for the benchmark's own output


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when the registry probes and Consul
    # checks many nodes at once; the clients then wait a second for a SYN retry.
    request_queue_size = 1024
    daemon_threads = True


class HealthServer:
    """One threaded HTTP server on 127.0.0.1 answering every synthetic node's /health."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _HealthHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-health", daemon=True
        )

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.port}/nodes/{index}/health"

    def __enter__(self) -> HealthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@dataclass(frozen=True)
class RegistryResult:
    nodes: int
    publish_s: float
    all_passing_s: float
    removed_s: float | None

    @property
    def nodes_per_s(self) -> float:
        return self.nodes / self.all_passing_s


async def _run(
    publisher_module: ModuleType,
    events_module: ModuleType,
    kafka: str,
    consul_url: str,
    environment: str,
    count: int,
    timeout_s: float,
) -> RegistryResult:
    names = naming()
    service = f"bench-reg-{uuid.uuid4().hex[:8]}"
    topic = names.introspection_topic(environment)
    consul = ConsulHealth(consul_url)
    publisher = publisher_module.EventPublisher(kafka, "bench-announcer", "bench")
    with HealthServer() as health:
        announcements = []
        for index in range(count):
            event = _synthetic_event(
                events_module.ModelNodeIntrospectionEvent, service, index, health
            )
            announcements.append((str(event.node_id), event))
        await publisher.probe()  # connect before the clock starts
        try:
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    publisher.publish(
                        names.EVENT_NODE_INTROSPECTION,
                        event.model_dump(mode="json"),
                        correlation_id=event.correlation_id,
                        topic=topic,
                        key=node_id,
                        dead_letter=False,
                    )
                    for node_id, event in announcements
                )
            )
            published = time.perf_counter() - started
            passing: set[str] = set()
            while len(passing) < count:
                if time.perf_counter() - started > timeout_s:
                    raise RegistryBenchError(
                        f"only {len(passing)}/{count} synthetic nodes passing in Consul "
                        f"{timeout_s:.0f}s after their announcements; check the registry's log"
                    )
                await asyncio.sleep(0.02)
                passing = await asyncio.to_thread(consul.passing_ids, service)
            all_passing = time.perf_counter() - started
        finally:
            # Leave as stopped nodes leave: tombstones, then the registry deregisters them.
            removal_started = time.perf_counter()
            await asyncio.gather(
                *(publisher.publish_tombstone(topic, node_id) for node_id, _ in announcements),
                return_exceptions=True,
            )
            removed: float | None = None
            while time.perf_counter() - removal_started < 60:
                if not await asyncio.to_thread(consul.passing_ids, service):
                    removed = time.perf_counter() - removal_started
                    break
                await asyncio.sleep(0.1)
            await publisher.close()
            consul.close()
    return RegistryResult(count, published, all_passing, removed)


def load_registry_module(checkout: Path) -> ModuleType:
    """``onex_registry.consul_registry`` of our registry node (the registrations it builds)."""
    folder = str(checkout / "nodes" / "registry")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("onex_registry.consul_registry")


def _manifest_txn(items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value.encode()).decode()}}
        for key, value in items
    ]


def consul_floor(
    consul_registry: ModuleType,
    consul_url: str,
    count: int,
    concurrency: int = 16,
    timeout_s: float = 120.0,
) -> RegistryResult:
    """The same registrations the registry makes for ``count`` announced nodes, made by this
    process calling the Consul agent directly: one health probe each, then the service with
    its HTTP check starting as passing, and the manifests in KV transactions of 64, on
    ``concurrency`` threads (the registry's ``REGISTRY_CONSUL_CONCURRENCY`` default). No
    Kafka, no event validation, no reconciliation: what the registry cannot beat."""
    import consul  # py-consul, as the registry uses it

    parsed = urllib.parse.urlsplit(consul_url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 8500
    service = f"bench-floor-{uuid.uuid4().hex[:8]}"
    settings = consul_registry.RegistrySettings()
    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = consul.Consul(host=host, port=port, connections_timeout=10.0)
        return local.client

    health_check = ConsulHealth(consul_url)
    with HealthServer() as health:
        registrations = [
            consul_registry.build_registration(
                _synthetic_event(consul_registry.ModelNodeIntrospectionEvent, service, i, health),
                settings,
            )
            for i in range(count)
        ]

        def register(registration: Any) -> None:
            url = registration.health_endpoint
            with urllib.request.urlopen(url, timeout=settings.probe_timeout_s) as response:
                status = "passing" if 200 <= response.status < 300 else "critical"
            client().agent.service.register(
                registration.name,
                service_id=registration.service_id,
                address=registration.address,
                port=registration.port,
                tags=list(registration.tags),
                meta=registration.meta,
                check={**registration.check, "Status": status},
                replace_existing_checks=True,
            )

        def write_manifests(chunk: list[Any]) -> None:
            client().txn.put(_manifest_txn([(r.kv_key, r.manifest) for r in chunk]))

        chunks = [registrations[i : i + 64] for i in range(0, count, 64)]
        try:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-consul") as pool:
                started = time.perf_counter()
                list(pool.map(register, registrations))
                list(pool.map(write_manifests, chunks))
                registered = time.perf_counter() - started
                passing: set[str] = set()
                while len(passing) < count:
                    if time.perf_counter() - started > timeout_s:
                        raise RegistryBenchError(
                            f"only {len(passing)}/{count} directly registered services passing "
                            f"in Consul after {timeout_s:.0f}s"
                        )
                    passing = health_check.passing_ids(service)
                    if len(passing) < count:
                        time.sleep(0.02)
                all_passing = time.perf_counter() - started
        finally:
            removal_started = time.perf_counter()
            with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-consul") as pool:
                list(
                    pool.map(
                        lambda r: client().agent.service.deregister(r.service_id), registrations
                    )
                )
            client().txn.put(
                [{"KV": {"Verb": "delete", "Key": r.kv_key}} for r in registrations[:64]]
            )
            for chunk in chunks[1:]:
                client().txn.put([{"KV": {"Verb": "delete", "Key": r.kv_key}} for r in chunk])
            removed = time.perf_counter() - removal_started
            health_check.close()
    return RegistryResult(count, registered, all_passing, removed)


def _synthetic_event(model: Any, service: str, index: int, health: HealthServer) -> Any:
    """The announcement of synthetic node ``index`` of ``service`` (see ``_run``)."""
    instance = f"i{index}"
    return model(
        node_id=naming().node_id_for(service, instance),
        node_name="BenchSynthetic",
        node_type="effect",
        service_name=service,
        domain="bench",
        version="0.1.0",
        instance_id=instance,
        description="synthetic node of the registry benchmark",
        capabilities={"actions": ["noop"]},
        tags=["bench"],
        health_endpoint=health.url(index),
    )


def run(
    publisher_module: ModuleType,
    events_module: ModuleType,
    kafka: str,
    consul_url: str,
    environment: str,
    count: int,
    timeout_s: float = 120.0,
) -> RegistryResult:
    return asyncio.run(
        _run(publisher_module, events_module, kafka, consul_url, environment, count, timeout_s)
    )
