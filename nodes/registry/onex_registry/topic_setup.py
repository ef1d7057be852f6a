"""Creating and checking the discovery topics when the registry starts.

The registry makes the topics it reads (and their dead-letter topics) before any
node can rely on them, and makes sure the introspection topic is compacted: it is
the durable snapshot every start rebuilds the view from. Creating them is the
runtime's ``topics.ensure_topics`` (one rule for every topic of a deployment); what is
the registry's own is the compaction check and waiting until the topics are visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource

from .runtime import naming
from .runtime import topics as runtime_topics

#: The compacted topic keeps the latest announcement per node; tombstones are kept a day so a
#: registry that was down a while still sees who left (the runtime's ``naming`` defines it).
COMPACTED_TOPIC_CONFIG: Final = naming.COMPACTED_TOPIC_CONFIG


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
    topics = naming.discovery_topics(environment)
    names = [*topics.values(), *extra_topics]
    wanted = [*names, *(naming.dead_letter_topic(t) for t in names)]
    compacted = topics["introspection"]
    try:
        # KAFKA_TOPIC_REPLICATION_FACTOR / KAFKA_TOPIC_MIN_INSYNC_REPLICAS, as for every
        # node's own topics (0 = what the cluster can hold). CreateTopics is answered once
        # the controller has the topic; the broker serving metadata learns of it a moment
        # later (measured on Apache Kafka 4.1 in KRaft mode: 2 of 20 metadata requests right
        # after the reply did not list the new topics). So return only when a metadata
        # request shows every topic with a leader, so the consumers that start next see
        # them (also on a retry after a timeout here).
        report = runtime_topics.ensure_topics(
            kafka_config,
            wanted,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
            configs={compacted: COMPACTED_TOPIC_CONFIG},
            timeout_s=timeout_s,
            wait_visible_s=3 * timeout_s,
        )
    except runtime_topics.TopicSetupError as error:
        raise TopicSetupError(str(error)) from error
    if report.not_allowed:
        # The registry reads these topics: without them there is no discovery to serve.
        raise TopicSetupError(
            f"not allowed to create {', '.join(report.not_allowed)}: grant this client "
            "CreateTopics on them, or create them before the registry starts"
        )
    changes = [f"created {name}" for name in report.created]
    if compacted in report.existing:
        # Someone created it first (a node publishing with broker auto-creation): make sure it
        # really is compacted, or the durable snapshot would expire.
        admin = AdminClient(dict(kafka_config))
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
