"""Nodes written with omnibase_core: their discovery events, mapped to ours. Pure, no I/O.

omnibase_core (0.47.x) announces a node with its own ``ModelEventEnvelope`` around its own
``ModelNodeIntrospectionEvent``, on its own topics (no environment prefix)::

    onex.evt.platform.node-introspection.v1   introspection
    onex.evt.platform.node-heartbeat.v1       heartbeats
    onex.evt.platform.node-shutdown.v1        shutdowns

The registry reads them too and maps each to the same Consul registration as one of ours
(docs/registry.md has the table). The mapping is read off the wire shape, so the registry
does not depend on omnibase_core (which needs Python 3.12). Unknown fields are kept: the KV
manifest holds the mapped announcement plus the whole original envelope under
``omnibase_core``. The records pass the same checks as ours (sizes, health endpoint
addresses, node_id binding, clock skew).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

from .admission import AdmissionError
from .runtime import naming
from .runtime.events import ModelNodeCapabilities, ModelNodeIntrospectionEvent

TOPIC_INTROSPECTION: Final = "onex.evt.platform.node-introspection.v1"
TOPIC_HEARTBEAT: Final = "onex.evt.platform.node-heartbeat.v1"
TOPIC_SHUTDOWN: Final = "onex.evt.platform.node-shutdown.v1"

EVENT_INTROSPECTION: Final = "node_introspection_event"
EVENT_HEARTBEATS: Final = frozenset(
    {"onex.evt.node-heartbeat.v1", "node-heartbeat", "node_health_event"}
)
EVENT_SHUTDOWN: Final = "node_shutdown_event"
#: The domain given to every omnibase_core node (its events carry none).
DOMAIN: Final = "omnibase"
#: Meta pair telling where an announcement came from.
SOURCE_FORMAT_KEY: Final = "source_format"
SOURCE_FORMAT: Final = "omnibase_core"

_ACTIONS_IN_DESCRIPTION: Final = re.compile(r":\s*(.*)$", re.DOTALL)


def topics(prefix: str = "") -> dict[str, str]:
    """omnibase_core's discovery topics, by role (``prefix`` e.g. ``dev.`` if yours have one)."""
    return {
        "introspection": prefix + TOPIC_INTROSPECTION,
        "heartbeat": prefix + TOPIC_HEARTBEAT,
        "shutdown": prefix + TOPIC_SHUTDOWN,
    }


class _Loose(BaseModel):
    """Fields the mapping reads; everything else is kept as it came, in the manifest."""

    model_config = ConfigDict(extra="allow")


class ModelOmnibaseSemVer(_Loose):
    major: int
    minor: int
    patch: int
    prerelease: Any = None
    build: Any = None

    def text(self) -> str:
        """``1.2.3``, ``1.2.3-rc.1``, ``1.2.3+b7`` (pre-release and build as omnibase gives
        them: a string or a list of identifiers)."""

        def part(value: Any) -> str:
            return (
                ".".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
            )

        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease not in (None, "", []):
            text += f"-{part(self.prerelease)}"
        if self.build not in (None, "", []):
            text += f"+{part(self.build)}"
        return text


class ModelOmnibaseEnvelope(_Loose):
    envelope_id: uuid.UUID | None = None
    envelope_timestamp: datetime
    source_tool: str | None = None
    payload: dict[str, Any]


class ModelOmnibaseCapability(_Loose):
    value: str | None = None
    description: str | None = None
    capability_display_name: str | None = None


class ModelOmnibaseIntrospection(_Loose):
    event_type: str
    node_id: uuid.UUID
    node_name: str
    version: ModelOmnibaseSemVer
    node_type: str
    node_role: str | None = None
    capabilities: ModelOmnibaseCapability | None = None
    health_endpoint: str | None = None
    tags: list[str] = []
    service_id: uuid.UUID | None = None
    datacenter: str | None = None
    description: str | None = None


class ModelOmnibaseHeartbeat(_Loose):
    event_type: str
    node_name: str
    node_id: uuid.UUID | None = None
    source_node_id: uuid.UUID | None = None
    uptime_seconds: float | None = None


class ModelOmnibaseShutdown(_Loose):
    event_type: str
    node_id: uuid.UUID
    node_name: str
    shutdown_reason: str | None = None


def decode_envelope(value: bytes) -> ModelOmnibaseEnvelope:
    try:
        return ModelOmnibaseEnvelope.model_validate_json(value)
    except ValidationError as error:
        raise AdmissionError(f"not an omnibase_core envelope: {_short(error)}") from error


def sent_at(envelope: ModelOmnibaseEnvelope) -> float:
    """``envelope_timestamp`` in epoch seconds (a naive time is UTC, as omnibase writes it)."""
    stamp = envelope.envelope_timestamp
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def service_name_for(node_name: str) -> str:
    """``node_demo_effect`` / ``NodeDemoEffect`` -> ``node-demo-effect`` (omnibase_core nodes
    have no service name; the node name is what names them)."""
    name = re.sub(r"-+", "-", naming.kebab_case(node_name)).strip("-")[:63].rstrip("-")
    if problem := naming.check("service_name", name):
        raise AdmissionError(
            f"node_name {node_name[:80]!r} gives no usable service name ({name!r} {problem})"
        )
    return name


def node_name_for(node_name: str) -> str:
    """``node_demo_effect`` -> ``NodeDemoEffect`` (our node_name rule: PascalCase)."""
    pascal = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", node_name) if part)
    pascal = pascal[:64]
    if problem := naming.check("node_name", pascal):
        raise AdmissionError(f"node_name {node_name[:80]!r} cannot be mapped ({problem})")
    return pascal


def actions_from(capability: ModelOmnibaseCapability | None) -> list[str]:
    """omnibase_core lists the actions only inside the capability's description
    (``Capabilities for X: run, stop``): the valid action names found there."""
    if capability is None or not capability.description:
        return []
    found = _ACTIONS_IN_DESCRIPTION.search(capability.description)
    if found is None:
        return []
    names = [part.strip() for part in found.group(1).split(",")]
    return list(dict.fromkeys(n for n in names if n and not naming.check("action", n)))


def map_introspection(
    envelope: ModelOmnibaseEnvelope, original: bytes
) -> tuple[ModelNodeIntrospectionEvent, str]:
    """(our announcement, the KV manifest) for an omnibase_core introspection envelope."""
    try:
        event = ModelOmnibaseIntrospection.model_validate(envelope.payload)
    except ValidationError as error:
        raise AdmissionError(f"invalid omnibase_core introspection: {_short(error)}") from error
    if event.event_type != EVENT_INTROSPECTION:
        raise AdmissionError(
            f"event_type {event.event_type[:80]!r}; expected {EVENT_INTROSPECTION!r}"
        )
    if event.node_type not in naming.NODE_TYPES:
        raise AdmissionError(
            f"node_type {event.node_type[:40]!r} must be one of {', '.join(naming.NODE_TYPES)}"
        )
    metadata = {"omnibase_node_name": event.node_name}
    for key, value in (
        ("node_role", event.node_role),
        ("datacenter", event.datacenter),
        ("service_id", str(event.service_id) if event.service_id else None),
        ("capability", event.capabilities.value if event.capabilities else None),
    ):
        if value:
            metadata[key] = value
    health = event.health_endpoint
    # omnibase_core's mixin announces a path (``/health/<node_id>``): no address to check,
    # so such a node gets a heartbeat-fed TTL check like our nodes without an endpoint.
    if health is not None and "://" not in health:
        metadata["health_path"] = health
        health = None
    mapped = ModelNodeIntrospectionEvent(
        node_id=event.node_id,
        node_name=node_name_for(event.node_name),
        node_type=event.node_type,  # checked above
        service_name=service_name_for(event.node_name),
        domain=DOMAIN,
        version=event.version.text(),
        instance_id=str(event.node_id),
        description=event.description or "",
        capabilities=ModelNodeCapabilities(
            actions=actions_from(event.capabilities), metadata=metadata
        ),
        tags=[SOURCE_FORMAT, *event.tags],
        health_endpoint=health,
    )
    manifest = mapped.model_dump(mode="json", exclude={"correlation_id"})
    manifest[SOURCE_FORMAT] = json.loads(original)
    return mapped, json.dumps(manifest, separators=(",", ":"), ensure_ascii=False)


def map_heartbeat(envelope: ModelOmnibaseEnvelope) -> tuple[str, str, str]:
    """(node_id, service name, note) of an omnibase_core heartbeat."""
    try:
        beat = ModelOmnibaseHeartbeat.model_validate(envelope.payload)
    except ValidationError as error:
        raise AdmissionError(f"invalid omnibase_core heartbeat: {_short(error)}") from error
    if beat.event_type not in EVENT_HEARTBEATS:
        raise AdmissionError(
            f"event_type {beat.event_type[:80]!r}; expected one of {', '.join(sorted(EVENT_HEARTBEATS))}"
        )
    node_id = beat.node_id or beat.source_node_id
    if node_id is None and envelope.source_tool:
        try:
            node_id = uuid.UUID(envelope.source_tool)
        except ValueError:
            node_id = None
    if node_id is None:
        raise AdmissionError("omnibase_core heartbeat names no node (node_id, source_node_id)")
    uptime = f"; up {beat.uptime_seconds:.0f}s" if beat.uptime_seconds is not None else ""
    return str(node_id), service_name_for(beat.node_name), f"healthy{uptime}"


def map_shutdown(envelope: ModelOmnibaseEnvelope) -> tuple[str, str]:
    """(node_id, service name) of an omnibase_core shutdown."""
    try:
        event = ModelOmnibaseShutdown.model_validate(envelope.payload)
    except ValidationError as error:
        raise AdmissionError(f"invalid omnibase_core shutdown: {_short(error)}") from error
    if event.event_type != EVENT_SHUTDOWN:
        raise AdmissionError(f"event_type {event.event_type[:80]!r}; expected {EVENT_SHUTDOWN!r}")
    return str(event.node_id), service_name_for(event.node_name)


def _short(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "(root)"
        parts.append(f"{where}: {item.get('msg', '')}")
    return "; ".join(parts)
