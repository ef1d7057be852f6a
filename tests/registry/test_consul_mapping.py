"""Introspection event -> Consul registration: IDs, address, tags, meta budget, check."""

from __future__ import annotations

import re
import uuid

import pytest
from onex_registry.consul_registry import (
    FINGERPRINT_KEY,
    META_MAX_PAIRS,
    HealthEndpointError,
    RegistrySettings,
    build_registration,
    duration_seconds,
    meta_key,
    meta_value,
    parse_consul_addr,
)
from onex_registry.runtime import naming
from onex_registry.runtime.events import ModelNodeCapabilities, ModelNodeIntrospectionEvent
from pydantic import ValidationError
from registry_fakes import introspection

NODE_ID = naming.node_id_for("postgres-writer", "host-8001")


def event(**changes: object) -> ModelNodeIntrospectionEvent:
    base = introspection(
        instance="host-8001",
        description="Writes rows.",
        capabilities=ModelNodeCapabilities(actions=["write_row"], protocols=["kafka"]),
        tags=["database", "postgres"],
    )
    base.update(changes)
    return ModelNodeIntrospectionEvent.model_validate(base)


@pytest.fixture
def settings() -> RegistrySettings:
    return RegistrySettings(
        check_interval="3s", check_timeout="1s", deregister_after="2m", consul_http_addr="x:1"
    )


def test_ids_name_address_and_kv_key(settings: RegistrySettings) -> None:
    reg = build_registration(event(), settings)
    assert reg.service_id == naming.consul_service_id("postgres-writer", NODE_ID)
    assert reg.service_id == f"postgres-writer-{NODE_ID}"
    assert reg.name == "postgres-writer"
    assert (reg.address, reg.port) == ("127.0.0.1", 8001)
    assert reg.kv_key == f"onex/nodes/{NODE_ID}"
    manifest = ModelNodeIntrospectionEvent.model_validate_json(reg.manifest)
    assert manifest.model_dump(exclude={"correlation_id"}) == event().model_dump(
        exclude={"correlation_id"}
    )


def test_http_check_uses_configured_timings(settings: RegistrySettings) -> None:
    check = build_registration(event(), settings).check
    assert check["HTTP"] == "http://127.0.0.1:8001/health"
    assert check["Interval"] == "3s"
    assert check["Timeout"] == "1s"
    assert check["DeregisterCriticalServiceAfter"] == "2m"
    assert "TTL" not in check


def test_without_health_endpoint_a_ttl_check_fed_by_heartbeats(settings: RegistrySettings) -> None:
    reg = build_registration(event(health_endpoint=None), settings)
    assert reg.address is None and reg.port is None
    assert reg.check["TTL"] == settings.heartbeat_ttl
    assert reg.check["DeregisterCriticalServiceAfter"] == "2m"
    assert not reg.uses_http_check


def test_default_ports_and_ipv6_host(settings: RegistrySettings) -> None:
    assert (
        build_registration(event(health_endpoint="https://node.example/health"), settings).port
        == 443
    )
    reg = build_registration(event(health_endpoint="http://[::1]:9000/health"), settings)
    assert (reg.address, reg.port) == ("::1", 9000)


@pytest.mark.parametrize(
    "url", ["ftp://h/health", "not a url", "http:///health", "http://h:99999/x"]
)
def test_bad_health_endpoint_is_refused(settings: RegistrySettings, url: str) -> None:
    with pytest.raises(HealthEndpointError, match="health_endpoint"):
        build_registration(event(health_endpoint=url), settings)


def test_tags_type_domain_then_own_tags_deduplicated_and_valid(settings: RegistrySettings) -> None:
    reg = build_registration(
        event(tags=["postgres", "effect", "bad tag!", "postgres", "x:y"]), settings
    )
    assert reg.tags == ("effect", "database", "postgres", "x:y")


def test_meta_carries_identity(settings: RegistrySettings) -> None:
    meta = build_registration(event(), settings).meta
    assert meta["node_id"] == str(NODE_ID)
    assert meta["node_name"] == "PostgresqlWriter"
    assert meta["node_type"] == "effect"
    assert meta["version"] == "0.1.0"
    assert meta["domain"] == "database"
    assert meta["instance_id"] == "host-8001"
    assert meta["actions"] == "write_row"
    assert meta["manifest_key"] == f"onex/nodes/{NODE_ID}"


def test_meta_stays_within_consul_limits_for_hostile_input(settings: RegistrySettings) -> None:
    hostile_meta = {f"consul-key {i} ✓" + "k" * 200: "ü" * 400 for i in range(200)}
    ev = event(
        description="é" * 5000,
        capabilities=ModelNodeCapabilities(actions=["a"] * 300, metadata=hostile_meta),
    )
    meta = build_registration(ev, settings).meta
    assert len(meta) <= META_MAX_PAIRS
    assert FINGERPRINT_KEY in meta
    for key, value in meta.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", key), key
        assert not key.lower().startswith("consul-")
        assert len(value.encode()) <= 512
    # The full text is not lost: it is in the KV manifest.
    assert "é" * 5000 in build_registration(ev, settings).manifest


def test_meta_helpers() -> None:
    assert meta_key("consul-x") == "x-consul-x"
    assert meta_key("a b.c") == "a_b_c"
    assert len(meta_key("k" * 300)) == 128
    cut = meta_value("€" * 300)  # 900 bytes
    assert len(cut.encode()) <= 512 and cut.endswith("…")
    assert meta_value("short") == "short"


def test_same_event_same_fingerprint_changed_event_new_one(settings: RegistrySettings) -> None:
    a = build_registration(event(), settings)
    b = build_registration(event(), settings)
    c = build_registration(event(version="0.2.0"), settings)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.service_id == c.service_id


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_CHECK_INTERVAL", "7s")
    monkeypatch.setenv("REGISTRY_CHECK_TIMEOUT", "500ms")
    monkeypatch.setenv("REGISTRY_DEREGISTER_AFTER", "90s")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:18500")
    s = RegistrySettings()
    assert (s.check_interval, s.check_timeout, s.deregister_after) == ("7s", "500ms", "90s")
    assert s.consul_endpoint() == ("http", "127.0.0.1", 18500)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("deregister_after", "30s", "below Consul's 1m floor"),
        ("check_interval", "10", "not a duration"),
        ("check_timeout", "20s", "exceeds"),
    ],
)
def test_settings_refuse_bad_timings(field: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RegistrySettings(**{field: value})


def test_durations_and_addresses() -> None:
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("250ms") == 0.25
    assert parse_consul_addr("https://c:1234") == ("https", "c", 1234)
    assert parse_consul_addr("c") == ("http", "c", 8500)
    with pytest.raises(ValueError, match="CONSUL_HTTP_ADDR"):
        parse_consul_addr("ftp://c")


def test_node_id_is_stable_per_instance() -> None:
    assert (
        naming.node_id_for("a", "i") == naming.node_id_for("a", "i") != naming.node_id_for("a", "j")
    )
    assert isinstance(NODE_ID, uuid.UUID)


def test_the_template_version_a_node_announces_goes_into_meta(
    settings: RegistrySettings,
) -> None:
    announced = event(capabilities=ModelNodeCapabilities(metadata={"template_version": "v0.3.0"}))
    meta = build_registration(announced, settings).meta
    assert meta["template_version"] == "v0.3.0"
