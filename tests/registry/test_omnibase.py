"""omnibase_core's discovery events (its envelope and models, 0.47.x wire shape) -> our view."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from onex_registry import omnibase
from onex_registry.admission import AdmissionError
from onex_registry.discovery import DiscoveryConsumer
from registry_fakes import Message, dead_reasons

NODE = "8f27fa8d-6592-4ffb-91fc-b3dd6529aef3"
SEMVER = {"major": 1, "minor": 0, "patch": 0, "prerelease": None, "build": None}

#: What omnibase_core 0.47.57's MixinIntrospectionPublisher wrote for a node class
#: NodeDemoEffect (json.dumps(envelope.model_dump(mode="json"))), ids kept.
INTROSPECTION: dict[str, Any] = {
    "payload": {
        "event_type": "node_introspection_event",
        "node_id": NODE,
        "metadata": None,
        "timestamp": "2026-11-29T14:40:18.657793",
        "event_id": "9c49cfe0-942c-4641-8973-fc077b4f25a2",
        "correlation_id": "4b0aea40-3d83-4c83-af82-07f0218026af",
        "data": None,
        "node_name": "node_demo_effect",
        "version": SEMVER,
        "node_type": "effect",
        "node_role": None,
        "capabilities": {
            "capability_id": "74a6653f-407a-419c-8a2d-f65461808f07",
            "capability_display_name": "NODE_DEMO_EFFECT_CAPABILITIES",
            "value": "node_node_demo_effect_capabilities",
            "description": "Capabilities for node_demo_effect: health_check",
            "version_introduced": SEMVER,
            "dependencies": [],
            "configuration_required": False,
            "performance_impact": "low",
            "deprecated": False,
            "replacement": None,
            "example_config": None,
        },
        "health_endpoint": f"/health/{NODE}",
        "tags": ["node", "event_driven"],
        "service_id": None,
        "datacenter": None,
        "description": None,
    },
    "envelope_id": "473c4423-0186-4dd1-a02d-505f894f20ee",
    "envelope_timestamp": "2026-11-29T14:40:18.711921Z",
    "correlation_id": "4b0aea40-3d83-4c83-af82-07f0218026af",
    "parent_envelope_id": None,
    "source_tool": NODE,
    "target_tool": None,
    "metadata": {
        "trace_id": None,
        "span_id": None,
        "parent_span_id": None,
        "request_id": None,
        "headers": {},
        "tags": {},
    },
    "security_context": None,
    "event_type": None,
    "payload_type": None,
    "payload_schema_version": None,
    "priority": 5,
    "timeout_seconds": None,
    "retry_count": 0,
    "request_id": None,
    "trace_id": None,
    "span_id": None,
    "tenant_id": None,
    "producer": None,
    "onex_version": SEMVER,
    "envelope_version": {**SEMVER, "major": 2, "minor": 3},
}


def now_text(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


def introspection(offset_s: float = 0, **payload: Any) -> dict[str, Any]:
    data = copy.deepcopy(INTROSPECTION)
    data["envelope_timestamp"] = now_text(offset_s)
    data["payload"].update(payload)
    return data


def wrap(payload: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(INTROSPECTION)
    data["envelope_timestamp"] = now_text()
    data["payload"] = payload
    return data


def test_the_mapping_of_an_introspection() -> None:
    raw = json.dumps(introspection()).encode()
    event, manifest = omnibase.map_introspection(omnibase.decode_envelope(raw), raw)
    assert event.node_id == uuid.UUID(NODE)
    assert (event.node_name, event.service_name, event.node_type) == (
        "NodeDemoEffect",
        "node-demo-effect",
        "effect",
    )
    assert event.version == "1.0.0" and event.domain == "omnibase"
    assert event.instance_id == NODE
    assert event.capabilities.actions == ["health_check"]
    assert event.health_endpoint is None  # a path only: checked by heartbeats instead
    assert event.capabilities.metadata["health_path"] == f"/health/{NODE}"
    assert event.tags == ["omnibase_core", "node", "event_driven"]
    kept = json.loads(manifest)
    assert kept["omnibase_core"]["envelope_version"]["major"] == 2  # unknown fields kept
    assert kept["omnibase_core"]["payload"]["capabilities"]["performance_impact"] == "low"
    assert kept["service_name"] == "node-demo-effect"


def test_semver_prerelease_and_build() -> None:
    version = omnibase.ModelOmnibaseSemVer(
        major=1, minor=2, patch=3, prerelease=["rc", 1], build="b7"
    )
    assert version.text() == "1.2.3-rc.1+b7"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"node_type": "gateway"}, "node_type"),
        ({"event_type": "something_else"}, "event_type"),
        ({"node_name": "___"}, "node_name"),
        ({"version": "1.0.0"}, "invalid omnibase_core introspection"),
    ],
)
def test_bad_omnibase_introspections_are_refused(changes: dict[str, Any], words: str) -> None:
    raw = json.dumps(introspection(**changes)).encode()
    with pytest.raises(AdmissionError, match=words):
        omnibase.map_introspection(omnibase.decode_envelope(raw), raw)


def message(role: str, data: dict[str, Any], key: str = NODE) -> Message:
    return Message(omnibase.topics()[role], json.dumps(data).encode(), key.encode())


async def test_an_omnibase_node_is_registered_heartbeats_and_leaves(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(message("introspection", introspection()))  # type: ignore[arg-type]
    record = consumer.view.records[NODE]
    reg = record.registration
    assert reg.name == "node-demo-effect" and reg.meta["source_format"] == "omnibase_core"
    assert "TTL" in reg.check  # no address announced: heartbeats feed its check
    beat = {
        "event_type": "onex.evt.node-heartbeat.v1",
        "node_name": "node_demo_effect",
        "node_version": SEMVER,
        "source_node_id": NODE,
        "uptime_seconds": 12.0,
        "timestamp": "2026-11-29T14:40:18",
    }
    record.last_seen -= 50
    await consumer._handle(message("heartbeat", wrap(beat)))  # type: ignore[arg-type]
    assert consumer.stats.heartbeats == 1 and record.last_seen > time.time() - 5
    assert record.pending_ttl == ("passing", "healthy; up 12s")
    bye = {
        "event_type": "node_shutdown_event",
        "node_id": NODE,
        "node_name": "node_demo_effect",
        "shutdown_reason": "graceful",
    }
    await consumer._handle(message("shutdown", wrap(bye)))  # type: ignore[arg-type]
    assert NODE not in consumer.view.records and NODE in consumer.view.removals
    assert consumer._publisher.dead == []  # type: ignore[attr-defined]


async def test_omnibase_records_get_the_same_checks(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(
        message("introspection", introspection(health_endpoint="http://169.254.169.254/latest"))  # type: ignore[arg-type]
    )
    await consumer._handle(message("introspection", introspection(), key="other"))  # type: ignore[arg-type]
    await consumer._handle(message("introspection", introspection(offset_s=86400 * 30)))  # type: ignore[arg-type]
    await consumer._handle(
        message("introspection", introspection(tags=[f"t{i}" for i in range(40)]))  # type: ignore[arg-type]
    )
    await consumer._handle(message("introspection", introspection()))  # type: ignore[arg-type]
    taken = introspection(node_name="node_other_effect")
    await consumer._handle(message("introspection", taken))  # type: ignore[arg-type]
    forged = {"event_type": "node_shutdown_event", "node_id": NODE, "node_name": "node_x"}
    await consumer._handle(message("shutdown", wrap(forged)))  # type: ignore[arg-type]
    errors = dead_reasons(consumer)
    assert len(errors) == 6, errors
    for words, error in zip(
        [
            "refused network 169.254.0.0/16",
            "differs from the payload's node_id",
            "in the future",
            "tags has",
            "bound to another live node",
            "must match the node's registration",
        ],
        errors,
        strict=True,
    ):
        assert words in error
    assert consumer.view.records[NODE].registration.name == "node-demo-effect"


async def test_garbage_on_an_omnibase_topic_is_dead_lettered(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(Message(omnibase.topics()["introspection"], b"{nope", b"k"))  # type: ignore[arg-type]
    assert "not an omnibase_core envelope" in dead_reasons(consumer)[0]
