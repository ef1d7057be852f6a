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
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Final

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
            instance = f"i{index}"
            node_id = names.node_id_for(service, instance)
            event = events_module.ModelNodeIntrospectionEvent(
                node_id=node_id,
                node_name="BenchSynthetic",
                node_type="effect",
                service_name=service,
                domain="bench",
                version="0.1.0",
                instance_id=instance,
                description="synthetic node of the registry benchmark",
                capabilities=events_module.ModelNodeCapabilities(actions=["noop"]),
                tags=["bench"],
                health_endpoint=health.url(index),
            )
            announcements.append((str(node_id), event))
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
