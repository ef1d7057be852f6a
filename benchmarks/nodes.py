"""Generated effect nodes as real processes: start to passing in Consul, and idle memory."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from benchmarks.report import rss_mb_from_status
from onex_scaffold import naming
from onex_scaffold.devstack.ports import free_port


class NodeStartFailed(RuntimeError):
    """A node exited or did not pass in Consul in time; the message ends with its log."""


class ConsulHealth:
    """``GET /v1/health/service/<name>?passing=true`` on one kept-alive connection."""

    def __init__(self, consul_url: str, timeout_s: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(consul_url)
        if parsed.hostname is None:
            raise ValueError(f"Consul address {consul_url!r} has no host; use http://host:port")
        self._host, self._port = parsed.hostname, parsed.port or 8500
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def passing_ids(self, service: str) -> set[str]:
        """Service IDs of ``service`` whose checks all pass."""
        path = f"/v1/health/service/{urllib.parse.quote(service)}?passing=true"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, self._timeout_s)
            try:
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.close()  # Consul closed the idle connection: one reconnect
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"Consul answered {response.status} to GET {path}: {body!r}")
            entries: list[dict[str, Any]] = json.loads(body)
            return {str(entry["Service"]["ID"]) for entry in entries}
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class NodeProcess:
    """One ``python start_node.py`` the benchmark started (and must stop)."""

    folder: Path
    service_name: str
    instance_id: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    started_at: float
    passing_at: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def service_id(self) -> str:
        names = naming()
        node_id = names.node_id_for(self.service_name, self.instance_id)
        return str(names.consul_service_id(self.service_name, node_id))

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return rss_mb_from_status(status)

    def stop(self, timeout_s: float = 25.0) -> None:
        """SIGTERM (graceful: the node deregisters itself), SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


def start_node(
    folder: Path, service_name: str, instance_id: str, env: dict[str, str], log_dir: Path
) -> NodeProcess:
    """Start the generated node in ``folder`` on a free port with its own INSTANCE_ID."""
    port = free_port()
    log_path = log_dir / f"{service_name}-{instance_id}.log"
    log = log_path.open("wb")
    node_env = {
        **os.environ,
        **env,
        "SERVICE_NAME": service_name,
        "SERVICE_HOST": "127.0.0.1",
        "SERVICE_PORT": str(port),
        "INSTANCE_ID": instance_id,
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "start_node.py"],
        cwd=folder,
        env=node_env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return NodeProcess(
        folder=folder,
        service_name=service_name,
        instance_id=instance_id,
        port=port,
        log_path=log_path,
        process=process,
        started_at=started,
        _log=log,
    )


def wait_passing(
    node: NodeProcess, consul: ConsulHealth, timeout_s: float = 60.0, poll_s: float = 0.02
) -> float:
    """Seconds from the node's start until Consul lists it as passing."""
    deadline = node.started_at + timeout_s
    service_id = node.service_id
    while True:
        if service_id in consul.passing_ids(node.service_name):
            node.passing_at = time.perf_counter()
            return node.passing_at - node.started_at
        if node.process.poll() is not None:
            raise NodeStartFailed(
                f"{node.folder}/start_node.py exited with {node.process.returncode} before "
                f"passing in Consul; its log:\n{node.log_tail()}"
            )
        if time.perf_counter() > deadline:
            raise NodeStartFailed(
                f"{service_id} was not passing in Consul {timeout_s:.0f}s after start "
                f"(is the registry running?); the node's log:\n{node.log_tail()}"
            )
        time.sleep(poll_s)


def wait_ready(node: NodeProcess, timeout_s: float = 60.0, poll_s: float = 0.01) -> float:
    """Seconds from the node's start until its ``/health`` answers 200 (ready)."""
    deadline = node.started_at + timeout_s
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=2)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return time.perf_counter() - node.started_at
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        finally:
            conn.close()
        if node.process.poll() is not None:
            raise NodeStartFailed(
                f"{node.folder}/start_node.py exited with {node.process.returncode} before "
                f"its /health answered 200; its log:\n{node.log_tail()}"
            )
        if time.perf_counter() > deadline:
            raise NodeStartFailed(
                f"{node.folder}/start_node.py: /health not 200 {timeout_s:.0f}s after start; "
                f"its log:\n{node.log_tail()}"
            )
        time.sleep(poll_s)


#: The smallest FastStream service doing what an idle node does with Kafka: one subscriber
#: in a consumer group on the same broker. It prints a line once FastStream says it started.
FASTSTREAM_APP: Final = """\
import asyncio
import os
from typing import Any

from faststream import FastStream
from faststream.confluent import KafkaBroker

broker = KafkaBroker(os.environ["KAFKA_BOOTSTRAP_SERVERS"], client_id="bench-faststream-app")


@broker.subscriber(os.environ["BENCH_TOPIC"], group_id=os.environ["BENCH_GROUP"])
async def handle(body: dict[str, Any]) -> None:
    pass


app = FastStream(broker)


@app.after_startup
async def ready() -> None:
    print("BENCH-READY", flush=True)


asyncio.run(app.run())
"""
READY_LINE: Final = b"BENCH-READY"


def start_faststream_app(
    work: Path, instance_id: str, env: dict[str, str], topic: str, log_dir: Path
) -> NodeProcess:
    """Start the minimal FastStream app (``FASTSTREAM_APP``) as its own process."""
    script = work / "faststream_app.py"
    if not script.exists():
        script.write_text(FASTSTREAM_APP)
    log_path = log_dir / f"faststream-{instance_id}.log"
    log = log_path.open("wb")
    app_env = {
        **os.environ,
        **env,
        "BENCH_TOPIC": topic,
        "BENCH_GROUP": f"bench-faststream-app-{instance_id}",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=work,
        env=app_env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return NodeProcess(
        folder=work,
        service_name="faststream-app",
        instance_id=instance_id,
        port=0,
        log_path=log_path,
        process=process,
        started_at=started,
        _log=log,
    )


def wait_line(app: NodeProcess, line: bytes = READY_LINE, timeout_s: float = 60.0) -> float:
    """Seconds from the app's start until its log shows ``line``."""
    deadline = app.started_at + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if line in app.log_path.read_bytes():
                app.passing_at = time.perf_counter()
                return app.passing_at - app.started_at
        if app.process.poll() is not None:
            raise NodeStartFailed(
                f"the FastStream app exited with {app.process.returncode} before it was "
                f"ready; its log:\n{app.log_tail()}"
            )
        if time.perf_counter() > deadline:
            raise NodeStartFailed(
                f"the FastStream app was not ready {timeout_s:.0f}s after start; its log:\n"
                f"{app.log_tail()}"
            )
        time.sleep(0.01)


def wait_idle(nodes: list[NodeProcess], idle_s: float) -> None:
    """Sleep until every node has been passing for at least ``idle_s``."""
    if nodes:
        latest = max((n.passing_at or n.started_at) for n in nodes)
        time.sleep(max(0.0, latest + idle_s - time.perf_counter()))
