"""Where a reader that wants only new records starts: each partition's end, resolved now.

Assigning ``OFFSET_END`` would resolve the end at the first fetch, after records the caller
is about to cause may already be there; so the end is read before the caller acts. On a
cluster, the partition leader answers that read, and leadership moves while a broker
restarts or the controller rebalances: the broker then answers "not leader" until the
client's metadata catches up. Those answers are retried until ``timeout_s``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["end_offsets"]

#: Answers that mean "ask again in a moment" while leadership moves or a topic is being
#: created; librdkafka does not flag them retriable on a watermark query.
_LEADER_MOVING: Final = frozenset(
    {
        "NOT_LEADER_FOR_PARTITION",
        "LEADER_NOT_AVAILABLE",
        "UNKNOWN_TOPIC_OR_PART",
        "REQUEST_TIMED_OUT",
        "FENCED_LEADER_EPOCH",
        "UNKNOWN_LEADER_EPOCH",
        "OFFSET_NOT_AVAILABLE",
        "_TIMED_OUT",
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "_UNKNOWN_PARTITION",
        "_UNKNOWN_TOPIC",
    }
)


class _NotYet(Exception):
    """A topic in the metadata is missing or reports an error (it is still being made)."""


def _leader_moving(error: Any) -> bool:
    """Whether a ``KafkaError`` is one of the answers a leader change gives."""
    from confluent_kafka import KafkaError

    if bool(error.retriable()):
        return True
    return any(error.code() == getattr(KafkaError, name, None) for name in _LEADER_MOVING)


def end_offsets(consumer: Any, topics: Iterable[str], timeout_s: float = 30.0) -> list[Any]:
    """``TopicPartition``s at the current end of every partition of ``topics``.

    ``consumer`` is a confluent-kafka ``Consumer``. Answers a moving leader gives are
    retried (growing pauses, up to ``timeout_s``); any other error, or the last one when
    time is up, raises ``KafkaException``.
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    wanted = list(topics)
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        budget = max(0.5, min(10.0, deadline - time.monotonic()))
        try:
            metadata = consumer.list_topics(timeout=budget)
            found = []
            for topic in wanted:
                meta = metadata.topics.get(topic)
                if meta is None or meta.error is not None or not meta.partitions:
                    raise _NotYet(f"topic {topic}: {meta.error if meta else 'not in metadata'}")
                for number in sorted(meta.partitions):
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, number), timeout=budget
                    )
                    found.append(TopicPartition(topic, number, high))
            return found
        except _NotYet as missing:
            if time.monotonic() >= deadline:
                raise KafkaException(
                    KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, str(missing))
                ) from None
        except KafkaException as error:
            if not _leader_moving(error.args[0]) or time.monotonic() >= deadline:
                raise
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 1.0)
