"""What the registry refuses before anything reaches Consul: addresses, sizes, clocks."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest
from onex_registry.admission import (
    DEFAULT_REFUSED_NETWORKS,
    MAX_MANIFEST_BYTES,
    MAX_METADATA_PAIRS,
    MAX_TAGS,
    AddressPolicy,
    AdmissionError,
    check_clock,
    check_record_size,
    check_sizes,
    parse_health_url,
    parse_legacy_ipv4,
)
from onex_registry.consul_registry import (
    META_MAX_PAIRS,
    META_VALUE_MAX_BYTES,
    RegistrySettings,
    build_registration,
)
from onex_registry.runtime.events import ModelNodeIntrospectionEvent
from registry_fakes import introspection

DEFAULT = AddressPolicy.from_text("", DEFAULT_REFUSED_NETWORKS)


def refused(url: str, policy: AddressPolicy = DEFAULT) -> str:
    with pytest.raises(AdmissionError) as caught:
        policy.check(parse_health_url(url))
    return str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1:8080/h",
        "http://[fe80::1]/h",
        "http://[FE80::abcd:1]:80/h",
        "http://[::ffff:169.254.169.254]/h",  # IPv4-mapped
        "http://[::ffff:a9fe:a9fe]/h",  # IPv4-mapped, hex
        "http://[::169.254.169.254]/h",  # IPv4-compatible
        "http://[64:ff9b::a9fe:a9fe]/h",  # NAT64
        "http://[2002:a9fe:a9fe::1]/h",  # 6to4
        "http://[fd00:ec2::254]/h",  # AWS metadata over IPv6
        "http://0.0.0.0:8500/h",  # Go dials it as the local host
        "http://[::]:8500/h",
        "http://100.100.100.200/h",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_by_default(url: str) -> None:
    assert "refused" in refused(url)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://2852039166/h", "169.254.169.254"),  # decimal
        ("http://0xa9fea9fe/h", "169.254.169.254"),  # hex
        ("http://0251.0376.0251.0376/h", "169.254.169.254"),  # octal
        ("http://0xa9.0xfe.0xa9.0xfe/h", "169.254.169.254"),
        ("http://169.254.43518/h", "169.254.169.254"),  # a.b.c16
        ("http://169.16689662/h", "169.254.169.254"),  # a.b24
        ("http://0177.1/h", "127.0.0.1"),
        ("http://169.254.169.254./h", "169.254.169.254"),  # trailing dot, still an address
    ],
)
def test_odd_ipv4_spellings_are_read_as_addresses_and_refused(url: str, address: str) -> None:
    host = url.split("/")[2]
    assert str(parse_legacy_ipv4(host.rstrip("."))) == address
    if url.endswith("169.254.169.254./h"):
        assert "refused" in refused(url)
    else:
        assert "non-standard form" in refused(url)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[/h", "not a URL"),
        ("http://127.0.0.1:99999/h", "not a URL"),
        ("http://127.0.0.1:0/h", "port 0"),
        ("ftp://127.0.0.1/h", "http or https"),
        ("http://user:pw@127.0.0.1/h", "user info"),
        ("http://169%2e254%2e169%2e254/h", "percent-escape"),
        ("http://[fe80::1%25eth0]/h", "percent-escape"),
        ("http:///h", "no host"),
        ("http://exa mple.com/h", "spaces"),
        ("http://ex_ample.com/h", "neither an IP address nor a DNS name"),
        ("http://a.b.0x10/h", "looks like a number"),
        ("http://127.0.0.1/h\\x", "backslash"),
        ("http://127.0.0.1/" + "a" * 3000, "characters"),
    ],
)
def test_malformed_health_urls_are_refused_with_the_reason(url: str, words: str) -> None:
    with pytest.raises(AdmissionError) as caught:
        parse_health_url(url)
    assert words in str(caught.value)


def test_the_allow_list_admits_only_its_networks() -> None:
    policy = AddressPolicy.from_text("127.0.0.0/8, ::1/128", DEFAULT_REFUSED_NETWORKS)
    policy.check(parse_health_url("http://127.0.0.1:8000/health"))
    policy.check(parse_health_url("http://[::1]:8000/health"))
    policy.check(parse_health_url("http://[::ffff:127.0.0.1]:8000/health"))
    assert "outside the allowed networks" in refused("http://10.0.0.5/h", policy)
    # refused networks win over allowed ones
    wide = AddressPolicy.from_text("0.0.0.0/0", DEFAULT_REFUSED_NETWORKS)
    assert "refused network" in refused("http://169.254.169.254/h", wide)


def test_names_are_judged_by_what_they_resolve_to() -> None:
    endpoint = parse_health_url("http://metadata.internal/computeMetadata")
    assert endpoint.is_name
    with pytest.raises(AdmissionError, match="resolves to it"):
        DEFAULT.check(endpoint, [ipaddress.ip_address("169.254.169.254")])
    with pytest.raises(AdmissionError, match="does not resolve"):
        DEFAULT.check(endpoint, [])
    DEFAULT.check(endpoint, [ipaddress.ip_address("10.1.2.3")])


def test_bad_network_settings_name_the_variable() -> None:
    with pytest.raises(ValueError, match="REGISTRY_ALLOWED_NETWORKS"):
        RegistrySettings(allowed_networks="10.0.0.0/8,nonsense")


def event(**changes: Any) -> ModelNodeIntrospectionEvent:
    base = introspection("writer", node_id=uuid.uuid4(), node_name="Writer")
    base.update(changes)
    return ModelNodeIntrospectionEvent.model_validate(base)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"tags": [f"t{i}" for i in range(20_002)]}, "tags has 20002 entries"),
        ({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, f"at most {MAX_TAGS}"),
        ({"capabilities": {"actions": ["ok", "Not Ok"]}}, "capabilities.actions entry"),
        ({"capabilities": {"actions": [f"a{i}" for i in range(65)]}}, "capabilities.actions"),
        (
            {"capabilities": {"metadata": {f"k{i}": "v" for i in range(MAX_METADATA_PAIRS + 1)}}},
            "capabilities.metadata has",
        ),
        ({"capabilities": {"metadata": {"k": "é" * 600}}}, "1200 bytes"),
        ({"capabilities": {"metadata": {"k" * 129: "v"}}}, "metadata key has 129"),
        ({"capabilities": {"protocols": ["p" * 65]}}, "protocols entry has 65"),
        ({"description": "d" * 4001}, "description has 4001"),
        ({"description": "bell\x07"}, "control characters"),
        ({"instance_id": "i" * 201}, "instance_id has 201"),
        ({"instance_id": ""}, "instance_id is empty"),
        ({"node_name": "lower"}, "node_name"),
        ({"version": "1.0"}, "version"),
    ],
)
def test_oversized_or_invalid_fields_are_refused(changes: dict[str, Any], words: str) -> None:
    candidate = event(**changes)
    with pytest.raises(AdmissionError) as caught:
        check_sizes(candidate, len(candidate.model_dump_json()))
    assert words in str(caught.value)


def test_a_big_manifest_and_a_big_record_are_refused() -> None:
    with pytest.raises(AdmissionError, match="manifest has"):
        check_sizes(event(), MAX_MANIFEST_BYTES + 1)
    with pytest.raises(AdmissionError, match="record has 1200000 bytes"):
        check_record_size(b"x" * 1_200_000)
    check_record_size(None)  # a tombstone


def test_every_field_at_its_limit_fits_consul_meta() -> None:
    limits = event(
        tags=[f"t{i}" for i in range(MAX_TAGS)],
        description="d" * 4000,
        capabilities={
            "actions": [f"a{i}" for i in range(64)],
            "protocols": ["p" * 64] * 16,
            "metadata": {f"k{i:03d}" + "x" * 120: "é" * 512 for i in range(MAX_METADATA_PAIRS)},
        },
    )
    manifest = limits.model_dump_json()
    check_sizes(limits, len(manifest.encode()))
    registration = build_registration(limits, RegistrySettings())
    assert len(registration.meta) <= META_MAX_PAIRS
    assert all(len(v.encode()) <= META_VALUE_MAX_BYTES for v in registration.meta.values())
    assert len(manifest.encode()) < MAX_MANIFEST_BYTES


def test_clock_skew_is_bounded() -> None:
    check_clock(1000.0 + 59, 1000.0, 60, "x")
    check_clock(1000.0 - 86400, 1000.0, 60, "x")  # the past is fine: ordering ignores it
    with pytest.raises(AdmissionError, match="3600s in the future"):
        check_clock(1000.0 + 3600, 1000.0, 60, "the shutdown event")
