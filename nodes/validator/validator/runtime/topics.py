"""Creating Kafka topics with the replication the settings ask for: the one place that does.

Every node creates the topics it uses (``naming.node_topics``) and their dead-letter topics
when it connects, before it announces itself, instead of leaving them to the broker's
auto-creation (which would use the broker's defaults, often a replication factor of 1). The
registry (discovery topics) and the generation pipeline (its stage topics) create theirs
with the same function, so every topic of a deployment follows one rule:

* **Replication.** ``KAFKA_TOPIC_REPLICATION_FACTOR`` / ``KAFKA_TOPIC_MIN_INSYNC_REPLICAS``
  (parsed once, in ``config.TopicSettings``); unset (0), what the cluster can hold:
  ``min(3, brokers)`` replicas and ``min(2, replicas - 1)`` in-sync replicas (at least 1).
* **Partitions.** The broker's ``num.partitions`` unless the caller asks for a count; with
  a count, existing topics with fewer partitions are grown to it (never shrunk; a broker
  without CreatePartitions, such as Tansu, leaves them as they are, reported).
* **Existing topics** are otherwise left as they are (the report names those with fewer
  replicas than asked for). A topic created meanwhile by someone else counts as existing;
  one this client may not create (ACLs, policy) is reported, not raised: someone else
  creates it.
* **Visibility.** Optionally, return only once a metadata request shows every topic with a
  leader on each partition: Apache Kafka answers CreateTopics before every broker's
  metadata lists the topic, and a consumer started at that moment would not see it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions, NewTopic

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
    #: Topics this client was not allowed to create or grow (ACLs): someone else must.
    not_allowed: list[str] = field(default_factory=list)
    #: Existing topics grown to the partition count asked for: name -> their partitions before.
    grown: dict[str, int] = field(default_factory=dict)
    #: Existing topics the broker cannot grow (no CreatePartitions, e.g. Tansu): name -> why.
    #: They work as they are, with fewer partitions (less room for parallel consumers).
    not_grown: dict[str, str] = field(default_factory=dict)


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


def partitions_to_grow(current: Mapping[str, int], partitions: int) -> dict[str, int]:
    """Topics (name -> partitions now) with fewer than ``partitions`` (0: keep every count)."""
    return {name: count for name, count in current.items() if 0 < count < partitions}


def ensure_topics(
    kafka_config: Mapping[str, Any],
    topics: Iterable[str],
    *,
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 10.0,
    partitions: int = 0,
    wait_visible_s: float = 0.0,
) -> TopicReport:
    """Create the missing ``topics`` (``configs``: extra topic config by name).

    ``partitions``: 0 = the broker's ``num.partitions``; more: new topics get that many and
    existing ones with fewer are grown to it. ``wait_visible_s`` > 0: then poll metadata up
    to that long until every topic (but those not allowed) has a leader on each partition.
    Blocking: run it in a thread.
    """
    if partitions < 0:
        raise ValueError(f"partitions={partitions}: must be 0 (the broker's default) or more")
    admin = AdminClient(dict(kafka_config))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise TopicSetupError(f"cannot read the Kafka cluster's metadata: {error}") from error
    replication = replication_for(len(metadata.brokers), replication_factor, min_insync_replicas)
    report = TopicReport(len(metadata.brokers), replication)
    wanted = list(dict.fromkeys(topics))
    new: list[NewTopic] = []
    sizes: dict[str, int] = {}
    for name in wanted:
        found = metadata.topics.get(name)
        if found is not None and found.error is None:
            report.existing.append(name)
            sizes[name] = len(found.partitions)
            replicas = min((len(p.replicas) for p in found.partitions.values()), default=0)
            if 0 < replicas < replication.replication_factor:
                report.under_replicated[name] = replicas
            continue
        config = {"min.insync.replicas": str(replication.min_insync_replicas)}
        config.update((configs or {}).get(name, {}))
        new.append(
            NewTopic(
                name,
                num_partitions=partitions or -1,  # -1: the broker's num.partitions
                replication_factor=replication.replication_factor,
                config=config,
            )
        )
    if new:
        _create(admin, new, timeout_s, report)
    small = partitions_to_grow(sizes, partitions)
    if small:
        _grow(admin, small, partitions, timeout_s, report)
    if wait_visible_s > 0:
        skip = set(report.not_allowed)
        # A grown topic counts once its new partitions show too: a consumer that looked
        # earlier would not be assigned them until its next metadata refresh.
        floor = {name: partitions for name in [*report.created, *report.grown]}
        visible = [n for n in wanted if n not in skip]
        wait_until_visible(admin, visible, wait_visible_s, min_partitions=floor)
    return report


def _create(admin: AdminClient, new: list[NewTopic], timeout_s: float, report: TopicReport) -> None:
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            report.created.append(name)
        except KafkaException as error:
            code = _code(error)
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                report.existing.append(name)  # created meanwhile by another instance
            elif code in _NOT_ALLOWED:
                report.not_allowed.append(name)
            else:
                raise TopicSetupError(f"cannot create topic {name}: {error}") from error


def _grow(
    admin: AdminClient,
    small: Mapping[str, int],
    partitions: int,
    timeout_s: float,
    report: TopicReport,
) -> None:
    requests = [NewPartitions(name, partitions) for name in small]
    for name, future in admin.create_partitions(requests, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            report.grown[name] = small[name]
        except KafkaException as error:
            code = _code(error)
            if code == KafkaError.INVALID_PARTITIONS:
                continue  # grown meanwhile by another instance
            if code in _NOT_ALLOWED:
                report.not_allowed.append(name)
            elif code == KafkaError._UNSUPPORTED_FEATURE:
                report.not_grown[name] = str(error.args[0].str())
                log.warning("topic %s keeps %d partition(s): %s", name, small[name], error)
            else:
                raise TopicSetupError(
                    f"cannot grow topic {name} to {partitions} partitions: {error}"
                ) from error


def _code(error: KafkaException) -> Any:
    err = error.args[0] if error.args else None
    return err.code() if isinstance(err, KafkaError) else None


def wait_until_visible(
    admin: AdminClient,
    names: Iterable[str],
    timeout_s: float,
    min_partitions: Mapping[str, int] | None = None,
) -> None:
    """Poll metadata until ``names`` all exist with a leader on every partition (and at least
    ``min_partitions[name]`` partitions, where given)."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    floor = min_partitions or {}
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as error:
            raise TopicSetupError(f"cannot list Kafka topics: {error}") from error
        pending = [
            name
            for name in pending
            if not has_leaders(metadata.topics.get(name))
            or len(metadata.topics[name].partitions) < floor.get(name, 0)
        ]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicSetupError(
                f"topics {', '.join(pending)} were created but the broker's metadata does not "
                f"show them with a leader after {timeout_s:.0f}s; check the broker's log"
            )
        time.sleep(0.05)


def has_leaders(topic: Any) -> bool:
    """Whether a topic's metadata shows it with a leader on every partition."""
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
