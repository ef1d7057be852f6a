"""Delivery reports, from librdkafka's thread to the event loop.

librdkafka reports every record (delivered, failed, timed out, purged) on the thread
that serves its queue. ``publish`` queues one ``DeliveryReport`` per record and the poll
thread hands them over in batches (``settle_reports``); ``publish_many`` counts a whole
batch in one ``BatchSink``. Either way the event loop is woken once per poll or batch,
not once per record.
"""

from __future__ import annotations

import asyncio
import contextlib

from confluent_kafka import KafkaError, Message

from .publish_errors import DeliveryError

#: (the publish's future, librdkafka's error or None, the message).
DeliveryReport = tuple["asyncio.Future[Message]", KafkaError | None, Message]


def settle_reports(batch: list[DeliveryReport]) -> None:
    """On the event loop: resolve each report's future (``DeliveryError`` on failure)."""
    for future, err, msg in batch:
        if future.done():
            continue
        if err is not None:
            future.set_exception(DeliveryError(err))
        else:
            future.set_result(msg)


class BatchSink:
    """Delivery reports of one ``publish_many`` attempt. Counted on the poll thread (a list
    append is atomic), so the event loop is woken once per batch, not once per record."""

    __slots__ = ("arrived", "expected", "failures", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.arrived: list[None] = []
        self.expected = 1 << 62  # until ``seal`` says how many records were queued
        self.failures: list[tuple[KafkaError, bytes | None]] = []

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Runs on whichever thread serves librdkafka's queue (poll thread, or flush on close).
        if err is not None:
            value = msg.value()
            self.failures.append((err, value if isinstance(value, bytes) else None))
        arrived = self.arrived
        arrived.append(None)
        if len(arrived) >= self.expected:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(self._wake)

    def seal(self, expected: int) -> None:
        """On the loop, after queueing: reports that all came already wake it here."""
        self.expected = expected
        if len(self.arrived) >= expected:
            self._wake()

    def _wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
