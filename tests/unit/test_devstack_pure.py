"""Pure parts of the dev stack: parsing, rendering, configuration, port choice."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from onex_scaffold.devstack.base import LogFn, StartContext
from onex_scaffold.devstack.errors import MissingToolError, PortBusyError, UnknownServiceError
from onex_scaffold.devstack.kafka import _kafka_uuid, probe_budget, server_properties
from onex_scaffold.devstack.node_service import NODES_DIR_VAR, NodeService
from onex_scaffold.devstack.ports import (
    choose_port,
    ephemeral_range,
    free_port,
    port_is_free,
    split_hostport,
)
from onex_scaffold.devstack.postgres import with_database
from onex_scaffold.devstack.stack import StackOptions, build_service, wanted_services
from onex_scaffold.devstack.state import ServiceRecord, StackState, parse_env, render_env
from onex_scaffold.devstack.tools import cache_dir, parse_java_major, require


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("http://127.0.0.1:8500/", ("127.0.0.1", 8500)),
        ("localhost", ("localhost", 1234)),
        ("[::1]:8500", ("::1", 8500)),
    ],
)
def test_split_hostport(address: str, expected: tuple[str, int]) -> None:
    assert split_hostport(address, 1234) == expected


def _state(**env: str) -> StackState:
    return StackState(
        services={
            "kafka": ServiceRecord(
                name="kafka", kind="tansu", env={"KAFKA_BOOTSTRAP_SERVERS": env["k"]}
            ),
            "postgres": ServiceRecord(
                name="postgres", kind="postgres", env={"DATABASE_URL": env["d"]}
            ),
            "consul": ServiceRecord(
                name="consul", kind="consul", env={"CONSUL_HTTP_ADDR": env["c"]}
            ),
        }
    )


def test_env_file_is_ordered_quoted_and_round_trips() -> None:
    state = _state(k="127.0.0.1:1", c="127.0.0.1:2", d="postgresql://u@h:3/db?x=a b&y='q'")
    text = render_env(state)
    keys = [line.split("=", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert keys == ["KAFKA_BOOTSTRAP_SERVERS", "CONSUL_HTTP_ADDR", "DATABASE_URL"]
    assert parse_env(text) == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "CONSUL_HTTP_ADDR": "127.0.0.1:2",
        "DATABASE_URL": "postgresql://u@h:3/db?x=a b&y='q'",
    }


def test_env_file_is_shell_sourceable(tmp_path: Path) -> None:
    import subprocess

    state = _state(k="127.0.0.1:1", c="127.0.0.1:2", d="postgresql://u@h:3/db?x=a b&y='q'")
    env_file = tmp_path / "env"
    env_file.write_text(render_env(state))
    out = subprocess.run(
        ["bash", "-c", f'set -a; . "{env_file}"; set +a; printf %s "$DATABASE_URL"'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == "postgresql://u@h:3/db?x=a b&y='q'"


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1) for line in server_properties(tmp_path, 9092, 9093).splitlines()
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["log.cleaner.enable"] == "true"
    assert props["log.dirs"] == str(tmp_path)


def test_kafka_cluster_id_shape() -> None:
    ids = {_kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_choose_port_refuses_a_busy_port_with_the_option_to_change() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(PortBusyError, match=rf"port {port} .*--consul-port"):
            choose_port("consul", port, None, set(), "--consul-port")
        # A busy previous port is silently replaced by a free one.
        other = choose_port("consul", None, port, set(), "--consul-port")
    assert other != port


def test_choose_port_keeps_a_free_previous_port_and_avoids_used_ones() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        previous = probe.getsockname()[1]
    assert choose_port("kafka", None, previous, set(), "--kafka-port") == previous
    assert choose_port("kafka", None, previous, {previous}, "--kafka-port") != previous


def test_free_ports_stay_out_of_the_ephemeral_range_and_avoid_used_ones() -> None:
    # A port of the ephemeral range can be taken by an outgoing connection before the
    # service binds it ("address already in use" when a stage node started in CI).
    ephemeral = ephemeral_range()
    avoid = set(range(10_000, 20_000))
    picked = [free_port(avoid=avoid) for _ in range(500)]
    assert not [p for p in picked if p in ephemeral or p in avoid]
    assert all(port_is_free(p) for p in picked)


def test_with_database_replaces_only_the_path() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/onex?sslmode=disable"
    assert with_database(url, "postgres") == (
        "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )


def test_wanted_services_keeps_optional_services_already_running() -> None:
    empty = StackState()
    base = StackOptions(registry=False, pipeline=False)
    assert wanted_services(base, empty) == ["kafka", "consul"]
    assert wanted_services(StackOptions(postgres=True, registry=False, pipeline=False), empty) == [
        "kafka",
        "consul",
        "postgres",
    ]
    running = StackState(services={"postgres": ServiceRecord(name="postgres", kind="postgres")})
    assert "postgres" in wanted_services(base, running)


def test_the_pipeline_stages_start_by_default_after_kafka_and_consul() -> None:
    from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES
    from onex_scaffold.devstack.stack import depends_on

    wanted = wanted_services(StackOptions(), StackState())
    assert wanted[-7:] == list(PIPELINE_SERVICES)
    assert all(depends_on(name) == ("kafka", "consul") for name in PIPELINE_SERVICES)
    assert not set(PIPELINE_SERVICES) & set(
        wanted_services(StackOptions(pipeline=False), StackState())
    )


def test_build_service_remembers_the_kafka_kind() -> None:
    tansu = ServiceRecord(name="kafka", kind="tansu")
    assert type(build_service("kafka", StackOptions(), tansu)).__name__ == "TansuService"
    assert type(build_service("kafka", StackOptions(), None)).__name__ == "KafkaService"
    chosen = build_service("kafka", StackOptions(kafka="apache"), tansu)
    assert type(chosen).__name__ == "KafkaService"
    with pytest.raises(UnknownServiceError, match="known services"):
        build_service("zookeeper", StackOptions(), None)


def test_require_names_the_program_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match=r"`mvn` not found on PATH: install Maven"):
        require("mvn", "install Maven")


def test_cache_dir_honours_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ONEX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("kafka") == tmp_path / "xdg" / "onex-node" / "kafka"
    monkeypatch.setenv("ONEX_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir("consul", "1") == tmp_path / "own" / "consul" / "1"


def test_consul_build_module_is_licence_clean() -> None:
    from onex_scaffold.devstack.consul import CONSUL_VERSION, FORBIDDEN_MODULES
    from onex_scaffold.devstack.tools import RESOURCES

    go_mod = (RESOURCES / "consul" / "go.mod").read_text()
    go_sum = (RESOURCES / "consul" / "go.sum").read_text()
    assert "tool github.com/hashicorp/consul\n" in go_mod
    assert f"github.com/hashicorp/consul v{CONSUL_VERSION} " in go_mod
    for module in FORBIDDEN_MODULES:
        assert module not in go_mod and module not in go_sum, module
    # Consul moved to the BUSL licence at 1.17; 1.14.x is MPL-2.0.
    major, minor, _ = (int(part) for part in CONSUL_VERSION.split("."))
    assert (major, minor) < (1, 17)


def test_kafka_pom_resolves_the_broker_and_a_log_binding() -> None:
    from onex_scaffold.devstack.tools import RESOURCES

    pom = (RESOURCES / "kafka" / "pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom
    assert "<goal>copy-dependencies</goal>" in pom and "<includeScope>runtime</includeScope>" in pom


def _ctx(tmp_path: Path) -> StartContext:
    return StartContext(
        dev_dir=tmp_path,
        log_dir=tmp_path,
        env={},
        previous=None,
        used_ports=set(),
        log=LogFn(verbose=False),
    )


def test_consul_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from onex_scaffold.devstack import consul as consul_module

    monkeypatch.setenv("ONEX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("CONSUL_BIN", raising=False)
    assert consul_module.find_consul() is None

    cached = consul_module.cached_binary()
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    assert consul_module.find_consul() == cached

    on_path = tmp_path / "bin" / "consul"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert consul_module.find_consul() == on_path

    explicit = tmp_path / "my-consul"
    explicit.write_text("#!/bin/sh\n")
    explicit.chmod(0o755)
    monkeypatch.setenv("CONSUL_BIN", str(explicit))
    assert consul_module.find_consul() == explicit
    explicit.chmod(0o644)
    with pytest.raises(MissingToolError, match=r"CONSUL_BIN=.*not an executable"):
        consul_module.find_consul()


def test_consul_without_binary_or_go_names_both_fixes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from onex_scaffold.devstack.consul import ConsulService

    monkeypatch.setenv("ONEX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CONSUL_BIN", raising=False)
    with pytest.raises(MissingToolError, match=r"`go` not found.*CONSUL_BIN"):
        ConsulService().prepare(_ctx(tmp_path))


def test_kafka_without_java_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from onex_scaffold.devstack.kafka import KafkaService

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingToolError, match=r"`java` not found.*Java 17"):
        KafkaService().prepare(_ctx(tmp_path))


def test_kafka_probe_budget_ends_by_the_deadline() -> None:
    now = time.monotonic()
    assert probe_budget(now + 100) == 3.0  # never longer than one probe's own limit
    assert probe_budget(now - 5) == 0.1  # past the deadline: one short last try
    assert 0.9 < probe_budget(now + 1.0) <= 1.0


def _node_folder(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "start_node.py").write_text("")
    return folder


@pytest.mark.parametrize(("member", "folder"), [("registry", "registry"),
                                                ("pipeline-validator", "validator")])  # fmt: skip
def test_a_restarted_node_runs_from_the_folder_it_ran_from(
    member: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dev up` with ONEX_DEV_NODES_DIR, then `dev restart` from a shell without it: the
    node restarts from the clone it ran from, not from the checkout."""
    monkeypatch.delenv(NODES_DIR_VAR, raising=False)
    clone = _node_folder(tmp_path / "clone" / "nodes", folder)
    ctx = StartContext(tmp_path, tmp_path, {}, None, set(), LogFn(verbose=False))

    def source_with(previous: ServiceRecord | None) -> Path:
        service = build_service(member, StackOptions(), previous)
        assert isinstance(service, NodeService)
        service.prepare(ctx)
        return service.source

    record = ServiceRecord(name=member, kind="onex-node", cwd=str(clone))
    assert source_with(record) == clone
    checkout = source_with(None)
    assert checkout != clone and checkout.name == folder
    # Named explicitly, another folder wins over the recorded one.
    other = _node_folder(tmp_path / "other" / "nodes", folder)
    monkeypatch.setenv(NODES_DIR_VAR, str(other.parent))
    assert source_with(record) == other
    # A recorded folder that no longer holds the node is not used.
    monkeypatch.delenv(NODES_DIR_VAR)
    (clone / "start_node.py").unlink()
    assert source_with(record) == checkout
