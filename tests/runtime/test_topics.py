"""Topics a node creates take replication factor and min.insync.replicas from settings,
defaulting to what the cluster can hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from .conftest import Broker, RenderedNode, running, set_node_env


@pytest.fixture
def topics_mod(rendered: dict[str, RenderedNode]) -> Any:
    return rendered["effect"].module("runtime.topics")


@pytest.mark.parametrize(
    ("brokers", "factor", "insync", "expected"),
    [
        (1, 0, 0, (1, 1)),
        (2, 0, 0, (2, 1)),
        (3, 0, 0, (3, 2)),
        (6, 0, 0, (3, 2)),
        (6, 5, 0, (5, 2)),
        (3, 3, 3, (3, 3)),
        (3, 2, 0, (2, 1)),
    ],
)
def test_replication_defaults_to_what_the_cluster_holds(
    topics_mod: Any, brokers: int, factor: int, insync: int, expected: tuple[int, int]
) -> None:
    replication = topics_mod.replication_for(brokers, factor, insync)
    assert (replication.replication_factor, replication.min_insync_replicas) == expected


def test_replication_the_cluster_cannot_hold_is_refused_naming_the_setting(
    topics_mod: Any,
) -> None:
    with pytest.raises(
        topics_mod.TopicSetupError, match=r"KAFKA_TOPIC_REPLICATION_FACTOR=3 .* 1 broker"
    ):
        topics_mod.replication_for(1, 3, 0)
    with pytest.raises(topics_mod.TopicSetupError, match="KAFKA_TOPIC_MIN_INSYNC_REPLICAS=2"):
        topics_mod.replication_for(1, 0, 2)


def test_min_insync_above_the_replication_factor_is_an_invalid_setting(
    rendered: dict[str, RenderedNode], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = rendered["effect"].module("runtime.config")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "3")
    with pytest.raises(ValueError, match=r"KAFKA_TOPIC_MIN_INSYNC_REPLICAS \(3\) must not exceed"):
        config.NodeSettings()


def _configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(10)
    return {name: str(entry.value) for name, entry in entries.items()}


def _replicas(bootstrap: str, topic: str) -> set[int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {len(p.replicas) for p in metadata.topics[topic].partitions.values()}


@pytest.mark.parametrize("explicit", [False, True], ids=["derived", "from-settings"])
async def test_a_node_creates_its_topics_with_the_replication_settings(
    rendered: dict[str, RenderedNode],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    broker: Broker,
    explicit: bool,
) -> None:
    extra = (
        {"KAFKA_TOPIC_REPLICATION_FACTOR": "1", "KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "1"}
        if explicit
        else {}
    )
    env = set_node_env(monkeypatch, tmp_path, broker, **extra)
    project = rendered["effect"]
    naming = project.module("runtime.naming")
    node = project.node_class()()
    async with running(node):
        assert node.topic_replication is not None
        brokers = len(
            AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).brokers
        )
        expected_factor = 1 if explicit else min(3, brokers)
        assert node.topic_replication.replication_factor == expected_factor
        existing = set(
            AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
        )
        wanted = node.topics_to_create()
        assert set(wanted) <= existing
        env_name = env["KAFKA_ENVIRONMENT"]
        command = naming.command_topic(env_name, "rt-writer")
        assert naming.dead_letter_topic(command) in wanted
        assert _replicas(broker.bootstrap, command) == {expected_factor}
        configs = _configs(broker.bootstrap, command)
        assert configs["min.insync.replicas"] == str(node.topic_replication.min_insync_replicas)
        introspection = _configs(broker.bootstrap, naming.introspection_topic(env_name))
        assert introspection["cleanup.policy"] == "compact"


async def test_replication_the_cluster_cannot_hold_keeps_the_node_unready_with_the_reason(
    rendered: dict[str, RenderedNode],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tansu: Broker,
) -> None:
    set_node_env(
        monkeypatch, tmp_path, tansu, KAFKA_TOPIC_REPLICATION_FACTOR="3", KAFKA_CONNECT_WAIT_S="3"
    )
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    node = project.node_class()()
    try:
        await node.initialize()  # returns after KAFKA_CONNECT_WAIT_S: the node never announced
        status, body = await testing.http_request(node.health_endpoint)
        assert status == 503
        reasons = json.loads(body)["reasons"]
        assert any("KAFKA_TOPIC_REPLICATION_FACTOR=3" in r and "1 broker" in r for r in reasons), (
            reasons
        )
        assert not node.connected.is_set()
    finally:
        await node.shutdown()
