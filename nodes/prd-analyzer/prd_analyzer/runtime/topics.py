"""Creating a node's topics with the replication the settings ask for.

Every topic a node uses (``naming.node_topics``) and their dead-letter topics are
created when the node connects, before it announces itself, instead of being left to
the broker's auto-creation (which would use the broker's defaults, often a replication
factor of 1). Replication factor and ``min.insync.replicas`` come from
``KAFKA_TOPIC_REPLICATION_FACTOR`` / ``KAFKA_TOPIC_MIN_INSYNC_REPLICAS``; unset (0),
what the cluster can hold: ``min(3, brokers)`` replicas and ``min(2, replicas - 1)``
in-sync replicas (at least 1). Topics that exist are left as they are (a warning names
those with fewer replicas than asked for). The partition count is the broker's
``num.partitions``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger(__name__)

#: librdkafka errors that mean "this client may not create topics": someone else does.
_NOT_ALLOWED = (
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.POLICY_VIOLATION,
)


class TopicSetupError(RuntimeError):
    """The topics could not be created as the settings ask (the message says why and what
    to change)."""


@dataclass(frozen=True)
class Replication:
    replication_factor: int
    min_insync_replicas: int


@dataclass
class TopicReport:
    """What ``ensure_topics`` found and did."""

    brokers: int
    replication: Replication
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    #: Existing topics with fewer replicas than asked for: name -> their replicas.
    under_replicated: dict[str, int] = field(default_factory=dict)
    #: Topics this client was not allowed to create (ACLs): they must exist already.
    not_allowed: list[str] = field(default_factory=list)


def replication_for(brokers: int, replication_factor: int, min_insync_replicas: int) -> Replication:
    """The replication to create topics with on a cluster of ``brokers`` (0 = derive)."""
    if brokers < 1:
        raise TopicSetupError("the Kafka cluster reported no brokers; cannot create topics")
    factor = replication_factor or min(3, brokers)
    if factor > brokers:
        raise TopicSetupError(
            f"KAFKA_TOPIC_REPLICATION_FACTOR={factor} but the cluster has {brokers} broker(s); "
            f"set it to at most {brokers}, or 0 to derive it from the cluster"
        )
    insync = min_insync_replicas or max(1, min(2, factor - 1))
    if insync > factor:
        raise TopicSetupError(
            f"KAFKA_TOPIC_MIN_INSYNC_REPLICAS={insync} exceeds the replication factor {factor}: "
            "no write could ever succeed; set it to at most the replication factor"
        )
    return Replication(factor, insync)


def ensure_topics(
    kafka_config: Mapping[str, Any],
    topics: Iterable[str],
    *,
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 10.0,
) -> TopicReport:
    """Create the missing ``topics`` (``configs``: extra topic config by name). Blocking:
    run it in a thread."""
    admin = AdminClient(dict(kafka_config))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise TopicSetupError(f"cannot read the Kafka cluster's metadata: {error}") from error
    replication = replication_for(len(metadata.brokers), replication_factor, min_insync_replicas)
    report = TopicReport(len(metadata.brokers), replication)
    wanted = list(dict.fromkeys(topics))
    new: list[NewTopic] = []
    for name in wanted:
        found = metadata.topics.get(name)
        if found is not None and found.error is None:
            report.existing.append(name)
            replicas = min((len(p.replicas) for p in found.partitions.values()), default=0)
            if 0 < replicas < replication.replication_factor:
                report.under_replicated[name] = replicas
            continue
        config = {"min.insync.replicas": str(replication.min_insync_replicas)}
        config.update((configs or {}).get(name, {}))
        new.append(
            NewTopic(
                name,
                num_partitions=-1,  # the broker's num.partitions
                replication_factor=replication.replication_factor,
                config=config,
            )
        )
    if not new:
        return report
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            report.created.append(name)
        except KafkaException as error:
            err = error.args[0] if error.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                report.existing.append(name)  # created meanwhile by another instance
            elif code in _NOT_ALLOWED:
                report.not_allowed.append(name)
            else:
                raise TopicSetupError(f"cannot create topic {name}: {error}") from error
    return report
