"""Pipeline topics take their replication from the settings nodes use too, by the nodes' rule
(0 = what the cluster can hold, runtime/topics.py), parsed by the runtime's config module."""

from __future__ import annotations

import pytest

from onex_scaffold._template import load_runtime_module
from onex_scaffold.pipeline.bus import topic_replication


def test_unset_means_derived_from_the_cluster() -> None:
    assert topic_replication({}) == (0, 0)
    assert topic_replication({"KAFKA_TOPIC_REPLICATION_FACTOR": "0"}) == (0, 0)
    assert topic_replication({"KAFKA_TOPIC_REPLICATION_FACTOR": ""}) == (0, 0)


def test_a_cluster_asks_for_three_copies_two_in_sync() -> None:
    env = {"KAFKA_TOPIC_REPLICATION_FACTOR": "3", "KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "2"}
    assert topic_replication(env) == (3, 2)


def test_given_values_are_read_without_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "2")
    assert topic_replication({"KAFKA_TOPIC_REPLICATION_FACTOR": "3"}) == (3, 0)


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="KAFKA_TOPIC_MIN_INSYNC_REPLICAS='two'"):
        topic_replication({"KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "two"})


def test_min_insync_above_the_replication_factor_is_refused_as_for_nodes() -> None:
    env = {"KAFKA_TOPIC_REPLICATION_FACTOR": "2", "KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "3"}
    with pytest.raises(ValueError, match=r"KAFKA_TOPIC_MIN_INSYNC_REPLICAS \(3\) must not exceed"):
        topic_replication(env)


def test_the_process_environment_is_read_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION_FACTOR", "1")
    monkeypatch.delenv("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", raising=False)
    assert topic_replication() == (1, 0)


def test_derived_replication_is_the_nodes_rule() -> None:
    topics = load_runtime_module("topics")
    factor, insync = topic_replication({})
    assert topics.replication_for(1, factor, insync) == topics.Replication(1, 1)
    assert topics.replication_for(5, factor, insync) == topics.Replication(3, 2)
