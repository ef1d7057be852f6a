"""A node written with omnibase_core announces itself with its own publisher and appears in
Consul; its shutdown removes it.

omnibase-core needs Python 3.12: `nox -s e2e` makes a 3.12 environment with omnibase-core
0.47.x and confluent-kafka and names its interpreter in ONEX_OMNIBASE_PYTHON. The node below
uses omnibase_core's own MixinIntrospectionPublisher, ModelEventEnvelope and event models; the
one piece it needs from its host, an event bus, is the smallest Kafka one (omnibase_core ships
none): it writes ``json.dumps(envelope.model_dump(mode="json"))`` keyed by the node id, as
omnibase's buses do.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from helpers import unavailable
from registry_helpers import ConsulHttp, registry_url, wait_for

from onex_scaffold.devstack.registry import probe_registry
from onex_scaffold.devstack.testing import StackAddresses

PYTHON_VAR = "ONEX_OMNIBASE_PYTHON"

NODE_SCRIPT = textwrap.dedent(
    '''
    """One omnibase_core node: announce, heartbeat or shut down (argv[1]), then exit."""

    import json
    import sys
    import uuid

    import omnibase_core
    from confluent_kafka import Producer
    from omnibase_core.mixins.mixin_introspection_publisher import MixinIntrospectionPublisher
    from omnibase_core.models.discovery.model_node_shutdown_event import ModelNodeShutdownEvent
    from omnibase_core.models.events.contract_registration.model_node_heartbeat_event import (
        ModelNodeHeartbeatEvent,
    )
    from omnibase_core.models.events.model_event_envelope import ModelEventEnvelope
    from omnibase_core.models.primitives.model_semver import ModelSemVer

    TOPICS = {
        "node_introspection_event": "onex.evt.platform.node-introspection.v1",
        "node_shutdown_event": "onex.evt.platform.node-shutdown.v1",
    }
    HEARTBEATS = "onex.evt.platform.node-heartbeat.v1"


    class KafkaEventBus:
        """The host's event bus: omnibase_core calls publish(envelope)."""

        def __init__(self, servers):
            self.producer = Producer({"bootstrap.servers": servers, "acks": "all"})

        def publish(self, envelope):
            payload = envelope.payload
            topic = TOPICS.get(payload.event_type, HEARTBEATS)
            node = getattr(payload, "node_id", None) or getattr(payload, "source_node_id", None)
            value = json.dumps(envelope.model_dump(mode="json"))
            self.producer.produce(topic, value=value, key=str(node or envelope.source_tool))
            if self.producer.flush(15) != 0:
                raise RuntimeError("not delivered")


    class NodeDemoOmnibaseEffect(MixinIntrospectionPublisher):
        def __init__(self, node_id, bus):
            self._node_id = node_id
            self.event_bus = bus

        def get_node_type(self):
            return "effect"

        def health_check(self):
            return True


    action, servers, node_id = sys.argv[1], sys.argv[2], uuid.UUID(sys.argv[3])
    bus = KafkaEventBus(servers)
    node = NodeDemoOmnibaseEffect(node_id, bus)
    name = node._extract_node_name()
    if action == "announce":
        node._publish_introspection_event()
    elif action == "heartbeat":
        beat = ModelNodeHeartbeatEvent(
            node_name=name,
            node_version=ModelSemVer(major=1, minor=0, patch=0),
            source_node_id=node_id,
            uptime_seconds=3.0,
        )
        bus.publish(ModelEventEnvelope.create_broadcast(payload=beat, source_node_id=node_id))
    elif action == "shutdown":
        bye = ModelNodeShutdownEvent.create_graceful_shutdown(node_id=node_id, node_name=name)
        bus.publish(ModelEventEnvelope.create_broadcast(payload=bye, source_node_id=node_id))
    print(json.dumps({"node_name": name, "omnibase_core": omnibase_core.__version__}))
    '''
)


@pytest.fixture(scope="module")
def omnibase_python() -> str:
    python = os.environ.get(PYTHON_VAR)
    if not python:
        unavailable(f"{PYTHON_VAR} names no Python 3.12 with omnibase-core (nox -s e2e sets it)")
        raise AssertionError("unreachable")
    return python


def run_node(python: str, script: Path, action: str, servers: str, node_id: str) -> dict[str, str]:
    out = subprocess.run(
        [python, str(script), action, servers, node_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"{action} failed:\n{out.stdout}\n{out.stderr[-3000:]}"
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_an_omnibase_core_node_appears_in_consul(
    stack: StackAddresses, omnibase_python: str, tmp_path: Path
) -> None:
    url = registry_url()
    if url is None or probe_registry(url) is not None:
        unavailable("the registry of the dev stack is not ready")
    consul = ConsulHttp(stack)
    script = tmp_path / "omnibase_node.py"
    script.write_text(NODE_SCRIPT)
    node_id = str(uuid.uuid4())
    servers = stack.kafka_bootstrap_servers
    info = run_node(omnibase_python, script, "announce", servers, node_id)
    assert info["omnibase_core"].startswith("0.47."), info
    service = "node-demo-omnibase-effect"
    service_id = f"{service}-{node_id}"
    try:
        wait_for("registered in Consul", lambda: consul.status(service_id) == "passing", 30)
        registered = consul.service(service_id)
        assert registered is not None and registered["Service"] == service
        meta = registered["Meta"]
        assert meta["source_format"] == "omnibase_core"
        assert meta["node_id"] == node_id and meta["node_type"] == "effect"
        assert meta["node_name"] == "NodeDemoOmnibaseEffect" and meta["version"] == "1.0.0"
        assert "omnibase_core" in registered["Tags"]
        manifest = consul.kv(f"onex/nodes/{node_id}")
        assert manifest is not None
        original = manifest["omnibase_core"]
        assert original["payload"]["node_name"] == info["node_name"]
        assert "envelope_version" in original  # omnibase's own fields, kept as they came
        check = consul.check(service_id)
        assert check is not None and check["Type"] == "ttl"  # it announced a path, not a URL
        run_node(omnibase_python, script, "heartbeat", servers, node_id)
    finally:
        run_node(omnibase_python, script, "shutdown", servers, node_id)
    wait_for("gone from Consul after its shutdown", lambda: consul.status(service_id) is None, 30)
    wait_for("manifest deleted", lambda: consul.kv(f"onex/nodes/{node_id}") is None, 15)
