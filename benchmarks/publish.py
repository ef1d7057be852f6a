"""EventPublisher against a raw confluent-kafka Producer: same settings, bytes and broker.

The EventPublisher is the one in a generated node (``<package>/runtime/publisher.py``), used
two ways: as a node uses it, ``await publish(...)`` for every event (``batch`` of them at once
with ``asyncio.gather``, each awaiting its own acknowledgement), and as a bulk producer uses
it, ``await publish_many(...)`` of ``batch`` events awaiting all their acknowledgements once.
Both build a fresh envelope (ids, timestamp, JSON, CloudEvents headers) per event. The raw
producer sends records of the same size (the envelope and CloudEvents headers the publisher
would send, serialised once) with the usual produce / poll(0) / flush loop. All three wait
for every delivery report.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from onex_scaffold import naming

#: Shared by both producers; the publisher adds acks=all and idempotence itself, and the raw
#: producer is given the same. linger and compression are the generated node's defaults.
PRODUCER_SETTINGS: Final[dict[str, Any]] = {"linger.ms": 5, "compression.type": "none"}
DELIVERY_TIMEOUT_MS: Final = 30_000
EVENT_TYPE: Final = "omninode.bench.event.row_written.v1"

Headers = list[tuple[str, str | bytes | None]]


class PublishBenchError(RuntimeError):
    """Records were not all delivered; a throughput figure would be meaningless."""


@dataclass(frozen=True)
class PublishResult:
    #: ``await publish`` per event: what ``publish_ratio`` reports.
    publisher_msgs_per_s: list[float]
    raw_msgs_per_s: list[float]
    #: Process CPU per record (librdkafka's threads included), which machine load distorts
    #: far less than throughput does.
    publisher_cpu_us: list[float]
    raw_cpu_us: list[float]
    record_bytes: int
    #: ``await publish_many`` of ``batch`` events at a time.
    many_msgs_per_s: list[float]
    many_cpu_us: list[float]


def load_runtime(node_folder: Path, package: str) -> tuple[ModuleType, ModuleType]:
    """(publisher, events) modules of the generated node in ``node_folder``."""
    if str(node_folder) not in sys.path:
        sys.path.insert(0, str(node_folder))
    publisher = importlib.import_module(f"{package}.runtime.publisher")
    events = importlib.import_module(f"{package}.runtime.events")
    return publisher, events


def create_topic(kafka: str, topic: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": kafka})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    for name, future in futures.items():
        try:
            future.result(15)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise PublishBenchError(f"cannot create topic {name}: {error}") from error
    # Wait until the topic's leaders are known, so neither side pays for metadata discovery.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic, timeout=5).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            return
        time.sleep(0.1)
    raise PublishBenchError(f"topic {topic} has no leaders 15 s after creation; check the broker")


def delete_topic(kafka: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.delete_topics([topic]).values():
        # Best effort: a leftover topic in a dev broker does no harm.
        with contextlib.suppress(KafkaException):
            future.result(15)


def bench_topic(environment: str, run_id: str) -> str:
    return str(naming().topic(environment, "evt", f"bench-publish-{run_id}"))


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def payload(size: int) -> dict[str, Any]:
    return {"table": "rows", "row_id": 1, "data": "x" * size}


def raw_round(kafka: str, topic: str, value: bytes, headers: Headers, keys: list[str]) -> float:
    """Messages/s of a raw Producer sending ``len(keys)`` records and flushing them all."""
    producer = Producer(
        {
            "bootstrap.servers": kafka,
            "client.id": "bench-raw",
            **PRODUCER_SETTINGS,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        }
    )
    failures: list[KafkaError] = []
    delivered = 0

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(err)
        else:
            delivered += 1

    # Connection, metadata and the idempotent producer id are set up before the clock starts,
    # as the publisher's are (its warm-up publish).
    producer.produce(topic, value=value, key=keys[0], headers=headers, on_delivery=on_delivery)
    producer.flush(30)
    delivered = 0
    started = time.perf_counter()
    for key in keys:
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                producer.poll(0.01)  # local queue full: serve delivery reports
        producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - started
    if remaining or failures or delivered != len(keys):
        raise PublishBenchError(
            f"raw producer: {delivered}/{len(keys)} delivered, {remaining} undelivered, "
            f"errors: {failures[:3]}"
        )
    return len(keys) / elapsed


async def publisher_round(
    publisher_module: ModuleType,
    kafka: str,
    topic: str,
    body: dict[str, Any],
    keys: list[str],
    batch: int,
    many: bool = False,
) -> float:
    """Messages/s of EventPublisher publishing ``len(keys)`` events, ``batch`` at a time:
    awaited one by one (``asyncio.gather``), or with ``publish_many`` when ``many``."""
    publisher = publisher_module.EventPublisher(
        kafka,
        "bench-publisher",
        "bench",
        delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
        producer_config=dict(PRODUCER_SETTINGS),
    )
    try:
        await publisher.publish(EVENT_TYPE, body, topic=topic, key=keys[0])  # warm-up
        started = time.perf_counter()
        for first in range(0, len(keys), batch):
            chunk = keys[first : first + batch]
            if many:
                await publisher.publish_many(
                    EVENT_TYPE, [body] * len(chunk), topic=topic, keys=chunk
                )
            else:
                await asyncio.gather(
                    *(publisher.publish(EVENT_TYPE, body, topic=topic, key=key) for key in chunk)
                )
        elapsed = time.perf_counter() - started
    finally:
        undelivered = await publisher.close()
    if undelivered:
        raise PublishBenchError(f"EventPublisher left {undelivered} records undelivered")
    return len(keys) / elapsed


def same_bytes_as_publisher(
    publisher_module: ModuleType, events_module: ModuleType, body: dict[str, Any]
) -> tuple[bytes, Headers]:
    """The value and headers EventPublisher sends for ``body``, for the raw producer."""
    envelope = events_module.ModelEventEnvelope(
        event_type=EVENT_TYPE,
        source=events_module.ModelEventSource(service="bench-publisher", instance_id="bench"),
        payload=body,
    )
    headers: Headers = list(publisher_module.cloudevents_headers(envelope))
    return envelope.to_bytes(), headers


def run(
    kafka: str,
    environment: str,
    node_folder: Path,
    package: str,
    messages: int,
    rounds: int,
    batch: int = 1000,
    payload_bytes: int = 512,
) -> PublishResult:
    """Alternate raw and publisher rounds on one fresh topic."""
    publisher_module, events_module = load_runtime(node_folder, package)
    run_id = uuid.uuid4().hex[:8]
    topic = bench_topic(environment, run_id)
    create_topic(kafka, topic)
    body = payload(payload_bytes)
    value, headers = same_bytes_as_publisher(publisher_module, events_module, body)
    keys = [str(uuid.uuid4()) for _ in range(messages)]
    raw: list[float] = []
    published: list[float] = []
    raw_cpu: list[float] = []
    published_cpu: list[float] = []
    many: list[float] = []
    many_cpu: list[float] = []
    try:
        # Interleaved, so machine noise does not favour any of the three.
        for _ in range(rounds):
            cpu = process_cpu_s()
            raw.append(raw_round(kafka, topic, value, headers, keys))
            raw_cpu.append((process_cpu_s() - cpu) / messages * 1e6)
            cpu = process_cpu_s()
            published.append(
                asyncio.run(publisher_round(publisher_module, kafka, topic, body, keys, batch))
            )
            published_cpu.append((process_cpu_s() - cpu) / messages * 1e6)
            cpu = process_cpu_s()
            many.append(
                asyncio.run(
                    publisher_round(publisher_module, kafka, topic, body, keys, batch, many=True)
                )
            )
            many_cpu.append((process_cpu_s() - cpu) / messages * 1e6)
    finally:
        delete_topic(kafka, topic)
    return PublishResult(
        publisher_msgs_per_s=published,
        raw_msgs_per_s=raw,
        publisher_cpu_us=published_cpu,
        raw_cpu_us=raw_cpu,
        record_bytes=len(value) + sum(len(k) + len(v or b"") for k, v in headers),
        many_msgs_per_s=many,
        many_cpu_us=many_cpu,
    )
