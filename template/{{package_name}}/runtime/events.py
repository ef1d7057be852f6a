"""Event models on the wire: one envelope, typed payloads.

Every message on the bus is a ``ModelEventEnvelope`` serialised as JSON. The
payload models below are the discovery protocol shared by nodes and registry.
"""

from __future__ import annotations

import random
import socket
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .naming import NodeType

SCHEMA_VERSION = "1.0.0"

#: A dead letter keeps at most this many bytes of the original record, so a record that
#: failed for being too large can still be dead-lettered.
DEAD_LETTER_MAX_ORIGINAL = 256 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A random (version 4) UUID without a system call per id: event ids must be unique,
    not unpredictable, and ``uuid.uuid4()`` reads ``os.urandom`` every time."""
    return uuid.UUID(int=random.getrandbits(128), version=4)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEventSource(_Model):
    service: str
    instance_id: str
    hostname: str = Field(default_factory=socket.gethostname)


class ModelEventEnvelope(_Model):
    """The one envelope every event travels in."""

    event_id: uuid.UUID = Field(default_factory=new_id)
    event_type: str = Field(min_length=1, max_length=255)
    correlation_id: uuid.UUID = Field(default_factory=new_id)
    causation_id: uuid.UUID | None = None
    timestamp: datetime = Field(default_factory=utc_now)
    schema_version: str = SCHEMA_VERSION
    source: ModelEventSource
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> ModelEventEnvelope:
        return cls.model_validate_json(data)


class ModelNodeCapabilities(_Model):
    actions: list[str] = Field(default_factory=list)
    protocols: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class ModelNodeIntrospectionEvent(_Model):
    """What a node announces about itself on start and on request."""

    node_id: uuid.UUID
    node_name: str
    node_type: NodeType
    service_name: str
    domain: str
    version: str
    instance_id: str
    description: str = ""
    capabilities: ModelNodeCapabilities = Field(default_factory=ModelNodeCapabilities)
    tags: list[str] = Field(default_factory=list)
    health_endpoint: str | None = None
    correlation_id: uuid.UUID = Field(default_factory=uuid.uuid4)


HealthStatus = Literal["healthy", "degraded", "unhealthy"]


class ModelNodeHeartbeatEvent(_Model):
    node_id: uuid.UUID
    service_name: str
    instance_id: str
    status: HealthStatus
    uptime_s: float = Field(ge=0)
    active_operations: int = Field(default=0, ge=0)
    reasons: list[str] = Field(default_factory=list)


class ModelNodeShutdownEvent(_Model):
    node_id: uuid.UUID
    service_name: str
    instance_id: str
    reason: str = "graceful shutdown"


class ModelIntrospectionRequest(_Model):
    """Sent by the registry: every node (or only ``service_name``) re-announces itself."""

    requested_by: str
    service_name: str | None = None
    reason: str = "registry start"


class ModelDeadLetter(_Model):
    """What lands on a dead-letter topic: the original bytes, why, and how often tried."""

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    original: str
    #: True when ``original`` holds only the first ``DEAD_LETTER_MAX_ORIGINAL`` bytes.
    original_truncated: bool = False
    original_size: int = Field(default=0, ge=0)
    error: str
    attempts: int = Field(ge=0)
    failed_at: datetime = Field(default_factory=utc_now)
