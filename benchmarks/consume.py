"""Consuming: our node's consumer loop against a plain confluent-kafka loop and FastStream.

One topic (3 partitions) is filled once with ``count`` records: our envelope (512-byte payload)
with our CloudEvents headers, as a node receives them. Each round, each contender reads all of
them in a consumer group of its own from the earliest offset, with a handler that does nothing
but count, and at-least-once commits (offsets committed only after the handler returned):

- ``ours``: the generated node's ``EventConsumer`` (``CONSUMER_BATCH_SIZE`` records per
  ``consume`` on its Kafka thread, the envelope validated, the handler awaited, one
  synchronous commit per batch): what every node runs.
- ``plain``: a synchronous ``consume(batch)`` / handler / synchronous ``commit`` loop on the
  same ``Consumer`` settings, no envelope parsing: the floor.
- ``faststream``: a FastStream confluent subscriber whose handler takes the envelope model
  (``AckPolicy.ACK``: commit after the handler), as a user of FastStream would write it.

The clock runs from the first record a contender sees to the last one handled, so group join
and the first fetch are left out for all three.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from benchmarks import loops
from benchmarks.peers import Headers, confluent_settings

BATCH_SIZE: Final = 100  # the node's CONSUMER_BATCH_SIZE default
ROUND_TIMEOUT_S: Final = 90.0


class ConsumeBenchError(RuntimeError):
    """A contender did not read every record in time."""


@dataclass
class ConsumeResult:
    msgs_per_s: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, rate: float) -> None:
        self.msgs_per_s.setdefault(name, []).append(rate)


def consumer_settings(kafka: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }


def fill_topic(kafka: str, topic: str, value: bytes, headers: Headers, count: int) -> None:
    producer = Producer(confluent_settings(kafka, "bench-consume-fill"))
    for index in range(count):
        while True:
            try:
                producer.produce(topic, value, str(index), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise ConsumeBenchError(f"could not fill {topic} with {count} records within 60 s")


class _Clock:
    """First-record-to-last-record timing shared by the contenders."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.started = 0.0
        self.finished = 0.0

    def tick(self) -> bool:
        """Count one handled record; True once all were."""
        if self.seen == 0:
            self.started = time.perf_counter()
        self.seen += 1
        if self.seen >= self.count:
            self.finished = time.perf_counter()
            return True
        return False

    def rate(self, who: str) -> float:
        if self.seen < self.count:
            raise ConsumeBenchError(
                f"{who} read {self.seen} of {self.count} records in {ROUND_TIMEOUT_S:.0f}s"
            )
        return self.count / (self.finished - self.started)


def plain_round(kafka: str, topic: str, count: int) -> float:
    consumer = Consumer(consumer_settings(kafka, f"bench-plain-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    clock = _Clock(count)
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    try:
        while clock.seen < count and time.monotonic() < deadline:
            done: dict[tuple[str, int], int] = {}
            for message in consumer.consume(BATCH_SIZE, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise ConsumeBenchError(f"plain consumer: {error}")
                    continue
                clock.tick()  # the handler: nothing
                topic_name, partition, offset = (
                    message.topic(),
                    message.partition(),
                    message.offset(),
                )
                assert topic_name is not None and partition is not None and offset is not None
                done[(topic_name, partition)] = offset + 1
            if done:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()],
                    asynchronous=False,
                )
    finally:
        consumer.close()
    return clock.rate("plain consumer loop")


async def ours_round(
    consumer_module: ModuleType, publisher_module: ModuleType, kafka: str, topic: str, count: int
) -> float:
    clock = _Clock(count)
    finished = asyncio.Event()

    async def handler(_message: Any) -> None:
        if clock.tick():
            finished.set()

    publisher = publisher_module.EventPublisher(kafka, "bench-consumer", "bench")
    consumer = consumer_module.EventConsumer(
        name="bench",
        topics=[topic],
        group_id=f"bench-ours-{uuid.uuid4().hex[:8]}",
        handler=handler,
        publisher=publisher,
        kafka_config={"bootstrap.servers": kafka},
        batch_size=BATCH_SIZE,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await asyncio.wait_for(finished.wait(), ROUND_TIMEOUT_S)
    except TimeoutError:
        pass  # rate() says how far it got
    finally:
        await consumer.stop()
        await publisher.close()
    if consumer.failed is not None:
        raise ConsumeBenchError(f"our consumer stopped: {consumer.failed}")
    return clock.rate("our EventConsumer")


async def faststream_round(events_module: ModuleType, kafka: str, topic: str, count: int) -> float:
    from faststream import AckPolicy
    from faststream.confluent import KafkaBroker

    envelope_model = events_module.ModelEventEnvelope
    clock = _Clock(count)
    finished = asyncio.Event()
    broker = KafkaBroker(kafka, client_id="bench-faststream-consumer", logger=None)

    async def handle(body: Any) -> None:
        if clock.tick():
            finished.set()

    # FastStream validates the body against the annotation: our envelope model.
    handle.__annotations__["body"] = envelope_model

    broker.subscriber(
        topic,
        group_id=f"bench-faststream-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )(handle)
    await broker.start()
    try:
        await asyncio.wait_for(finished.wait(), ROUND_TIMEOUT_S)
    except TimeoutError:
        pass
    finally:
        await broker.stop()
    return clock.rate("FastStream subscriber")


def run(
    kafka: str,
    topic: str,
    modules: tuple[ModuleType, ModuleType, ModuleType],
    value: bytes,
    headers: Headers,
    count: int,
    rounds: int,
    loop_factory: loops.LoopFactory | None,
) -> ConsumeResult:
    """Fill ``topic`` (already created) and read it ``rounds`` times with each contender."""
    consumer_module, publisher_module, events_module = modules
    fill_topic(kafka, topic, value, headers, count)
    result = ConsumeResult()
    for _ in range(rounds):
        result.add("plain", plain_round(kafka, topic, count))
        result.add(
            "ours",
            loops.run(
                ours_round(consumer_module, publisher_module, kafka, topic, count), loop_factory
            ),
        )
        result.add(
            "faststream",
            loops.run(faststream_round(events_module, kafka, topic, count), loop_factory),
        )
    return result
