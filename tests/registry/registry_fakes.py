"""Stand-ins for the Kafka parts the registry's logic reads, and builders of its inputs.

Shared by the unit tests of discovery, omnibase_core records and the reconciler
(importable as ``registry_fakes``: pytest puts this folder on the import path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME
from onex_registry.consul_registry import RegistrySettings
from onex_registry.discovery import DiscoveryConsumer
from onex_registry.reconcile import Reconciler, RegistryView
from onex_registry.runtime import naming
from onex_registry.runtime.events import ModelEventEnvelope, ModelEventSource

ENV = "unit"
NODE_ID = naming.node_id_for("postgres-writer", "i1")
#: Event type of each discovery topic role.
EVENT_TYPES = {
    "introspection": naming.EVENT_NODE_INTROSPECTION,
    "heartbeat": naming.EVENT_NODE_HEARTBEAT,
    "shutdown": naming.EVENT_NODE_SHUTDOWN,
}


@dataclass
class Message:
    """The parts of confluent_kafka.Message the consumer reads."""

    _topic: str
    _value: bytes | None
    _key: bytes | None = None
    _offset: int = 0
    _ts: float = field(default_factory=time.time)
    _headers: list[tuple[str, bytes]] | None = None

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, int(self._ts * 1000)


class Publisher:
    """Keeps what the consumer dead-letters and publishes."""

    def __init__(self) -> None:
        self.dead: list[dict[str, Any]] = []
        self.published: list[tuple[str, dict[str, Any], str | None]] = []

    async def dead_letter(self, **kwargs: Any) -> bool:
        self.dead.append(kwargs)
        return True

    async def publish(self, event_type: str, payload: dict[str, Any], **kwargs: Any) -> None:
        self.published.append((event_type, payload, kwargs.get("topic")))


def make_consumer(settings: RegistrySettings | None = None) -> DiscoveryConsumer:
    """A discovery consumer past its replay, with a ``Publisher`` and no Kafka or Consul."""
    settings = settings or RegistrySettings(consul_http_addr="127.0.0.1:1")
    view = RegistryView(settings)
    discovery = DiscoveryConsumer(
        kafka_config={},
        environment=ENV,
        group_id="g",
        settings=settings,
        view=view,
        reconciler=Reconciler(view, None, settings, clock=time.time),  # type: ignore[arg-type]
        publisher=Publisher(),  # type: ignore[arg-type]
        requested_by="onex-registry",
    )
    discovery.replayed.set()
    return discovery


def dead_reasons(consumer: DiscoveryConsumer) -> list[str]:
    """The reasons of every record the consumer dead-lettered, in order."""
    return [d["error"] for d in consumer._publisher.dead]  # type: ignore[attr-defined]


def topics() -> dict[str, str]:
    return naming.discovery_topics(ENV)


def envelope(event_type: str, payload: dict[str, Any]) -> bytes:
    return ModelEventEnvelope(
        event_type=event_type,
        source=ModelEventSource(service="t", instance_id="t"),
        payload=payload,
    ).to_bytes()


def introspection(
    service: str = "postgres-writer", instance: str = "i1", **changes: Any
) -> dict[str, Any]:
    """An announcement of ``service`` instance ``instance`` (node_id derived from both)."""
    payload: dict[str, Any] = {
        "node_id": str(naming.node_id_for(service, instance)),
        "node_name": "PostgresqlWriter",
        "node_type": "effect",
        "service_name": service,
        "domain": "database",
        "version": "0.1.0",
        "instance_id": instance,
        "health_endpoint": "http://127.0.0.1:8001/health",
    }
    payload.update(changes)
    return payload


def heartbeat(node_id: object = NODE_ID, **changes: Any) -> dict[str, Any]:
    """A healthy heartbeat of ``postgres-writer`` instance ``i1`` (fields overridden by
    ``changes``)."""
    payload: dict[str, Any] = {
        **goodbye(node_id),
        "status": "healthy",
        "uptime_s": 1,
    }
    payload.update(changes)
    return payload


def goodbye(node_id: object = NODE_ID, **changes: Any) -> dict[str, Any]:
    """A shutdown event of ``postgres-writer`` instance ``i1``."""
    payload: dict[str, Any] = {
        "node_id": str(node_id),
        "service_name": "postgres-writer",
        "instance_id": "i1",
    }
    payload.update(changes)
    return payload


def event_message(role: str, payload: dict[str, Any], key: str | None = None, **kw: Any) -> Message:
    """``payload`` as a record on the ``role`` topic, keyed by its node_id unless ``key``."""
    value = envelope(EVENT_TYPES[role], payload)
    return Message(topics()[role], value, (key or payload["node_id"]).encode(), **kw)


def intro_message(payload: dict[str, Any], key: str | None = None, **kw: Any) -> Message:
    return event_message("introspection", payload, key, **kw)
