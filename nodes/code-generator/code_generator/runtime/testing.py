"""Helpers for tests of a node against a real broker (used by tests/ of the project).

An independent reader (its own consumer group, or none) sees exactly what other
services would see, so tests check what reached Kafka, not what the node believes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from .events import ModelEventEnvelope, ModelEventMetadata, ModelEventSource


async def http_request(
    url: str,
    method: str = "GET",
    body: Mapping[str, Any] | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 client (standard library only): returns (status, body)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = json.dumps(body).encode() if body is not None else b""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        head = (
            f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        await writer.wait_closed()
    header, _, content = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, content


class TopicReader:
    """Reads topics from their beginning without a consumer group (no group join to wait
    for), off the event loop. Topics that do not exist yet are picked up when they appear."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        *,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.records: list[Message] = []
        self._assigned: set[str] = set()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"test-reader-{uuid.uuid4()}",  # required, never joined
                "enable.auto.commit": False,
                "allow.auto.create.topics": True,
                **(extra_config or {}),
            }
        )

    def _assign_new_topics(self) -> None:
        for topic in self.topics:
            if topic in self._assigned:
                continue
            meta = self._consumer.list_topics(topic, timeout=5.0).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                continue
            parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            self._consumer.incremental_assign(parts)
            self._assigned.add(topic)

    def _poll(self, timeout_s: float) -> list[Message]:
        self._assign_new_topics()
        if not self._assigned:
            time.sleep(min(timeout_s, 0.2))
            return []
        out = []
        for message in self._consumer.consume(500, timeout_s):
            error = message.error()
            if error is None:
                out.append(message)
            elif error.code() not in (
                KafkaError._PARTITION_EOF,
                KafkaError.UNKNOWN_TOPIC_OR_PART,
            ):
                raise RuntimeError(f"test reader: {error}")
        return out

    async def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout_s: float = 30.0,
        count: int = 1,
    ) -> list[Message]:
        """Poll until ``count`` records match ``predicate`` (including ones read before)."""
        deadline = time.monotonic() + timeout_s
        while True:
            matches = [m for m in self.records if predicate(m)]
            if len(matches) >= count:
                return matches
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(matches)}/{count} matching records on {self.topics} after {timeout_s}s "
                    f"({len(self.records)} records read)"
                )
            self.records.extend(await asyncio.to_thread(self._poll, 0.5))

    async def drain(self, quiet_s: float = 2.0) -> list[Message]:
        """Read until nothing new arrives for ``quiet_s``; returns everything read so far."""
        while True:
            batch = await asyncio.to_thread(self._poll, quiet_s)
            if not batch:
                return self.records
            self.records.extend(batch)

    def close(self) -> None:
        self._consumer.close()


def envelope_of(message: Message) -> ModelEventEnvelope | None:
    value = message.value()
    return ModelEventEnvelope.from_bytes(value) if value is not None else None


async def send_event(
    bootstrap_servers: str,
    topic: str,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    correlation_id: uuid.UUID | None = None,
    key: str | None = None,
    metadata: ModelEventMetadata | None = None,
) -> ModelEventEnvelope:
    """Publish one envelope the way another service would, and wait for the broker."""
    envelope = ModelEventEnvelope(
        event_type=event_type,
        correlation_id=correlation_id or uuid.uuid4(),
        source=ModelEventSource(service="test-client", instance_id="test"),
        metadata=metadata or ModelEventMetadata(),
        payload=dict(payload),
    )
    await send_raw(bootstrap_servers, topic, envelope.to_bytes(), key=key)
    return envelope


async def send_raw(
    bootstrap_servers: str, topic: str, value: bytes | None, key: str | None = None
) -> None:
    def produce() -> None:
        producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all"})
        errors: list[KafkaError] = []
        producer.produce(
            topic,
            value=value,
            key=key,
            on_delivery=lambda err, _m: errors.extend([err] if err else []),
        )
        if producer.flush(15.0) or errors:
            raise RuntimeError(f"test producer could not deliver to {topic}: {errors or 'timeout'}")

    await asyncio.to_thread(produce)
