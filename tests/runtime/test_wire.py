"""The publish hot path writes exactly what ``ModelEventEnvelope`` writes (no broker).

The publisher builds each record's JSON without a validation pass; these tests build the
same event through the validated model and compare bytes, then decode through the model.
"""

from __future__ import annotations

import enum
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from .conftest import RenderedNode


class Colour(enum.Enum):
    RED = "red"


ODD_PAYLOADS: list[dict[str, Any]] = [
    {},
    {"n": 1, "f": 2.5, "t": True, "none": None, "big": 2**70, "neg": -0.0},
    {"text": "Grüße, 日本語, emoji 🚀, rtl עברית", "ключ": "значение"},
    {"ctrl": "tab\tnl\ncr\rnul\x00bell\x07esc\x1b del\x7f", "ls": "\u2028\u2029", "q": '"\\/'},
    {"nested": {"a": [1, [2, [3, {"b": {"c": []}}]]], "d": {"e": {}}}},
    {"when": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)},
    {"whole_second": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
    {"offset": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))},
    {"naive": datetime(2026, 1, 2, 3, 4, 5, 6), "day": date(2026, 2, 28), "at": time(1, 2, 3)},
    {"id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "ids": [uuid.uuid4(), uuid.uuid1()]},
    {"money": Decimal("10.10"), "tiny": Decimal("1E-30"), "colour": Colour.RED},
    {"nan": math.nan, "inf": math.inf, "minus_inf": -math.inf},
    {"bytes": b"raw bytes", "tuple": (1, "two"), "frozen": frozenset()},
    {"long": "x" * 100_000},
]


@pytest.fixture
def modules(rendered: dict[str, RenderedNode]) -> Any:
    project = rendered["effect"]

    class Modules:
        events = project.module("runtime.events")
        publisher = project.module("runtime.publisher")
        event_records = project.module("runtime.event_records")

    return Modules


def reference(events: Any, envelope: Any, payload: dict[str, Any]) -> Any:
    """The same event built through the validated model."""
    return events.ModelEventEnvelope(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
        timestamp=envelope.timestamp,
        schema_version=envelope.schema_version,
        source=events.ModelEventSource(
            service=envelope.source.service,
            instance_id=envelope.source.instance_id,
            hostname=envelope.source.hostname,
        ),
        metadata=events.ModelEventMetadata(
            trace_id=envelope.metadata.trace_id,
            span_id=envelope.metadata.span_id,
            parent_span_id=envelope.metadata.parent_span_id,
            extra=envelope.metadata.extra,
        ),
        payload=payload,
    )


@pytest.mark.parametrize("payload", ODD_PAYLOADS, ids=range(len(ODD_PAYLOADS)))
@pytest.mark.parametrize("causation", [None, uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100")])
def test_hot_path_bytes_equal_the_models_bytes(
    modules: Any, payload: dict[str, Any], causation: uuid.UUID | None
) -> None:
    events, publisher_mod = modules.events, modules.publisher
    publisher = publisher_mod.EventPublisher("127.0.0.1:1", "wire-svc", "inst-1")
    correlation = uuid.uuid4()
    envelope, value, headers = publisher._encode(
        "omninode.wire.event.tested.v1",
        payload,
        modules.event_records.correlation_pair(correlation),
        causation,
    )
    model = reference(events, envelope, payload)
    assert value == model.to_bytes()
    assert value == envelope.to_bytes()
    decoded = events.ModelEventEnvelope.from_bytes(value)
    assert decoded.event_id == envelope.event_id
    assert decoded.correlation_id == correlation
    assert decoded.causation_id == causation
    assert decoded.timestamp == envelope.timestamp
    assert decoded.to_bytes() == value  # stable through a decode/encode round trip
    # The returned envelope is the model a validated construction gives.
    assert envelope == events.ModelEventEnvelope.model_validate(envelope.model_dump())
    assert envelope.model_fields_set == model.model_fields_set
    assert dict(headers)["ce_id"] == str(envelope.event_id)
    assert dict(headers)["ce_type"] == "omninode.wire.event.tested.v1"


@pytest.mark.parametrize(
    "event_type", ["a", "omninode.discovery.node_introspection.v1", 'q"uote\\back', "ü" * 255]
)
@pytest.mark.parametrize(
    ("service", "instance"), [("svc", "i-1"), ('we"ird\\name', "ÿ\n"), ("日本", "🚀")]
)
def test_event_type_and_source_are_escaped_like_the_model(
    modules: Any, event_type: str, service: str, instance: str
) -> None:
    events, publisher_mod = modules.events, modules.publisher
    publisher = publisher_mod.EventPublisher("127.0.0.1:1", service, instance)
    envelope, value, _ = publisher._encode(event_type, {"k": "v"}, None, None)
    assert value == reference(events, envelope, {"k": "v"}).to_bytes()
    assert events.ModelEventEnvelope.from_bytes(value).source.service == service


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 26, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 26, 0, 0, 0, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    ],
)
def test_timestamps_are_written_like_the_model(modules: Any, moment: datetime) -> None:
    events = modules.events
    model = events.ModelEventEnvelope(
        event_type="t",
        source=events.ModelEventSource(service="s", instance_id="i"),
        timestamp=moment,
    )
    written = model.model_dump_json().split('"timestamp":"')[1].split('"')[0]
    assert events.timestamp_text(moment) == written


def test_ids_are_random_version_4_uuids(modules: Any) -> None:
    events = modules.events
    ids = [events.new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:200]:
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
        assert hash(value) == hash(uuid.UUID(int=value.int))
        assert events.uuid_text(value.int) == str(value)


def test_payloads_pydantic_cannot_write_are_refused_with_a_clear_error(modules: Any) -> None:
    publisher = modules.publisher.EventPublisher("127.0.0.1:1", "svc", "i")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        publisher._encode("t.e", {"bad": object()}, None, None)


@pytest.mark.parametrize("event_type", ["", "x" * 256])
def test_event_type_length_rule_is_the_models(modules: Any, event_type: str) -> None:
    publisher = modules.publisher.EventPublisher("127.0.0.1:1", "svc", "i")
    with pytest.raises(ValueError, match="1 to 255"):
        publisher._encode(event_type, {}, None, None)


def test_cloudevents_headers_of_a_prebuilt_envelope_match_the_hot_path(modules: Any) -> None:
    publisher_mod = modules.publisher
    publisher = publisher_mod.EventPublisher("127.0.0.1:1", "svc", "inst")
    envelope, _, headers = publisher._encode("t.e", {}, None, None)
    slow = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
    fast = [
        (k, v.encode() if isinstance(v, str) else v)
        for k, v in publisher_mod.cloudevents_headers(envelope)
    ]
    assert slow == fast


def test_envelope_for_publish_envelope_is_a_valid_model(modules: Any) -> None:
    events, publisher_mod = modules.events, modules.publisher
    publisher = publisher_mod.EventPublisher("127.0.0.1:1", "svc", "inst")
    correlation = uuid.uuid4()
    envelope = publisher.envelope("t.e", {"when": date(2026, 1, 1)}, correlation_id=correlation)
    assert envelope.correlation_id == correlation
    assert envelope == reference(events, envelope, {"when": date(2026, 1, 1)})
    assert envelope.to_bytes() == reference(events, envelope, {"when": date(2026, 1, 1)}).to_bytes()
    with pytest.raises(ValueError, match="1 to 255"):
        publisher.envelope("", {})
