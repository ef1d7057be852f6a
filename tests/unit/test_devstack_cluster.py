"""The clustered stack's pure parts: member names, layout checks, broker configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from onex_scaffold.devstack.base import LogFn, StartContext
from onex_scaffold.devstack.errors import DevStackError, UnknownServiceError
from onex_scaffold.devstack.kafka import KafkaCluster, replication_for, server_properties
from onex_scaffold.devstack.layout import (
    Layout,
    index_of,
    layout_of,
    members_of,
    order_key,
    service_of,
)
from onex_scaffold.devstack.stack import (
    SERVICE_ORDER,
    ServiceFactory,
    StackOptions,
    layout_for,
    wanted_services,
)
from onex_scaffold.devstack.state import ServiceRecord, StackState


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_member_names_number_only_clusters() -> None:
    assert members_of("kafka", 1) == ["kafka"]
    assert members_of("kafka", 3) == ["kafka-1", "kafka-2", "kafka-3"]
    assert members_of("consul", 3) == ["consul-1", "consul-2", "consul-3", "consul-agent"]
    assert members_of("registry", 2) == ["registry-1", "registry-2"]
    assert [service_of(n) for n in ("kafka-2", "consul-agent", "postgres")] == [
        "kafka",
        "consul",
        "postgres",
    ]
    assert [index_of(n) for n in ("kafka", "kafka-3", "consul-agent")] == [1, 3, 0]


def test_members_sort_by_service_then_index_agent_after_servers() -> None:
    names = ["registry-2", "consul-agent", "kafka-2", "postgres", "consul-1", "kafka-1"]
    assert sorted(names, key=lambda n: order_key(n, SERVICE_ORDER)) == [
        "kafka-1",
        "kafka-2",
        "consul-1",
        "consul-agent",
        "postgres",
        "registry-2",
    ]


def test_layout_is_read_back_from_member_names() -> None:
    names = [*members_of("kafka", 3), *members_of("consul", 3), "registry-1", "registry-2"]
    assert layout_of(names) == Layout(kafka=3, consul=3, registry=2)
    assert layout_of(["kafka", "consul"]) == Layout()


def test_layout_for_keeps_what_ran_and_checks_sizes() -> None:
    state = StackState(
        services={n: ServiceRecord(name=n, kind="x") for n in members_of("kafka", 3)}
    )
    assert layout_for(StackOptions(), state).kafka == 3
    assert layout_for(StackOptions(kafka_brokers=1), state).kafka == 1
    with pytest.raises(DevStackError, match="--consul-servers must be odd"):
        layout_for(StackOptions(consul_servers=2), StackState())
    with pytest.raises(DevStackError, match="--kafka-brokers must be between 1 and 5"):
        layout_for(StackOptions(kafka_brokers=0), StackState())


def test_wanted_services_lists_every_member_in_start_order() -> None:
    layout = Layout(kafka=3, consul=3, registry=2)
    assert wanted_services(StackOptions(pipeline=False), StackState(), layout) == [
        "kafka-1", "kafka-2", "kafka-3",
        "consul-1", "consul-2", "consul-3", "consul-agent",
        "registry-1", "registry-2",
    ]  # fmt: skip


def test_factory_refuses_a_member_the_layout_does_not_have() -> None:
    factory = ServiceFactory(StackOptions(), Layout(kafka=3))
    assert type(factory.build("kafka-3", None)).__name__ == "KafkaService"
    with pytest.raises(UnknownServiceError, match="kafka-4"):
        factory.build("kafka-4", None)
    with pytest.raises(UnknownServiceError, match="unknown member 'consul-2'"):
        factory.build("consul-2", None)


def test_three_broker_properties_share_the_voters_and_replicate() -> None:
    voters = {1: 9101, 2: 9102, 3: 9103}
    props = _props(server_properties(Path("/d"), 9001, 9102, node_id=2, voters=voters))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9102"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "2", key


def test_replication_follows_the_cluster_size() -> None:
    assert [replication_for(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 2), (3, 2), (3, 2)]


def test_kafka_cluster_chooses_distinct_ports_once_and_keeps_recorded_ones(
    tmp_path: Path,
) -> None:
    recorded = ServiceRecord(
        name="kafka-2", kind="apache-kafka", ports={"kafka": 0, "controller": 0}
    )
    ctx = StartContext(
        dev_dir=tmp_path,
        log_dir=tmp_path,
        env={},
        previous=None,
        used_ports=set(),
        log=LogFn(False),
        records={},
    )
    cluster = KafkaCluster(3)
    ports = cluster.ports(ctx)
    flat = [p for member in ports.values() for p in member.values()]
    assert len(set(flat)) == 6
    assert cluster.ports(ctx) is ports  # chosen once for every member of one `up`
    # A stopped member started alone gets its recorded (free) ports back.
    again = KafkaCluster(3)
    ctx.records = {
        "kafka-2": recorded.model_copy(update={"ports": ports[2]}),
        "kafka-1": recorded.model_copy(update={"name": "kafka-1", "ports": ports[1]}),
    }
    assert again.ports(ctx)[2] == ports[2] and again.ports(ctx)[1] == ports[1]


def test_cluster_id_is_shared_by_every_member(tmp_path: Path) -> None:
    cluster = KafkaCluster(3)
    first = cluster.cluster_id(tmp_path)
    assert cluster.cluster_id(tmp_path) == first
    formatted = tmp_path / "kafka-2" / "data"
    formatted.mkdir(parents=True)
    (formatted / "meta.properties").write_text("version=1\ncluster.id=AbCdEf\nnode.id=2\n")
    assert cluster.cluster_id(tmp_path) == "AbCdEf"
