"""What a user would pick instead of our publisher, and the floor of awaited per-event publishing.

Every contender sends the same bytes (our envelope, serialised once, and our CloudEvents
headers) with the same settings (acks=all, idempotence, linger 5 ms, no compression, 30 s
delivery timeout), ``batch`` records in flight (one coroutine each, ``asyncio.gather``), every
delivery awaited by its caller. Connection set-up is left out of the clock (one warm-up
record each).

- ``floor``: a raw confluent-kafka ``Producer`` where each record gets an asyncio future,
  resolved from its delivery report and awaited by its caller. The reports are handed to the
  loop in batches (one ``call_soon_threadsafe`` per poll), the cheapest hand-over there is: no
  awaited per-event API on this producer can be faster.
- ``faststream``: FastStream's confluent ``KafkaBroker.publish`` (awaits the delivery).
- ``aiokafka``: ``AIOKafkaProducer.send_and_wait``; its batch size raised to librdkafka's
  default (1 MB) so it is not held back by its 16 KB default.

The peers are benchmark-only dependencies (the ``bench`` extra); a node never imports them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError, Message, Producer

Headers = list[tuple[str, str | bytes | None]]

LINGER_MS: Final = 5
DELIVERY_TIMEOUT_MS: Final = 30_000


class PeerBenchError(RuntimeError):
    """A contender did not deliver every record; its throughput would be meaningless."""


def confluent_settings(kafka: str, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka,
        "client.id": client_id,
        "linger.ms": LINGER_MS,
        "compression.type": "none",
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
    }


_Report = tuple["asyncio.Future[None]", KafkaError | None]


def _settle(batch: list[_Report]) -> None:
    for future, err in batch:
        if not future.done():
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(PeerBenchError(str(err)))


class FloorProducer:
    """The least an awaited per-event publish on confluent-kafka can do: ``produce``, one
    future per record, reports handed to the loop once per poll batch. No envelope, no
    retries, no breaker, no metrics."""

    def __init__(self, kafka: str, batched: bool = True) -> None:
        self._batched = batched
        self._producer = Producer(confluent_settings(kafka, "bench-floor"))
        self._loop = asyncio.get_running_loop()
        self._reports: collections.deque[_Report] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-floor-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        reports = self._reports
        while not self._stop.is_set():
            self._producer.poll(0.1)
            if reports:
                batch: list[_Report] = []
                with contextlib.suppress(IndexError):
                    while True:
                        batch.append(reports.popleft())
                with contextlib.suppress(RuntimeError):  # loop closed
                    self._loop.call_soon_threadsafe(_settle, batch)

    async def send(self, topic: str, value: bytes, key: str, headers: Headers) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        if self._batched:
            queue: Callable[[_Report], None] = self._reports.append

            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                queue((future, err))
        else:
            # One loop wake-up per record, as FastStream's confluent client does: what
            # handing the reports over in batches saves.
            loop = self._loop

            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, [(future, err)])

        self._producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
        await future

    async def close(self) -> int:
        remaining = int(await asyncio.to_thread(self._producer.flush, 30))
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 2)
        return remaining


async def _gathered(send: Callable[[str], Any], keys: list[str], batch: int) -> float:
    """Messages/s of ``send(key)`` for every key, ``batch`` coroutines at a time."""
    started = time.perf_counter()
    for first in range(0, len(keys), batch):
        await asyncio.gather(*(send(key) for key in keys[first : first + batch]))
    return len(keys) / (time.perf_counter() - started)


async def floor_round(
    kafka: str,
    topic: str,
    value: bytes,
    headers: Headers,
    keys: list[str],
    batch: int,
    batched: bool = True,
) -> float:
    producer = FloorProducer(kafka, batched)
    try:
        await producer.send(topic, value, keys[0], headers)  # warm-up
        rate = await _gathered(lambda key: producer.send(topic, value, key, headers), keys, batch)
    finally:
        remaining = await producer.close()
    if remaining:
        raise PeerBenchError(f"floor producer left {remaining} records undelivered")
    return rate


async def faststream_round(
    kafka: str, topic: str, value: bytes, headers: Headers, keys: list[str], batch: int
) -> float:
    from faststream.confluent import KafkaBroker

    text_headers = {
        name: data.decode() if isinstance(data, bytes) else str(data or "")
        for name, data in headers
    }
    broker = KafkaBroker(
        kafka,
        client_id="bench-faststream",
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        config={"delivery.timeout.ms": DELIVERY_TIMEOUT_MS},
        logger=None,  # no log line per record: the cheapest FastStream can be
    )
    await broker.start()
    try:
        await broker.publish(value, topic, key=keys[0], headers=text_headers)  # warm-up
        return await _gathered(
            lambda key: broker.publish(value, topic, key=key, headers=text_headers), keys, batch
        )
    finally:
        await broker.stop()


async def aiokafka_round(
    kafka: str, topic: str, value: bytes, headers: Headers, keys: list[str], batch: int
) -> float:
    from aiokafka import AIOKafkaProducer

    byte_headers = [
        (name, data if isinstance(data, bytes) else (data or "").encode()) for name, data in headers
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka,
        client_id="bench-aiokafka",
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=1_000_000,
        request_timeout_ms=DELIVERY_TIMEOUT_MS,
    )
    await producer.start()
    try:

        async def send(key: str) -> None:
            await producer.send_and_wait(topic, value, key=key.encode(), headers=byte_headers)

        await send(keys[0])  # warm-up
        return await _gathered(send, keys, batch)
    finally:
        await producer.stop()
