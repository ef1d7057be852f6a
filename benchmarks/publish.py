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
import gc
import importlib
import math
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from benchmarks import loops, peers
from onex_scaffold import naming

#: Shared by both producers; the publisher adds acks=all and idempotence itself, and the raw
#: producer is given the same. linger and compression are the generated node's defaults.
PRODUCER_SETTINGS: Final[dict[str, Any]] = {"linger.ms": 5, "compression.type": "none"}
DELIVERY_TIMEOUT_MS: Final = 30_000
EVENT_TYPE: Final = "omninode.bench.event.row_written.v1"

Headers = list[tuple[str, str | bytes | None]]


class PublishBenchError(RuntimeError):
    """Records were not all delivered; a throughput figure would be meaningless."""


@dataclass
class PublishResult:
    """Messages/s and process CPU per record (µs, librdkafka's threads included) of each way
    to publish, one sample per round. CPU per record is far less distorted by machine load
    than throughput is."""

    record_bytes: int
    loop: str
    msgs_per_s: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    #: Contenders that failed (e.g. a peer the broker does not support), with the error;
    #: their figures are left out instead of losing everyone else's.
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, msgs_per_s: float, cpu_us: float) -> None:
        self.msgs_per_s.setdefault(name, []).append(msgs_per_s)
        self.cpu_us.setdefault(name, []).append(cpu_us)

    def median(self, name: str) -> float:
        """Median messages/s of ``name``; NaN when it was not measured."""
        samples = self.msgs_per_s.get(name)
        return float(statistics.median(samples)) if samples else math.nan


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


#: Contenders in the order of a round; ``publish_asyncio`` and ``floor_asyncio`` only when
#: uvloop is installed (the same on asyncio's own loop: what uvloop changes).
CONTENDERS: Final = (
    "raw",
    "floor",
    "publish",
    "publish_many",
    "faststream",
    "aiokafka",
    "publish_asyncio",
    "floor_asyncio",
    "publish_default_gc",
    "floor_per_record_wakeup",
)


#: CPython's own collector thresholds, for the ``publish_default_gc`` comparison.
DEFAULT_GC_THRESHOLD: Final = (700, 10, 10)


def run(
    kafka: str,
    environment: str,
    node_folder: Path,
    package: str,
    messages: int,
    rounds: int,
    batch: int = 1000,
    payload_bytes: int = 512,
    peer_messages: int | None = None,
    loop_factory: loops.LoopFactory | None = None,
) -> PublishResult:
    """Rounds of every contender, interleaved (machine noise favours none), on one fresh
    topic. ``peer_messages`` (default ``messages``) bounds the slow aiokafka's share."""
    publisher_module, events_module = load_runtime(node_folder, package)
    # The process set-up a node makes once it is up (start_node.py): frozen start-up heap,
    # young collections less often. ``publish_default_gc`` measures publish without it.
    eventloop = importlib.import_module(f"{package}.runtime.eventloop")
    eventloop.settle_heap()
    tuned_gc = gc.get_threshold()
    run_id = uuid.uuid4().hex[:8]
    topic = bench_topic(environment, run_id)
    create_topic(kafka, topic)
    body = payload(payload_bytes)
    value, headers = same_bytes_as_publisher(publisher_module, events_module, body)
    keys = [str(uuid.uuid4()) for _ in range(messages)]
    peer_keys = keys[: peer_messages or messages]
    result = PublishResult(
        record_bytes=len(value) + sum(len(k) + len(v or b"") for k, v in headers),
        loop=loops.name(loop_factory),
    )

    def on_loop(factory: loops.LoopFactory | None) -> dict[str, Callable[[], float]]:
        def runs(coro_fn: Callable[[], Coroutine[Any, Any, float]]) -> Callable[[], float]:
            return lambda: loops.run(coro_fn(), factory)

        return {
            "floor": runs(lambda: peers.floor_round(kafka, topic, value, headers, keys, batch)),
            "publish": runs(
                lambda: publisher_round(publisher_module, kafka, topic, body, keys, batch)
            ),
        }

    chosen = on_loop(loop_factory)
    contenders: dict[str, Callable[[], float]] = {
        "raw": lambda: raw_round(kafka, topic, value, headers, keys),
        "floor": chosen["floor"],
        "publish": chosen["publish"],
        "publish_many": lambda: loops.run(
            publisher_round(publisher_module, kafka, topic, body, keys, batch, many=True),
            loop_factory,
        ),
        "faststream": lambda: loops.run(
            peers.faststream_round(kafka, topic, value, headers, peer_keys, batch), loop_factory
        ),
        "aiokafka": lambda: loops.run(
            peers.aiokafka_round(kafka, topic, value, headers, peer_keys, batch), loop_factory
        ),
    }
    if loop_factory is not None:
        plain = on_loop(None)
        contenders["publish_asyncio"] = plain["publish"]
        contenders["floor_asyncio"] = plain["floor"]

    def default_gc() -> float:
        gc.unfreeze()
        gc.set_threshold(*DEFAULT_GC_THRESHOLD)
        try:
            return chosen["publish"]()
        finally:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*tuned_gc)

    contenders["publish_default_gc"] = default_gc
    contenders["floor_per_record_wakeup"] = lambda: loops.run(
        peers.floor_round(kafka, topic, value, headers, keys, batch, batched=False), loop_factory
    )
    try:
        for _ in range(rounds):
            for name, measure in contenders.items():
                if name in result.errors:
                    continue
                count = len(peer_keys) if name in ("faststream", "aiokafka") else len(keys)
                gc.collect()  # no contender pays for the garbage of the one before
                cpu = process_cpu_s()
                try:
                    rate = measure()
                except Exception as error:
                    if name in ("raw", "publish"):
                        raise  # without these there is nothing to compare
                    result.errors[name] = f"{type(error).__name__}: {error}"
                    continue
                result.add(name, rate, (process_cpu_s() - cpu) / count * 1e6)
    finally:
        delete_topic(kafka, topic)
    return result
