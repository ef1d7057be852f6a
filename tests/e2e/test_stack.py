"""The stack itself, against the real services: Kafka, Consul, PostgreSQL and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import consul
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from helpers.kafka_messages import record_value

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.stack import Stack, StackOptions
from onex_scaffold.devstack.state import parse_env
from onex_scaffold.devstack.testing import StackAddresses

# -- the shared live stack ------------------------------------------------------------------------


def _consume(consumer: Consumer, want: int, limit_s: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + limit_s
    while len(got) < want and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        value = None if message is None else record_value(message)
        if value is not None:
            got.append(value)
    return got


def test_kafka_produce_and_consume_with_a_consumer_group(stack: StackAddresses) -> None:
    topic = f"e2e.devstack.{uuid.uuid4().hex[:12]}"
    group = f"e2e-group-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    futures[topic].result(timeout=30)

    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap_servers, "enable.idempotence": True}
    )
    sent = [f"message-{i}".encode() for i in range(20)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i % 4).encode(), value=value)
    assert producer.flush(30) == 0

    config = {
        "bootstrap.servers": stack.kafka_bootstrap_servers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # Short timings so a Tansu broker (it holds joins for half the session timeout) is quick.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    consumer = Consumer(config)
    consumer.subscribe([topic])
    try:
        got = _consume(consumer, len(sent), 60)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)

    # The group committed its offsets: a new member of the same group sees only new records.
    producer.produce(topic, key=b"0", value=b"after-commit")
    assert producer.flush(30) == 0
    again = Consumer(config)
    again.subscribe([topic])
    try:
        assert _consume(again, 1, 60) == [b"after-commit"]
    finally:
        again.close()
    admin.delete_topics([topic])


def test_consul_register_and_read_back_a_service(stack: StackAddresses) -> None:
    host, port = stack.consul_host_port
    client = consul.Consul(host=host, port=port)
    service_id = f"e2e-devstack-{uuid.uuid4().hex[:8]}"
    client.agent.service.register(
        "e2e-devstack",
        service_id=service_id,
        address="127.0.0.1",
        port=18080,
        tags=["onex", "e2e"],
        meta={"node_type": "effect", "version": "0.1.0"},
    )
    try:
        services = client.agent.services()
        assert services[service_id]["Meta"] == {"node_type": "effect", "version": "0.1.0"}
        _index, nodes = client.catalog.service("e2e-devstack")
        assert [node["ServiceID"] for node in nodes] == [service_id]
        assert sorted(nodes[0]["ServiceTags"]) == ["e2e", "onex"]
        assert nodes[0]["ServicePort"] == 18080
    finally:
        client.agent.service.deregister(service_id)
    assert service_id not in client.agent.services()


async def test_postgres_answers_queries(database_url: str) -> None:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await connection.execute("CREATE TEMP TABLE e2e_devstack (id int PRIMARY KEY, name text)")
        await connection.executemany(
            "INSERT INTO e2e_devstack VALUES ($1, $2)", [(1, "kafka"), (2, "consul")]
        )
        rows = await connection.fetch("SELECT name FROM e2e_devstack ORDER BY id")
        assert [row["name"] for row in rows] == ["kafka", "consul"]
        assert await connection.fetchval("SELECT current_database()") == "onex"
    finally:
        await connection.close()


def test_consul_ui_is_served(stack: StackAddresses) -> None:
    with urllib.request.urlopen(f"{stack.consul_url}/ui/", timeout=5) as response:
        assert response.status == 200
        assert b"Consul" in response.read()


def test_status_shows_every_service_answering(stack: StackAddresses) -> None:
    if not (stack.root / ".onex-dev" / "state.json").is_file():
        pytest.skip(f"the stack was not started by `onex-node dev up` in {stack.root}")
    result = _cli("--root", str(stack.root), "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    items = {item["name"]: item for item in json.loads(result.stdout)}
    assert {"kafka", "consul"} <= items.keys()
    assert all(item["answering"] for item in items.values())


# -- stacks of their own, in temporary folders -----------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onex_scaffold.cli", "dev", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def _pids(root: Path) -> list[int]:
    state = json.loads((root / ".onex-dev" / "state.json").read_text())
    return [s["pid"] for s in state["services"].values() if s["pid"] is not None]


@pytest.fixture
def own_root(tmp_path: Path) -> Iterator[Path]:
    """A project folder for a stack of its own; whatever a test starts there is stopped."""
    yield tmp_path
    # purge: a PostgreSQL cluster may live in the system temp dir (see PostgresService._home).
    Stack(tmp_path).down(purge=True)


def test_up_twice_then_down_leaves_no_process(own_root: Path) -> None:
    stack = Stack(own_root)
    # The registry has its own end-to-end tests; these are about the services underneath it.
    options = StackOptions(postgres=True, registry=False, pipeline=False, use_environment=False)
    env = stack.up(options)
    assert set(env) == {"KAFKA_BOOTSTRAP_SERVERS", "CONSUL_HTTP_ADDR", "DATABASE_URL"}
    assert parse_env((own_root / ".onex-dev" / "env").read_text()) == env
    first = {s.name: s.pid for s in stack.status()}
    assert all(s.answering for s in stack.status())
    # lz4-java leaves its native library in java.io.tmpdir at every broker start: that is
    # the broker's own folder, not /tmp.
    argv = Path(f"/proc/{first['kafka']}/cmdline").read_bytes().decode().split("\0")
    tmpdirs = [a.split("=", 1)[1] for a in argv if a.startswith("-Djava.io.tmpdir=")]
    assert tmpdirs and Path(tmpdirs[0]).is_relative_to(own_root.resolve() / ".onex-dev")

    # A second `up` is harmless: same processes, same addresses.
    assert stack.up(options) == env
    assert {s.name: s.pid for s in stack.status()} == first

    pids = _pids(own_root)
    lines = stack.down()
    assert len(lines) == 3 and all("stopped" in line for line in lines)
    for pid in pids:
        assert procs.group_members(pid) == [], f"process group {pid} still has members"
    assert not (own_root / ".onex-dev" / "env").exists()
    assert stack.status() == []


def test_restart_keeps_the_address_and_replaces_the_process(own_root: Path) -> None:
    stack = Stack(own_root)
    env = stack.up(
        StackOptions(kafka="tansu", registry=False, pipeline=False, use_environment=False)
    )
    before = {s.name: s.pid for s in stack.status()}
    assert stack.restart("consul") == env
    after = {s.name: s.pid for s in stack.status()}
    assert after["consul"] != before["consul"] and after["kafka"] == before["kafka"]
    assert not procs.group_members(before["consul"] or 0)
    assert all(s.answering for s in stack.status())


def test_cli_up_status_down_with_tansu(own_root: Path) -> None:
    up = _cli(
        "--root",
        str(own_root),
        "up",
        "--kafka",
        "tansu",
        "--ignore-env",
        "--no-registry",
        "--no-pipeline",
    )
    assert up.returncode == 0, up.stderr
    assert "tansu" in up.stdout and "answering" in up.stdout
    status = _cli("--root", str(own_root), "status")
    assert status.returncode == 0 and status.stdout.count("answering") == 2
    pids = _pids(own_root)
    down = _cli("--root", str(own_root), "down")
    assert down.returncode == 0
    assert all(procs.group_members(pid) == [] for pid in pids)
    again = _cli("--root", str(own_root), "status")
    assert again.returncode == 1 and "nothing started" in again.stdout


def test_busy_port_is_a_one_line_error_and_starts_nothing(own_root: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("--root", str(own_root), "up", "--ignore-env", "--consul-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"port {port}" in result.stderr and "Traceback" not in result.stderr
    state = json.loads((own_root / ".onex-dev" / "state.json").read_text())
    assert state["services"] == {}


def test_missing_java_is_a_one_line_error_and_starts_nothing(own_root: Path) -> None:
    empty_bin = own_root / "empty-bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(empty_bin)
    result = _cli("--root", str(own_root), "up", "--ignore-env", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "java" in result.stderr and "Traceback" not in result.stderr
    state = json.loads((own_root / ".onex-dev" / "state.json").read_text())
    assert state["services"] == {}


def test_a_service_that_does_not_answer_in_time_is_named_and_up_stops_what_it_started(
    own_root: Path,
) -> None:
    # Apache Kafka needs seconds to answer; half a second is never enough.
    result = _cli(
        "--root", str(own_root), "up", "--ignore-env", "--no-registry", "--no-pipeline",
        "--timeout", "0.5",
    )  # fmt: skip
    assert result.returncode == 1
    # Progress lines come first; the error is the one last line.
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    message = errors[0]
    assert "kafka did not come up within 0.5 s" in message and "Traceback" not in message
    assert str(own_root / ".onex-dev" / "logs" / "kafka.log") in message
    assert "stopped what this `up` started: consul" in message
    state = json.loads((own_root / ".onex-dev" / "state.json").read_text())
    assert state["services"] == {}


def test_up_uses_the_services_the_environment_names_and_starts_none(
    stack: StackAddresses, own_root: Path
) -> None:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap_servers,
        CONSUL_HTTP_ADDR=stack.consul_http_addr,
    )
    env.pop("DATABASE_URL", None)
    up = _cli("--root", str(own_root), "up", "--no-registry", "--no-pipeline", env=env)
    assert up.returncode == 0, up.stderr
    assert "from the environment; starting none" in up.stderr
    assert _pids(own_root) == []
    written = parse_env((own_root / ".onex-dev" / "env").read_text())
    assert written == {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "CONSUL_HTTP_ADDR": stack.consul_http_addr,
    }
    down = _cli("--root", str(own_root), "down", env=env)
    assert down.returncode == 0 and down.stdout.count("left running") == 2, down.stdout
    # The services it used are still there.
    with urllib.request.urlopen(f"{stack.consul_url}/v1/status/leader", timeout=5) as response:
        assert response.status == 200
