"""Creating and checking the discovery topics when the registry starts.

The registry makes the topics it reads (and their dead-letter topics) before any
node can rely on them, and makes sure the introspection topic is compacted: it is
the durable snapshot every start rebuilds the view from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewTopic

from .runtime import naming
from .runtime import topics as runtime_topics

#: The compacted topic keeps the latest announcement per node; tombstones are kept a day so a
#: registry that was down a while still sees who left.
COMPACTED_TOPIC_CONFIG: Final = {
    "cleanup.policy": "compact",
    "delete.retention.ms": str(24 * 3600 * 1000),
    "min.compaction.lag.ms": "0",
    "segment.ms": str(3600 * 1000),
}


class TopicSetupError(RuntimeError):
    """The discovery topics could not be created or checked."""


def ensure_discovery_topics(
    kafka_config: Mapping[str, Any],
    environment: str,
    timeout_s: float = 2.0,
    extra_topics: Sequence[str] = (),
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
) -> list[str]:
    """Create the discovery topics that are missing; make the introspection topic compacted.

    The registry does this at start, before any node can rely on it. Returns what it changed.
    Blocking: run it in a thread. The timeout is short because a blocked librdkafka call
    cannot be cancelled, and a stopping registry waits for it; the caller retries.
    """
    admin = AdminClient(dict(kafka_config))
    topics = naming.discovery_topics(environment)
    names = [*topics.values(), *extra_topics]
    wanted = [*names, *(naming.dead_letter_topic(t) for t in names)]
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise TopicSetupError(f"cannot list Kafka topics: {error}") from error
    existing = set(metadata.topics)
    # KAFKA_TOPIC_REPLICATION_FACTOR / KAFKA_TOPIC_MIN_INSYNC_REPLICAS, as for every node's
    # own topics (0 = what the cluster can hold).
    try:
        replication = runtime_topics.replication_for(
            len(metadata.brokers), replication_factor, min_insync_replicas
        )
    except runtime_topics.TopicSetupError as error:
        raise TopicSetupError(str(error)) from error
    compacted = topics["introspection"]
    changes: list[str] = []
    new = [
        NewTopic(
            name,
            num_partitions=-1,  # the broker's num.partitions
            replication_factor=replication.replication_factor,
            config={
                "min.insync.replicas": str(replication.min_insync_replicas),
                **(COMPACTED_TOPIC_CONFIG if name == compacted else {}),
            },
        )
        for name in wanted
        if name not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout_s)
                changes.append(f"created {name}")
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicSetupError(f"cannot create topic {name}: {error}") from error
    # CreateTopics is answered once the controller has the topic; the broker serving
    # metadata learns of it a moment later (measured on Apache Kafka 4.1 in KRaft mode:
    # 2 of 20 metadata requests right after the reply did not list the new topics).
    # Return only when a metadata request shows every topic with a leader, so the
    # consumers that start next see them (also on a retry after a timeout here).
    _wait_until_visible(admin, wanted, 3 * timeout_s)
    if compacted in existing:
        # Someone created it first (a node publishing with broker auto-creation): make sure it
        # really is compacted, or the durable snapshot would expire.
        changes += _ensure_compacted(admin, compacted, timeout_s)
    return changes


def _ensure_compacted(admin: AdminClient, topic: str, timeout_s: float) -> list[str]:
    """Set ``cleanup.policy=compact`` on ``topic`` unless it is; returns what it changed."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout_s)
    except KafkaException as error:
        raise TopicSetupError(f"cannot read the config of {topic}: {error}") from error
    policy = configs.get("cleanup.policy")
    if policy is not None and "compact" in str(policy.value):
        return []
    entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
    alter = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    try:
        admin.incremental_alter_configs([alter])[alter].result(timeout_s)
    except KafkaException as error:
        raise TopicSetupError(
            f"{topic} exists with cleanup.policy="
            f"{policy.value if policy else '?'}; set it to compact: {error}"
        ) from error
    return [f"set cleanup.policy=compact on {topic}"]


def _wait_until_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Poll metadata until ``names`` all exist with a leader on every partition."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as error:
            raise TopicSetupError(f"cannot list Kafka topics: {error}") from error
        pending = [name for name in pending if not _has_leaders(metadata.topics.get(name))]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicSetupError(
                f"topics {', '.join(pending)} were created but the broker's metadata does not "
                f"show them with a leader after {timeout_s:.0f}s; check the broker's log"
            )
        time.sleep(0.05)


def _has_leaders(topic: Any) -> bool:
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
