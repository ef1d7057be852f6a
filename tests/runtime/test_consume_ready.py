"""runtime/consumer.py ``consume_ready``: a lone record comes back without waiting out the
poll timeout, a backlog still comes in batches, and no batch is over the limit."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from .conftest import Broker, RenderedNode

#: Long enough that waiting it out cannot pass for an answer (the old behaviour waited it all).
POLL_TIMEOUT_S = 60.0


def _topic_with(broker: Broker, records: int) -> str:
    topic = f"rt-ready-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index in range(records):
        producer.produce(topic, str(index).encode())
    assert producer.flush(30) == 0
    return topic


def _assigned(broker: Broker, topic: str) -> Consumer:
    # Assigned, not subscribed: no group join to wait for, only the fetch.
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    return consumer


def test_a_lone_record_comes_back_before_the_poll_timeout(
    rendered: dict[str, RenderedNode], broker: Broker
) -> None:
    consume_ready: Any = rendered["effect"].module("runtime.consumer").consume_ready
    consumer = _assigned(broker, _topic_with(broker, 1))
    try:
        started = time.monotonic()
        batch = consume_ready(consumer, 100, POLL_TIMEOUT_S)
        waited = time.monotonic() - started
    finally:
        consumer.close()
    assert [m.value() for m in batch] == [b"0"]
    assert waited < POLL_TIMEOUT_S / 2, f"waited {waited:.1f} s for a record already there"


def test_a_backlog_comes_in_batches_of_at_most_the_limit(
    rendered: dict[str, RenderedNode], broker: Broker
) -> None:
    consume_ready: Any = rendered["effect"].module("runtime.consumer").consume_ready
    consumer = _assigned(broker, _topic_with(broker, 25))
    sizes: list[int] = []
    values: list[bytes] = []
    try:
        while len(values) < 25:
            batch = consume_ready(consumer, 10, POLL_TIMEOUT_S)
            assert batch, "a record on the topic was not returned within the poll timeout"
            sizes.append(len(batch))
            values += [m.value() for m in batch if m.error() is None]
    finally:
        consumer.close()
    assert values == [str(i).encode() for i in range(25)]
    assert max(sizes) <= 10
    assert max(sizes) > 1, f"fetched records were taken one call each: {sizes}"
