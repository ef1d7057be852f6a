"""Topics a node creates take replication factor and min.insync.replicas from settings,
defaulting to what the cluster can hold."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
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


def test_partitions_to_grow_names_only_smaller_topics(topics_mod: Any) -> None:
    sizes = {"a": 1, "b": 4, "c": 6, "d": 3}
    assert topics_mod.partitions_to_grow(sizes, 4) == {"a": 1, "d": 3}
    assert topics_mod.partitions_to_grow(sizes, 0) == {}


def test_topic_and_broker_settings_are_read_in_one_place(
    rendered: dict[str, RenderedNode], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = rendered["effect"].module("runtime.config")
    assert issubclass(config.NodeSettings, config.TopicSettings)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION_FACTOR", "three")
    with pytest.raises(ValueError, match="KAFKA_TOPIC_REPLICATION_FACTOR='three': must be a whole"):
        config.NodeSettings()
    with pytest.raises(ValueError, match="KAFKA_TOPIC_REPLICATION_FACTOR='three': must be a whole"):
        config.topic_settings()
    settings = config.topic_settings({"KAFKA_TOPIC_REPLICATION_FACTOR": "2", "OTHER": "x"})
    assert (settings.kafka_topic_replication_factor, settings.kafka_topic_min_insync_replicas) == (
        2,
        0,
    )
    with pytest.raises(ValueError, match="KAFKA_TOPIC_MIN_INSYNC_REPLICAS='33'"):
        config.topic_settings({"KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "33"})


class _Future:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def result(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class _FakeAdmin:
    """The AdminClient calls ``ensure_topics`` makes, answered from a dict (pure logic)."""

    def __init__(self, sizes: dict[str, int], leaderless_polls: int = 0) -> None:
        self.sizes = sizes
        self.leaderless_polls = leaderless_polls
        self.created: list[Any] = []
        self.grown: list[Any] = []
        self.polls = 0

    def list_topics(self, timeout: float) -> Any:
        self.polls += 1
        leader = -1 if self.polls <= self.leaderless_polls + 1 and self.polls > 1 else 0
        partition = SimpleNamespace(replicas=[0], leader=leader, error=None)
        topics = {
            name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(count), partition))
            for name, count in self.sizes.items()
        }
        return SimpleNamespace(brokers={0: None}, topics=topics)

    def create_topics(self, new: list[Any], operation_timeout: float) -> dict[str, _Future]:
        self.created += new
        for topic in new:
            self.sizes[topic.topic] = max(topic.num_partitions, 1)
        return {topic.topic: _Future() for topic in new}

    def create_partitions(self, new: list[Any], operation_timeout: float) -> dict[str, _Future]:
        self.grown += new
        return {p.topic: _Future() for p in new}


def test_a_partition_count_creates_new_topics_with_it_and_grows_smaller_ones(
    topics_mod: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _FakeAdmin({"small": 1, "big": 8})
    monkeypatch.setattr(topics_mod, "AdminClient", lambda config: admin)
    report = topics_mod.ensure_topics({}, ["new", "small", "big"], partitions=4)
    assert [(t.topic, t.num_partitions) for t in admin.created] == [("new", 4)]
    assert [(p.topic, p.new_total_count) for p in admin.grown] == [("small", 4)]
    assert report.created == ["new"]
    assert report.grown == {"small": 1}
    assert report.existing == ["small", "big"]


def test_without_a_partition_count_the_brokers_default_is_used_and_nothing_grows(
    topics_mod: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _FakeAdmin({"small": 1})
    monkeypatch.setattr(topics_mod, "AdminClient", lambda config: admin)
    report = topics_mod.ensure_topics({}, ["new", "small"])
    assert [t.num_partitions for t in admin.created] == [-1]
    assert admin.grown == []
    assert report.grown == {}
    with pytest.raises(ValueError, match="partitions=-2"):
        topics_mod.ensure_topics({}, ["new"], partitions=-2)


def test_waiting_until_visible_polls_until_every_partition_has_a_leader(
    topics_mod: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _FakeAdmin({}, leaderless_polls=3)
    monkeypatch.setattr(topics_mod, "AdminClient", lambda config: admin)
    topics_mod.ensure_topics({}, ["a", "b"], wait_visible_s=5.0)
    assert admin.polls == 1 + 3 + 1  # the first look, three without a leader, then visible


def test_waiting_until_visible_waits_for_the_new_partitions_of_a_grown_topic(
    topics_mod: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _FakeAdmin({"small": 1})
    grown_after = 3  # metadata shows the new partitions only from the third request after growth

    def create_partitions(new: list[Any], operation_timeout: float) -> dict[str, _Future]:
        admin.grown += new
        shown_from = admin.polls + grown_after
        original = admin.list_topics

        def list_topics(timeout: float) -> Any:
            metadata = original(timeout)
            if admin.polls >= shown_from:
                admin.sizes["small"] = 4
            return metadata

        monkeypatch.setattr(admin, "list_topics", list_topics)
        return {p.topic: _Future() for p in new}

    monkeypatch.setattr(admin, "create_partitions", create_partitions)
    monkeypatch.setattr(topics_mod, "AdminClient", lambda config: admin)
    report = topics_mod.ensure_topics({}, ["small"], partitions=4, wait_visible_s=5.0)
    assert report.grown == {"small": 1}
    assert admin.sizes["small"] == 4
    assert admin.polls > 1 + grown_after  # without waiting for them: 2 (look, one poll)


def test_waiting_until_visible_gives_up_naming_the_topics(
    topics_mod: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = _FakeAdmin({}, leaderless_polls=10**9)
    monkeypatch.setattr(topics_mod, "AdminClient", lambda config: admin)
    with pytest.raises(topics_mod.TopicSetupError, match="topics a, b were created but"):
        topics_mod.ensure_topics({}, ["a", "b"], wait_visible_s=0.2)


def test_a_partition_count_grows_existing_topics_on_a_real_broker(
    topics_mod: Any, broker: Broker
) -> None:
    config: dict[str, str | int | float | bool] = {"bootstrap.servers": broker.bootstrap}
    run = uuid.uuid4().hex[:8]
    small, new = f"rt{run}.small", f"rt{run}.new"
    first = topics_mod.ensure_topics(config, [small], wait_visible_s=30.0)
    assert first.created == [small]
    admin = AdminClient(config)
    before = len(admin.list_topics(timeout=10).topics[small].partitions)
    if before >= 4:  # the broker's num.partitions is already 4 or more: nothing to grow
        pytest.skip(f"the broker creates topics with {before} partitions")
    report = topics_mod.ensure_topics(config, [small, new], partitions=4, wait_visible_s=30.0)
    assert report.created == [new]
    topics = _metadata_showing(admin, {new: 4, small: 1 if broker.kind == "tansu" else 4})
    assert len(topics[new].partitions) == 4
    if broker.kind == "tansu":  # Tansu has no CreatePartitions: reported, the topic stays usable
        assert report.grown == {}
        assert "CreatePartitions" in report.not_grown[small]
        return
    assert report.grown == {small: before}
    assert len(topics[small].partitions) == 4
    assert all(topics_mod.has_leaders(topics[name]) for name in (small, new))
    again = topics_mod.ensure_topics(config, [small, new], partitions=4)
    assert again.created == [] and again.grown == {}


def _metadata_showing(admin: AdminClient, partitions: dict[str, int]) -> dict[str, Any]:
    """Topic metadata once it shows ``partitions`` (name -> count); a cluster's brokers learn
    of new partitions one after another, and this client may ask another broker than the
    one ``ensure_topics`` last asked. After 10 s, the metadata as it is."""
    deadline = time.monotonic() + 10.0
    while True:
        topics: dict[str, Any] = admin.list_topics(timeout=10).topics
        shown = all(
            name in topics and len(topics[name].partitions) >= count
            for name, count in partitions.items()
        )
        if shown or time.monotonic() > deadline:
            return topics
        time.sleep(0.1)


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
