"""``start_node.py`` as a real process: signals, graceful stop, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from helpers import free_port

from .conftest import Broker, RenderedNode, render

SLOW_HANDLER = '''
import asyncio  # noqa: E402


class Handlers(Handlers):  # type: ignore[no-redef]
    """Test edit by the node's owner: a command may ask the effect to take its time."""

    async def execute_effect(self, command: Command, ctx: NodeContext) -> Mapping[str, Any] | None:
        delay = float(command.payload.get("data", {}).get("sleep_s", 0))
        ctx.logger.info("effect started (%.1fs)", delay)
        await asyncio.sleep(delay)
        return await super().execute_effect(command, ctx)
'''


@pytest.fixture
def slow_effect(tmp_path: Path) -> RenderedNode:
    """An effect project whose owner made execute_effect honour ``data.sleep_s``."""
    project = render("effect", tmp_path / "slow", service_name="rt-slow", node_name="RtSlow")
    handlers = project.path / project.package / "handlers.py"
    handlers.write_text(handlers.read_text() + SLOW_HANDLER)
    return project


class NodeProcess:
    def __init__(self, project: RenderedNode, env: dict[str, str]) -> None:
        self.port = int(env["SERVICE_PORT"])
        self.env = env
        self.log = project.path / "node.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "start_node.py"],
            cwd=project.path,
            env={**os.environ, **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    async def wait_until(self, check: Any, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                status, body = await asyncio.to_thread(self.health)
                if check(status, body):
                    return body
            except OSError:
                pass
            assert time.monotonic() < deadline, f"condition not reached:\n{self.output()}"
            await asyncio.sleep(0.1)

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()


@pytest.fixture
def process_env(broker: Broker, tmp_path: Path) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:10]
    yield {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_ENVIRONMENT": f"rp{run}",
        "KAFKA_CONSUMER_GROUP": f"rp-{run}",
        "INSTANCE_ID": f"rp-{run}",
        "SERVICE_PORT": str(free_port()),
        "SERVICE_HOST": "127.0.0.1",
        "SERVICE_BIND_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_S": "15",
        "LOG_LEVEL": "INFO",
        **broker.env,
    }


async def test_sigterm_during_processing_finishes_work_commits_and_exits_zero(
    slow_effect: RenderedNode, broker: Broker, process_env: dict[str, str]
) -> None:
    naming = slow_effect.module("runtime.naming")
    testing = slow_effect.module("runtime.testing")
    env = process_env["KAFKA_ENVIRONMENT"]
    command_topic = naming.command_topic(env, "rt-slow")
    completed_topic = naming.node_event_topic(env, "rt-slow", "completed")
    node = NodeProcess(slow_effect, process_env)
    try:
        await node.wait_until(lambda status, _: status == 200)
        correlation_id = uuid.uuid4()
        await testing.send_event(
            broker.bootstrap,
            command_topic,
            "t.cmd",
            {"data": {"sleep_s": 3}},
            correlation_id=correlation_id,
        )
        await node.wait_until(lambda _, body: body["active_operations"] == 1)
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, 30)
        assert code == 0, node.output()
        assert time.monotonic() - started >= 1.5, "the in-flight effect was not waited for"
    finally:
        node.stop()
    output = node.output()
    assert "SIGTERM received" in output

    reader = testing.TopicReader(broker.bootstrap, [completed_topic])
    try:
        [record] = await reader.wait_for(
            lambda m: testing.envelope_of(m).correlation_id == correlation_id, timeout_s=15
        )
    finally:
        reader.close()
    assert testing.envelope_of(record).payload["result"] == {"sleep_s": 3}

    def committed() -> list[TopicPartition]:
        consumer = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": process_env["KAFKA_CONSUMER_GROUP"]}
        )
        try:
            meta = consumer.list_topics(command_topic, timeout=10).topics[command_topic]
            parts = [TopicPartition(command_topic, p) for p in meta.partitions]
            return consumer.committed(parts, timeout=10)
        finally:
            consumer.close()

    offsets = await asyncio.to_thread(committed)
    assert sum(max(tp.offset, 0) for tp in offsets) == 1, offsets


async def test_second_signal_forces_exit(
    slow_effect: RenderedNode, broker: Broker, process_env: dict[str, str]
) -> None:
    naming = slow_effect.module("runtime.naming")
    testing = slow_effect.module("runtime.testing")
    command_topic = naming.command_topic(process_env["KAFKA_ENVIRONMENT"], "rt-slow")
    node = NodeProcess(slow_effect, {**process_env, "SHUTDOWN_GRACE_S": "25"})
    try:
        await node.wait_until(lambda status, _: status == 200)
        await testing.send_event(
            broker.bootstrap, command_topic, "t.cmd", {"data": {"sleep_s": 60}}
        )
        await node.wait_until(lambda _, body: body["active_operations"] == 1)
        node.proc.send_signal(signal.SIGTERM)
        await node.wait_until(lambda status, body: "shutting down" in body.get("reasons", []))
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, 10)
        assert code == 128 + signal.SIGTERM, node.output()
        assert time.monotonic() - started < 5
    finally:
        node.stop()


def test_invalid_settings_exit_2_with_the_variable_named(
    rendered: dict[str, RenderedNode], tmp_path: Path
) -> None:
    project = rendered["effect"]
    result = subprocess.run(
        [sys.executable, "start_node.py"],
        cwd=project.path,
        env={**os.environ, "SERVICE_PORT": "not-a-port", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "service_port" in result.stderr.lower()


async def test_sigterm_while_waiting_for_kafka_exits_zero_at_once(
    rendered: dict[str, RenderedNode], tmp_path: Path
) -> None:
    project = rendered["effect"]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "KAFKA_CONNECT_WAIT_S": "60",
        "SERVICE_PORT": str(free_port()),
        "SERVICE_HOST": "127.0.0.1",
        "SERVICE_BIND_HOST": "127.0.0.1",
        "INSTANCE_ID": f"rp-{uuid.uuid4().hex[:8]}",
    }
    node = NodeProcess(project, env)
    try:
        body = await node.wait_until(lambda status, _: status == 503)
        assert any("kafka broker unreachable" in r for r in body["reasons"])
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, 15)
        assert code == 0, node.output()
        assert time.monotonic() - started < 5
    finally:
        node.stop()
