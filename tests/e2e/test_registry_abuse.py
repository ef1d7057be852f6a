"""The registry under abuse, on the real stack: nothing reaches Consul that should not, and one
bad record stops nothing.

Needs `onex-node dev up` (Kafka, Consul and the registry). Each test writes to the discovery
topics what an attacker or an unlucky node could, and checks Consul itself and the dead-letter
topics. Health endpoints are on loopback (the dev stack allows only loopback); the link-local
ones are tested inside a private network namespace (test_registry_ssrf.py).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import dev_root, unavailable
from registry_helpers import (
    ENV,
    ConsulHttp,
    ModelEventEnvelope,
    ModelEventSource,
    announce,
    dead_letters,
    envelope,
    fake_introspection,
    find_record,
    health_server,
    naming,
    produce_record,
    producer,
    reader,
    registry_ready,
    registry_restarted_with,
    registry_url,
    say_goodbye,
    start_node,
    wait_for,
)
from test_registry import SERVICE, writer_project  # noqa: F401 - the shared fixture

from onex_scaffold.devstack.registry import probe_registry
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.devstack.testing import StackAddresses

INTRO, BEAT, BYE = (
    naming.introspection_topic(ENV),
    naming.heartbeat_topic(ENV),
    naming.shutdown_topic(ENV),
)
DLQ = [naming.dead_letter_topic(t) for t in (INTRO, BEAT, BYE)]


@pytest.fixture(scope="module")
def registry(stack: StackAddresses) -> str:
    url = registry_url()
    if url is None or probe_registry(url) is not None:
        unavailable("the registry of the dev stack is not ready")
        raise AssertionError("unreachable")
    return url


@pytest.fixture(scope="module")
def consul(stack: StackAddresses) -> ConsulHttp:
    return ConsulHttp(stack)


def service_id(event: Any) -> str:
    return naming.consul_service_id(event.service_name, event.node_id)


def dated(event_type: str, payload: dict[str, Any], offset_s: float) -> bytes:
    return ModelEventEnvelope(
        event_type=event_type,
        source=ModelEventSource(service="e2e-test", instance_id="e2e"),
        timestamp=datetime.now(UTC) + timedelta(seconds=offset_s),
        payload=payload,
    ).to_bytes()


def health_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_a_malformed_health_url_is_dead_lettered_and_never_wedges_the_registry(
    stack: StackAddresses, consul: ConsulHttp, registry: str
) -> None:
    """`http://[/h` once killed the consumer; after a restart it replayed and wedged it."""
    prod = producer(stack)
    run = uuid.uuid4().hex[:8]
    poison = fake_introspection("e2e-poison-url", f"p-{run}", None).model_copy(
        update={"health_endpoint": "http://[/h"}
    )
    with health_server() as base, reader(stack, DLQ, from_beginning=False) as dlq:
        good = fake_introspection("e2e-after-poison", f"g-{run}", base)
        announce(prod, poison)
        announce(prod, good)
        try:
            wait_for(
                "the next node passing", lambda: consul.status(service_id(good)) == "passing", 30
            )
            letters = dead_letters(dlq, {str(poison.node_id)})
            assert "not a URL" in letters[str(poison.node_id)]["error"]
            assert health_status(registry) == 200
            # The poison stays in the compacted topic: a restarted registry replays it and
            # still works (and does not dead-letter it a second time).
            Stack(dev_root()).restart("registry")
            url = registry_ready()
            later = fake_introspection("e2e-after-restart", f"l-{run}", base)
            announce(prod, later)
            wait_for(
                "a node after the restart",
                lambda: consul.status(service_id(later)) == "passing",
                30,
            )
            assert health_status(url) == 200
            again = [
                m
                for m in dlq.consume(num_messages=500, timeout=2)
                if m.error() is None and (m.key() or b"").decode() == str(poison.node_id)
            ]
            assert again == [], "the replayed poison was dead-lettered again"
            say_goodbye(prod, later)
        finally:
            say_goodbye(prod, good)
            produce_record(prod, INTRO, None, str(poison.node_id))  # tombstone the poison


def test_takeover_of_a_live_node_id_is_dead_lettered(
    stack: StackAddresses, consul: ConsulHttp, registry: str
) -> None:
    prod = producer(stack)
    with health_server() as base, reader(stack, DLQ, from_beginning=False) as dlq:
        real = fake_introspection("e2e-victim", f"v-{uuid.uuid4().hex[:8]}", base)
        announce(prod, real)
        sid = service_id(real)
        try:
            wait_for("victim passing", lambda: consul.status(sid) == "passing", 30)
            port = int(base.rsplit(":", 1)[1])
            hijack = real.model_copy(
                update={"health_endpoint": f"http://127.0.0.2:{port}/steal", "version": "6.6.6"}
            )
            # same node_id, another address; and a record keyed by another node's id
            announce(prod, hijack)
            mislabeled = fake_introspection("e2e-victim", "other", base)
            value = envelope(naming.EVENT_NODE_INTROSPECTION, mislabeled.model_dump(mode="json"))
            produce_record(prod, INTRO, value, f"x-{real.node_id}")
            letters = dead_letters(dlq, {str(real.node_id), f"x-{real.node_id}"})
            assert "bound to another live node" in letters[str(real.node_id)]["error"]
            assert "differs from the payload's node_id" in letters[f"x-{real.node_id}"]["error"]
            time.sleep(1.5)
            service = consul.service(sid)
            assert service is not None
            assert service["Address"] == "127.0.0.1" and service["Meta"]["version"] == "0.0.1"
        finally:
            say_goodbye(prod, real)
        wait_for("victim gone", lambda: consul.status(sid) is None, 15)


def test_future_dated_and_forged_shutdowns_cannot_remove_or_pin_a_node(
    stack: StackAddresses, consul: ConsulHttp, registry: str
) -> None:
    prod = producer(stack)
    with health_server() as base, reader(stack, DLQ, from_beginning=False) as dlq:
        node = fake_introspection("e2e-pinned", f"n-{uuid.uuid4().hex[:8]}", base)
        sid, key = service_id(node), str(node.node_id)
        year = 365 * 86400.0
        # An announcement from next year would make every real announcement look older.
        produce_record(
            prod,
            INTRO,
            dated(naming.EVENT_NODE_INTROSPECTION, node.model_dump(mode="json"), year),
            key,
        )
        letters = dead_letters(dlq, {key})
        assert "in the future" in letters[key]["error"]
        announce(prod, node)
        try:
            wait_for("node passing", lambda: consul.status(sid) == "passing", 30)
            bye = {
                "node_id": key,
                "service_name": node.service_name,
                "instance_id": node.instance_id,
            }
            forged = {**bye, "instance_id": "attacker"}
            produce_record(prod, BYE, dated(naming.EVENT_NODE_SHUTDOWN, bye, year), key)
            produce_record(prod, BYE, envelope(naming.EVENT_NODE_SHUTDOWN, forged), key)
            seen: list[str] = []
            deadline = time.monotonic() + 30
            while len(seen) < 2 and time.monotonic() < deadline:
                for m in dlq.consume(num_messages=100, timeout=0.2):
                    if m.error() is None and (m.key() or b"").decode() == key:
                        seen.append(json.loads(m.value())["payload"]["error"])
            assert len(seen) == 2, seen
            assert any("in the future" in r for r in seen)
            assert any("must match the node's registration" in r for r in seen)
            time.sleep(1.5)
            assert consul.status(sid) == "passing"
        finally:
            say_goodbye(prod, node)  # the real goodbye still works
        wait_for("node gone after its real shutdown", lambda: consul.status(sid) is None, 15)


def test_unknown_heartbeats_do_not_flood_the_request_topic(
    stack: StackAddresses, registry: str
) -> None:
    prod = producer(stack)
    request_topic = naming.introspection_request_topic(ENV)
    count = 400
    with reader(stack, [request_topic], from_beginning=False) as requests:
        started = time.monotonic()
        for i in range(count):
            node_id = uuid.uuid4()
            beat = {
                "node_id": str(node_id),
                "service_name": f"ghost-{i}",
                "instance_id": "g",
                "status": "healthy",
                "uptime_s": 1,
            }
            prod.produce(BEAT, value=envelope(naming.EVENT_NODE_HEARTBEAT, beat), key=str(node_id))
        assert prod.flush(15) == 0
        time.sleep(3)
        elapsed = time.monotonic() - started
        sent = [
            m
            for m in requests.consume(num_messages=1000, timeout=1)
            if m.error() is None and b"unknown node heartbeat" in (m.value() or b"")
        ]
    # defaults: a burst of 10, then 2 per second
    allowed = 10 + 2 * elapsed + 2
    print(f"\n{count} heartbeats of unknown services -> {len(sent)} requests in {elapsed:.1f} s")
    assert 1 <= len(sent) <= allowed, (len(sent), allowed)


def test_oversized_announcements_are_dead_lettered(
    stack: StackAddresses, consul: ConsulHttp, registry: str
) -> None:
    prod = producer(stack)
    run = uuid.uuid4().hex[:8]
    with health_server() as base, reader(stack, DLQ, from_beginning=False) as dlq:
        tags = fake_introspection("e2e-huge", f"tags-{run}", base)
        tags = tags.model_copy(update={"tags": [f"t{i}" for i in range(20_002)]})
        many = fake_introspection("e2e-huge", f"many-{run}", base)
        many = many.model_copy(update={"tags": [f"t{i}" for i in range(33)]})
        manifest = fake_introspection("e2e-huge", f"manifest-{run}", base)
        meta = {f"k{i}": "é" * 512 for i in range(48)}  # each value at its 1 KiB limit
        manifest = manifest.model_copy(
            update={
                "description": "😀" * 4000,
                "capabilities": manifest.capabilities.model_copy(update={"metadata": meta}),
            }
        )
        big = fake_introspection("e2e-huge", f"big-{run}", base)
        big = big.model_copy(update={"description": "d" * 900_000})
        for event in (tags, many, manifest, big):
            announce(prod, event)
        letters = dead_letters(dlq, {str(e.node_id) for e in (tags, many, manifest, big)})
        assert "bytes" in letters[str(tags.node_id)]["error"]
        assert "tags has 33 entries" in letters[str(many.node_id)]["error"]
        assert "manifest has" in letters[str(manifest.node_id)]["error"]
        assert "record has" in letters[str(big.node_id)]["error"]
        for event in (tags, many, manifest, big):
            assert consul.status(service_id(event)) is None
            produce_record(prod, INTRO, None, str(event.node_id))


def test_large_manifests_are_batched_by_bytes_and_every_node_registers(
    stack: StackAddresses, consul: ConsulHttp, registry: str
) -> None:
    """64 nodes with 40 KB manifests make a 3.4 MB transaction when batched by count only;
    Consul refuses anything over 512 KiB."""
    prod = producer(stack)
    run = uuid.uuid4().hex[:8]
    with health_server() as base:
        events = []
        for i in range(64):
            event = fake_introspection("e2e-big-manifest", f"{run}-{i}", base)
            meta = {f"k{j}": "é" * 500 for j in range(40)}
            events.append(
                event.model_copy(
                    update={
                        "description": "long " * 700,
                        "capabilities": event.capabilities.model_copy(update={"metadata": meta}),
                    }
                )
            )
        assert len(events[0].model_dump_json().encode()) > 40_000
        wanted = {service_id(e) for e in events}
        for event in events:
            announce(prod, event, flush=False)
        assert prod.flush(30) == 0
        try:
            wait_for("all 64 registered", lambda: wanted <= consul.managed_ids(), 60, 0.2)
            manifest = consul.kv(naming.consul_kv_key(str(events[-1].node_id)))
            assert manifest is not None and manifest["description"] == events[-1].description
        finally:
            for event in events:
                say_goodbye(prod, event, flush=False)
            assert prod.flush(30) == 0
        wait_for("all gone", lambda: not (wanted & consul.managed_ids()), 60, 0.2)


def test_silent_records_and_orphaned_manifests_expire(
    stack: StackAddresses, consul: ConsulHttp, registry: str
) -> None:
    prod = producer(stack)
    node = fake_introspection("e2e-expiring", f"x-{uuid.uuid4().hex[:8]}", None)
    sid, key = service_id(node), str(node.node_id)
    orphan = naming.consul_kv_key(str(uuid.uuid4()))
    request = urllib.request.Request(
        f"{consul.url}/v1/kv/{orphan}", data=b'{"left": "behind"}', method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass
    with registry_restarted_with(
        REGISTRY_NODE_TTL_S="10", REGISTRY_RECORD_TTL_S="12", REGISTRY_EXPIRY_INTERVAL_S="1"
    ):
        with reader(stack, [INTRO], from_beginning=False) as intro:
            announce(prod, node)  # no heartbeats follow: the node is silent
            wait_for("registered", lambda: consul.status(sid) is not None, 40)
            started = time.monotonic()
            tombstone = find_record(
                intro, lambda m: (m.key() or b"").decode() == key and m.value() is None, 60
            )
            assert tombstone is not None
            print(f"\nsilent node tombstoned {time.monotonic() - started:.1f} s after registering")
        wait_for("deregistered", lambda: consul.status(sid) is None, 40)
        wait_for("manifest deleted", lambda: consul.kv(naming.consul_kv_key(key)) is None, 40)
        wait_for("orphaned manifest deleted", lambda: consul.kv(orphan) is None, 40)


def test_with_a_discovery_key_only_signed_records_count(
    stack: StackAddresses,
    consul: ConsulHttp,
    registry: str,
    database_url: str,
    writer_project: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from onex_registry.runtime.signing import DiscoverySigner

    key = uuid.uuid4().hex + uuid.uuid4().hex
    prod = producer(stack)
    signer = DiscoverySigner.from_text(key, ENV)
    with (
        registry_restarted_with(ONEX_DISCOVERY_KEY=f"{key},{'old-key-' + 'x' * 24}"),
        health_server() as base,
        reader(stack, DLQ, from_beginning=False) as dlq,
    ):
        unsigned = fake_introspection("e2e-signed", f"u-{uuid.uuid4().hex[:8]}", base)
        signed = fake_introspection("e2e-signed", f"s-{uuid.uuid4().hex[:8]}", base)
        announce(prod, unsigned)
        value = envelope(naming.EVENT_NODE_INTROSPECTION, signed.model_dump(mode="json"))
        skey = str(signed.node_id)
        headers = signer.signed_headers(INTRO, skey, value, None)
        produce_record(prod, INTRO, value, skey, headers)
        try:
            wait_for(
                "signed node passing", lambda: consul.status(service_id(signed)) == "passing", 30
            )
            letters = dead_letters(dlq, {str(unsigned.node_id)})
            assert "no onex_signature header" in letters[str(unsigned.node_id)]["error"]
            assert consul.status(service_id(unsigned)) is None
            # an unsigned (forged) tombstone and shutdown remove nothing
            produce_record(prod, INTRO, None, skey)
            bye = {
                "node_id": skey,
                "service_name": signed.service_name,
                "instance_id": signed.instance_id,
            }
            produce_record(prod, BYE, envelope(naming.EVENT_NODE_SHUTDOWN, bye), skey)
            time.sleep(2)
            assert consul.status(service_id(signed)) == "passing"
            # A generated node given the key signs its announcement, heartbeats and goodbye.
            node = start_node(
                writer_project, SERVICE, stack, tmp_path, extra_env={"ONEX_DISCOVERY_KEY": key}
            )
            try:
                wait_for(
                    "signing node passing", lambda: consul.status(node.service_id) == "passing", 60
                )
            finally:
                assert node.stop() == 0, node.log()
            wait_for("signing node gone", lambda: consul.status(node.service_id) is None, 15)
        finally:
            bye = {
                "node_id": skey,
                "service_name": signed.service_name,
                "instance_id": signed.instance_id,
            }
            value = envelope(naming.EVENT_NODE_SHUTDOWN, bye)
            produce_record(prod, BYE, value, skey, signer.signed_headers(BYE, skey, value, None))
            produce_record(prod, INTRO, None, skey, signer.signed_headers(INTRO, skey, None, None))
            produce_record(prod, INTRO, None, str(unsigned.node_id))
        wait_for("signed node gone", lambda: consul.status(service_id(signed)) is None, 15)
