"""The names and shapes the design document shows: derived topics, envelope metadata with
trace context that flows through a handler, the introspection event's constructor and
defaults, the announced template version, CloudEvents ``ce_time``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import NODE_TYPES, Broker, RenderedNode, running


def _modules(node: RenderedNode) -> tuple[Any, Any, Any]:
    return (
        node.module("runtime.naming"),
        node.module("runtime.events"),
        node.module("runtime.testing"),
    )


# -- topic derivation (pure) ---------------------------------------------------


@pytest.mark.parametrize("node_type", list(NODE_TYPES))
def test_a_node_s_own_event_types_derive_the_topics_it_uses(
    node_type: str, rendered: dict[str, RenderedNode]
) -> None:
    naming = rendered[node_type].module("runtime.naming")
    service = NODE_TYPES[node_type]["service_name"]
    for outcome in naming.OUTCOMES[node_type]:
        event_type = naming.node_event_type("sales", service, outcome)
        assert naming.event_topic("prod", event_type) == naming.node_event_topic(
            "prod", service, outcome
        )
    assert naming.event_topic(
        "prod", naming.command_event_type("sales", service)
    ) == naming.command_topic("prod", service)


def test_discovery_event_types_derive_the_discovery_topics(
    rendered: dict[str, RenderedNode],
) -> None:
    naming = rendered["effect"].module("runtime.naming")
    assert naming.event_topic("dev", naming.EVENT_NODE_INTROSPECTION) == (
        naming.introspection_topic("dev")
    )
    assert naming.event_topic("dev", naming.EVENT_NODE_HEARTBEAT) == naming.heartbeat_topic("dev")
    assert naming.event_topic("dev", naming.EVENT_NODE_SHUTDOWN) == naming.shutdown_topic("dev")
    assert naming.event_topic("dev", naming.EVENT_INTROSPECTION_REQUESTED) == (
        naming.introspection_request_topic("dev")
    )
    assert naming.event_topic("dev", "omninode.billing.response.invoice_sent.v3") == (
        "dev.omninode_bridge.onex.rsp.invoice-sent.v3"
    )
    assert naming.event_topic("dev", "omninode.billing.audit.invoice_sent.v1") == (
        "dev.omninode_bridge.onex.aud.invoice-sent.v1"
    )


@pytest.mark.parametrize(
    "event_type",
    [
        "omninode.system.dead_letter.v1",  # dead letters go per source topic
        "omninode.billing.gossip.invoice_sent.v1",  # unknown kind
        "billing.event.invoice_sent.v1",
        "omninode.billing.event.invoice_sent",
        "omninode.Billing.event.invoice_sent.v1",
    ],
)
def test_event_types_off_the_convention_are_refused_naming_the_rule(
    rendered: dict[str, RenderedNode], event_type: str
) -> None:
    naming = rendered["effect"].module("runtime.naming")
    with pytest.raises(ValueError, match=r"pass topic= explicitly"):
        naming.event_topic("dev", event_type)


# -- introspection event (pure) -------------------------------------------------


def test_create_from_node_info_fills_metadata_and_default_tags(
    rendered: dict[str, RenderedNode],
) -> None:
    events = rendered["effect"].module("runtime.events")
    node_id = uuid.uuid4()
    event = events.ModelNodeIntrospectionEvent.create_from_node_info(
        node_id=node_id,
        node_name="NodePostgresqlWriterEffect",
        version="1.0.0",
        node_type="effect",
        service_name="postgres-writer",
        domain="database",
        instance_id="i-1",
        actions=["execute_effect", "validate_input"],
        metadata={"owner": "team-a", "domain": "spoofed"},
        health_endpoint="http://127.0.0.1:8000/health",
        template_version="v0.2.0-3-gabc1234",
    )
    assert event.node_name == "NodePostgresqlWriterEffect"
    assert event.capabilities.actions == ["execute_effect", "validate_input"]
    assert event.capabilities.protocols == ["kafka", "http"]
    assert event.capabilities.metadata == {
        "owner": "team-a",
        "node_type": "effect",
        "domain": "database",  # the node's own values win over given metadata
        "service_name": "postgres-writer",
        "template_version": "v0.2.0-3-gabc1234",
    }
    assert event.template_version == "v0.2.0-3-gabc1234"
    assert event.tags == ["database", "effect", "postgres-writer"]
    named = events.ModelNodeIntrospectionEvent.create_from_node_info(
        node_id=node_id,
        node_name="NodePostgresqlWriterEffect",
        version="1.0.0",
        node_type="effect",
        service_name="postgres-writer",
        domain="database",
        instance_id="i-1",
        tags=["postgresql", "writer"],
    )
    assert named.tags == ["postgresql", "writer"]
    assert named.template_version is None
    # A round trip through the wire keeps every field.
    assert events.ModelNodeIntrospectionEvent.model_validate_json(event.model_dump_json()) == event


def test_template_version_is_read_from_the_answers_file(
    rendered: dict[str, RenderedNode], tmp_path: Path
) -> None:
    provenance = rendered["effect"].module("runtime.provenance")
    answers = tmp_path / ".copier-answers.yml"
    answers.write_text(
        "# Changes here will be overwritten\n_commit: v0.3.0-4-gabc1234\n_src_path: x\n"
    )
    assert provenance.template_version("", [answers]) == "v0.3.0-4-gabc1234"
    answers.write_text("_commit: 'v1.2.0'\n")
    assert provenance.template_version("", [answers]) == "v1.2.0"
    assert provenance.template_version("override-1", [answers]) == "override-1"
    answers.write_text("_commit: $(rm -rf /)\n")
    assert provenance.template_version("", [answers, tmp_path / "absent.yml"]) == "unknown"
    # The rendered project itself records the commit it came from.
    rendered_answers = rendered["effect"].path / ".copier-answers.yml"
    assert provenance.read_commit(rendered_answers)


def test_a_bad_template_version_setting_names_the_variable(
    rendered: dict[str, RenderedNode], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = rendered["effect"].module("runtime.config")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEMPLATE_VERSION", "v1 ; rm")
    with pytest.raises(ValueError, match="TEMPLATE_VERSION must be"):
        config.NodeSettings()


# -- against a broker ----------------------------------------------------------------


@pytest.mark.parametrize("node_type", list(NODE_TYPES))
async def test_announcement_has_the_design_s_shape_and_the_template_version(
    node_type: str, rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered[node_type]
    naming, _, testing = _modules(project)
    node = project.node_class()()
    reader = testing.TopicReader(
        broker.bootstrap, [naming.introspection_topic(node_env["KAFKA_ENVIRONMENT"])]
    )
    answers = NODE_TYPES[node_type]
    async with running(node, reader):
        key = str(node.identity.node_id).encode()
        [record] = await reader.wait_for(lambda m: m.key() == key, timeout_s=20)
        payload = testing.envelope_of(record).payload
        assert payload["node_name"] == project.class_name
        metadata = payload["capabilities"]["metadata"]
        assert metadata["node_type"] == node_type
        assert metadata["domain"] == payload["domain"]
        assert metadata["service_name"] == answers["service_name"]
        # Rendered with no tags: the defaults.
        assert payload["tags"] == [payload["domain"], node_type, answers["service_name"]]
        # The node runs from a temporary folder (node_env chdir), so it finds its answers
        # file next to its package: the rendered commit.
        provenance = project.module("runtime.provenance")
        expected = provenance.read_commit(project.path / ".copier-answers.yml")
        assert expected and metadata["template_version"] == expected
        _, body = await testing.http_request(node.health_endpoint)
        assert json.loads(body)["template_version"] == expected


async def test_publish_without_topic_derives_it_and_records_carry_ce_time(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["effect"]
    naming, events, testing = _modules(project)
    publisher_mod = project.module("runtime.publisher")
    env = node_env["KAFKA_ENVIRONMENT"]
    publisher = publisher_mod.EventPublisher(broker.bootstrap, "rt-writer", "i-1", environment=env)
    event_type = naming.node_event_type("sales", "rt-writer", "completed")
    reader = testing.TopicReader(
        broker.bootstrap, [naming.node_event_topic(env, "rt-writer", "completed")]
    )
    try:
        sent = await publisher.publish(event_type, {"n": 1}, uuid.uuid4(), extra={"tenant": "t1"})
        [record] = await reader.wait_for(lambda m: True, timeout_s=20)
        got = testing.envelope_of(record)
        assert got == sent
        assert got.metadata.extra == {"tenant": "t1"}
        assert got.metadata.parent_span_id is None  # outside a handler: a new trace
        headers = dict(record.headers() or [])
        assert headers["ce_time"] == events.timestamp_text(sent.timestamp).encode()
        many = await publisher.publish_many(event_type, [{"n": 2}, {"n": 3}])
        records = (await reader.wait_for(lambda m: True, count=3, timeout_s=20))[1:]
        assert [testing.envelope_of(r).payload["n"] for r in records] == [2, 3]
        assert len({e.metadata.span_id for e in many}) == 2
        assert len({e.metadata.trace_id for e in many}) == 1
        assert all("ce_time" in dict(r.headers() or []) for r in records)
        with pytest.raises(ValueError, match="pass topic= explicitly"):
            await publisher.publish("not.a.convention", {})
    finally:
        await publisher.close()
        reader.close()


async def test_trace_context_flows_from_a_command_to_its_result(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["effect"]
    naming, events, testing = _modules(project)
    node = project.node_class()()
    reader = testing.TopicReader(broker.bootstrap, [node.topics["completed"]])
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running(node, reader):
        await testing.send_event(
            broker.bootstrap,
            node.topics["command"],
            naming.command_event_type("general", "rt-writer"),
            {"action": "execute_effect", "data": {"row": 1}},
            key="traced",
            metadata=events.ModelEventMetadata(trace_id=trace_id, span_id=span_id),
        )
        await testing.send_event(
            broker.bootstrap,
            node.topics["command"],
            naming.command_event_type("general", "rt-writer"),
            {"action": "execute_effect", "data": {"row": 2}},
            key="untraced",
        )
        records = await reader.wait_for(lambda m: True, count=2, timeout_s=30)
        by_key = {r.key(): testing.envelope_of(r) for r in records}
        traced = by_key[b"traced"].metadata
        assert traced.trace_id == trace_id
        assert traced.parent_span_id == span_id
        assert traced.span_id not in (None, span_id)
        # A command without trace context starts a trace of its own.
        untraced = by_key[b"untraced"].metadata
        assert untraced.trace_id not in (None, trace_id)
        assert untraced.span_id


def test_envelopes_without_metadata_or_with_unknown_fields_are_read(
    rendered: dict[str, RenderedNode],
) -> None:
    events = rendered["effect"].module("runtime.events")
    older = (
        b'{"event_id":"0f0e0d0c-0b0a-4908-8706-050403020100","event_type":"t",'
        b'"correlation_id":"0f0e0d0c-0b0a-4908-8706-050403020101","causation_id":null,'
        b'"timestamp":"2026-01-02T03:04:05Z","schema_version":"1.0.0",'
        b'"source":{"service":"s","instance_id":"i","hostname":"h"},"payload":{"a":1}}'
    )
    envelope = events.ModelEventEnvelope.from_bytes(older)
    assert envelope.metadata == events.ModelEventMetadata()
    assert envelope.payload == {"a": 1}
    newer = older[:-1] + b',"added_later":{"x":1}}'
    assert events.ModelEventEnvelope.from_bytes(newer) == envelope
    # Trace ids are checked: a record with a malformed one is no valid envelope.
    bad = older.replace(b'"payload"', b'"metadata":{"trace_id":"zz"},"payload"')
    with pytest.raises(ValueError, match="trace_id"):
        events.ModelEventEnvelope.from_bytes(bad)
