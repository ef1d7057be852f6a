"""Pipeline topics take their replication from the settings nodes use too."""

from __future__ import annotations

import pytest

from onex_scaffold.pipeline.bus import topic_replication


def test_unset_means_the_brokers_defaults() -> None:
    assert topic_replication({}) == (-1, {})
    assert topic_replication({"KAFKA_TOPIC_REPLICATION_FACTOR": "0"}) == (-1, {})


def test_a_cluster_asks_for_three_copies_two_in_sync() -> None:
    env = {"KAFKA_TOPIC_REPLICATION_FACTOR": "3", "KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "2"}
    assert topic_replication(env) == (3, {"min.insync.replicas": "2"})


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="KAFKA_TOPIC_MIN_INSYNC_REPLICAS='two'"):
        topic_replication({"KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "two"})
