"""Event models on the wire: one envelope, typed payloads.

Every message on the bus is a ``ModelEventEnvelope`` serialised as JSON. The
payload models below are the discovery protocol shared by nodes and registry.
"""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError, to_json

from .naming import NodeType
from .tracing import SPAN_ID_PATTERN, TRACE_ID_PATTERN

#: 1.1.0: envelopes carry ``metadata`` (trace context and extras).
SCHEMA_VERSION = "1.1.0"

#: A dead letter keeps at most this many bytes of the original record, so a record that
#: failed for being too large can still be dead-lettered.
DEAD_LETTER_MAX_ORIGINAL = 256 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


# Version 4 / RFC 4122 variant bits, applied the way ``uuid.UUID(int=..., version=4)`` does.
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)
_getrandbits = random.getrandbits
_new_object = object.__new__
_set_attribute = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def new_id_int() -> int:
    """The 128-bit integer of a random version 4 UUID."""
    return (_getrandbits(128) & _V4_CLEAR) | _V4_SET


def uuid_from_int(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` without its argument checks (``value`` is a valid UUID int):
    the constructor's checks are a measurable share of a publish."""
    result: uuid.UUID = _new_object(uuid.UUID)
    _set_attribute(result, "int", value)
    _set_attribute(result, "is_safe", _SAFE_UNKNOWN)
    return result


def new_id() -> uuid.UUID:
    """A random (version 4) UUID without a system call per id: event ids must be unique,
    not unpredictable, and ``uuid.uuid4()`` reads ``os.urandom`` every time."""
    return uuid_from_int(new_id_int())


def uuid_text(value: int) -> str:
    """``str(uuid.UUID(int=value))``."""
    h = value.to_bytes(16).hex()
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def json_payload(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as JSON exactly as ``ModelEventEnvelope`` writes its ``payload`` field."""
    try:
        # The serializer pydantic uses for ``dict[str, Any]``; NaN/inf become null as in
        # ``model_dump_json`` (JSON has no such numbers).
        return to_json(payload, inf_nan_mode="null")
    except PydanticSerializationError as exc:
        raise TypeError(
            f"event payload is not JSON-serialisable ({exc}); use str, int, float, bool, None, "
            "lists, dicts with str keys, UUID, datetime, date, Decimal or pydantic models"
        ) from exc


class ModelEventSource(_Model):
    service: str
    instance_id: str
    hostname: str = Field(default_factory=socket.gethostname)


class ModelEventMetadata(_Model):
    """Trace context and free extras of one event.

    ``trace_id``/``span_id`` follow W3C Trace Context sizes; ``parent_span_id`` is the span
    of the event whose handler published this one (None at the start of a trace).
    ``extra`` holds whatever else the publisher passes (``publish(..., extra=...)``).
    """

    trace_id: str | None = Field(default=None, pattern=TRACE_ID_PATTERN)
    span_id: str | None = Field(default=None, pattern=SPAN_ID_PATTERN)
    parent_span_id: str | None = Field(default=None, pattern=SPAN_ID_PATTERN)
    extra: dict[str, Any] = Field(default_factory=dict)


_METADATA_FIELDS = frozenset(ModelEventMetadata.model_fields)


def metadata_model(
    trace_id: str, span_id: str, parent_span_id: str | None, extra: dict[str, Any]
) -> ModelEventMetadata:
    """A ``ModelEventMetadata`` of ids the publisher made, without a validation pass."""
    model: ModelEventMetadata = _new_object(ModelEventMetadata)
    _set_attribute(
        model,
        "__dict__",
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": parent_span_id,
            "extra": extra,
        },
    )
    _set_attribute(model, "__pydantic_fields_set__", set(_METADATA_FIELDS))
    _set_attribute(model, "__pydantic_extra__", None)
    _set_attribute(model, "__pydantic_private__", None)
    return model


def metadata_text(
    trace_id: str, span_id: str, parent_span_id: str | None, extra: Mapping[str, Any] | None
) -> str:
    """The ``metadata`` JSON as ``ModelEventEnvelope`` writes it (ids are hex, no escaping)."""
    parent = "null" if parent_span_id is None else f'"{parent_span_id}"'
    extra_json = json_payload(extra).decode() if extra else "{}"
    return (
        f'{{"trace_id":"{trace_id}","span_id":"{span_id}",'
        f'"parent_span_id":{parent},"extra":{extra_json}}}'
    )


class ModelEventEnvelope(_Model):
    """The one envelope every event travels in.

    Unknown top-level fields are ignored (dropped), not refused: a node reads envelopes
    from nodes rendered from a newer template that added a field, so a fleet can be
    upgraded one node at a time. Payloads stay strict (their own models).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID = Field(default_factory=new_id)
    event_type: str = Field(min_length=1, max_length=255)
    correlation_id: uuid.UUID = Field(default_factory=new_id)
    causation_id: uuid.UUID | None = None
    timestamp: datetime = Field(default_factory=utc_now)
    schema_version: str = SCHEMA_VERSION
    source: ModelEventSource
    metadata: ModelEventMetadata = Field(default_factory=ModelEventMetadata)
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> ModelEventEnvelope:
        return cls.model_validate_json(data)


_ENVELOPE_FIELDS = frozenset(ModelEventEnvelope.model_fields)
_ZERO = timedelta(0)


#: (year, month, day, hour, minute, second) and its text; one tuple, replaced at once,
#: so a reader in another thread never pairs a key with another second's text.
_second: tuple[tuple[int, ...], str] = ((), "")


def timestamp_text(timestamp: datetime) -> str:
    """A timezone-aware datetime as ``ModelEventEnvelope`` writes it (UTC as ``Z``)."""
    global _second
    if timestamp.tzinfo is not UTC:
        if timestamp.utcoffset() != _ZERO:
            return to_json(timestamp).decode()[1:-1]
        timestamp = timestamp.astimezone(UTC)
    # The text up to the second is the same for every event of that second: formatting
    # it once per second instead of per event is a measurable share of a publish.
    key = (
        timestamp.year,
        timestamp.month,
        timestamp.day,
        timestamp.hour,
        timestamp.minute,
        timestamp.second,
    )
    cached_key, text = _second
    if key != cached_key:
        text = timestamp.replace(microsecond=0, tzinfo=None).isoformat()
        _second = (key, text)
    micro = timestamp.microsecond
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


class EnvelopeEncoder:
    """Builds envelope JSON on the publish hot path, byte for byte what
    ``ModelEventEnvelope.to_bytes()`` writes (tests compare both), without building and
    validating a model per event: that pass was most of a publish's cost. Every field but
    the payload is produced by the publisher with the right type; the payload goes through
    pydantic's own serializer."""

    def __init__(self, source: ModelEventSource) -> None:
        self.source = source
        self._source_json = source.model_dump_json()
        self._event_types: dict[str, str] = {}

    def event_type_json(self, event_type: str) -> str:
        text = self._event_types.get(event_type)
        if text is None:
            if not event_type or len(event_type) > 255:
                raise ValueError("event_type must be 1 to 255 characters")
            text = to_json(event_type).decode()
            if len(self._event_types) < 4096:  # a node has a handful; never grow unbounded
                self._event_types[event_type] = text
        return text

    def encode(
        self,
        event_id: str,
        event_type: str,
        correlation_id: str,
        causation_id: uuid.UUID | None,
        timestamp: str,
        metadata_json: str,
        payload_json: bytes,
    ) -> bytes:
        """The envelope's JSON from the fields' texts: ids as ``uuid_text`` gives them,
        ``timestamp`` from ``timestamp_text``, ``metadata_json`` from ``metadata_text``,
        ``payload_json`` from ``json_payload``."""
        cause = "null" if causation_id is None else f'"{causation_id}"'
        head = (
            f'{{"event_id":"{event_id}","event_type":{self.event_type_json(event_type)},'
            f'"correlation_id":"{correlation_id}","causation_id":{cause},'
            f'"timestamp":"{timestamp}","schema_version":"{SCHEMA_VERSION}",'
            f'"source":{self._source_json},"metadata":{metadata_json},"payload":'
        )
        return head.encode() + payload_json + b"}"

    def envelope(
        self,
        event_id: int,
        event_type: str,
        correlation_id: int,
        causation_id: uuid.UUID | None,
        timestamp: datetime,
        metadata: ModelEventMetadata,
        payload: dict[str, Any],
    ) -> ModelEventEnvelope:
        """The model of what ``encode`` wrote (for the caller), set up the way
        ``model_construct`` does it, minus its per-field loop."""
        model: ModelEventEnvelope = _new_object(ModelEventEnvelope)
        _set_attribute(
            model,
            "__dict__",
            {
                "event_id": uuid_from_int(event_id),
                "event_type": event_type,
                "correlation_id": uuid_from_int(correlation_id),
                "causation_id": causation_id,
                "timestamp": timestamp,
                "schema_version": SCHEMA_VERSION,
                "source": self.source,
                "metadata": metadata,
                "payload": payload,
            },
        )
        _set_attribute(model, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
        _set_attribute(model, "__pydantic_extra__", None)
        _set_attribute(model, "__pydantic_private__", None)
        return model


#: Key of the template version in an introspection event's ``capabilities.metadata``.
TEMPLATE_VERSION_KEY = "template_version"
DEFAULT_PROTOCOLS: tuple[str, ...] = ("kafka", "http")


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

    @classmethod
    def create_from_node_info(
        cls,
        *,
        node_id: uuid.UUID,
        node_name: str,
        version: str,
        node_type: NodeType,
        service_name: str,
        domain: str,
        instance_id: str,
        actions: Sequence[str] = (),
        protocols: Sequence[str] = DEFAULT_PROTOCOLS,
        metadata: Mapping[str, str] | None = None,
        tags: Sequence[str] | None = None,
        health_endpoint: str | None = None,
        description: str = "",
        template_version: str | None = None,
        correlation_id: uuid.UUID | None = None,
    ) -> ModelNodeIntrospectionEvent:
        """The announcement of a node, the way the design's ``MixinIntrospectionPublisher``
        builds it.

        ``node_name`` is the node's class name (``NodePostgresqlWriterEffect``,
        ``naming.class_name``). ``capabilities.metadata`` holds
        ``node_type``, ``domain``, ``service_name`` and ``template_version`` (the template
        version the node was rendered from, when known) over the given ``metadata``.
        ``tags`` default to ``[domain, node_type, service_name]``.
        """
        merged = dict(metadata or {})
        merged.update(node_type=node_type, domain=domain, service_name=service_name)
        if template_version:
            merged[TEMPLATE_VERSION_KEY] = template_version
        return cls(
            node_id=node_id,
            node_name=node_name,
            node_type=node_type,
            service_name=service_name,
            domain=domain,
            version=version,
            instance_id=instance_id,
            description=description,
            capabilities=ModelNodeCapabilities(
                actions=list(actions), protocols=list(protocols), metadata=merged
            ),
            tags=list(tags) if tags else default_tags(domain, node_type, service_name),
            health_endpoint=health_endpoint,
            correlation_id=correlation_id or uuid.uuid4(),
        )

    @property
    def template_version(self) -> str | None:
        """The template version the node announced (``capabilities.metadata``), if any."""
        return self.capabilities.metadata.get(TEMPLATE_VERSION_KEY)


def default_tags(domain: str, node_type: str, service_name: str) -> list[str]:
    """Tags of a node that names none: ``[domain, node_type, service_name]``."""
    return list(dict.fromkeys((domain, node_type, service_name)))


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
