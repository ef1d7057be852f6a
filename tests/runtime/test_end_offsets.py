"""``end_offsets``: a reader that starts at the end sees what comes after, and a leader
change while it asks is waited out rather than failing the reader (it failed a chaos run:
"Failed to get watermark offsets: Broker: Not leader for partition")."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from onex_scaffold._offsets import end_offsets

from .conftest import Broker


class _MovingLeaderConsumer:
    """Metadata for one topic of two partitions; the watermark query fails with ``errors``
    (one per call, in order) before it answers ``(0, 7)``."""

    def __init__(self, errors: list[int], topic: str = "t") -> None:
        self.errors = list(errors)
        self.queries = 0
        partitions = {0: object(), 1: object()}
        self.metadata = SimpleNamespace(
            topics={topic: SimpleNamespace(error=None, partitions=partitions)}
        )

    def list_topics(self, timeout: float) -> Any:
        return self.metadata

    def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
        self.queries += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0), "from the fake broker"))
        return 0, 7


def test_not_leader_answers_are_retried_until_the_new_leader_answers() -> None:
    consumer = _MovingLeaderConsumer(
        [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE]
    )
    ends = end_offsets(consumer, ["t"], timeout_s=5)
    assert [(p.topic, p.partition, p.offset) for p in ends] == [("t", 0, 7), ("t", 1, 7)]
    assert consumer.queries == 4  # two refused, then both partitions


def test_other_errors_are_raised_at_once() -> None:
    consumer = _MovingLeaderConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        end_offsets(consumer, ["t"], timeout_s=5)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consumer.queries == 1


def test_a_leader_that_never_comes_raises_once_time_is_up() -> None:
    consumer = _MovingLeaderConsumer([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException) as raised:
        end_offsets(consumer, ["t"], timeout_s=0.3)
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION
    assert 1 < consumer.queries < 1000


def test_a_topic_missing_from_the_metadata_is_named_when_time_is_up() -> None:
    consumer = _MovingLeaderConsumer([], topic="other")
    with pytest.raises(KafkaException, match="topic t: not in metadata"):
        end_offsets(consumer, ["t"], timeout_s=0.2)


def test_a_reader_at_the_end_sees_only_what_comes_after(broker: Broker) -> None:
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for number in range(3):
        # One batch per record: Tansu 0.6 reports a batch of several records as one in its
        # high watermark (docs/dev-stack.md), which is not what this test is about.
        producer.produce(topic, value=f"before-{number}".encode())
        assert producer.flush(15) == 0
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    try:
        ends = end_offsets(consumer, [topic], timeout_s=15)
        assert sum(p.offset for p in ends) == 3
        consumer.assign(ends)
        producer.produce(topic, value=b"after")
        assert producer.flush(15) == 0
        seen: list[bytes | None] = []
        for _ in range(50):
            seen += [m.value() for m in consumer.consume(10, 0.2) if m.error() is None]
            if seen:
                break
        assert seen == [b"after"]
    finally:
        consumer.close()
