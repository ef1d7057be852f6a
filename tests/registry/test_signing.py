"""Signed discovery records (runtime/signing.py): what a node writes, what the registry accepts."""

from __future__ import annotations

import pytest
from onex_registry.runtime import naming
from onex_registry.runtime.signing import (
    SIGNATURE_HEADER,
    DiscoveryKeyError,
    DiscoverySigner,
    parse_keys,
)

ENV = "unit"
KEY = b"k" * 32
OLD = b"o" * 32


def test_a_signed_record_verifies_and_any_change_breaks_it() -> None:
    signer = DiscoverySigner([KEY], ENV)
    topic = naming.heartbeat_topic(ENV)
    headers = signer.signed_headers(topic, "node-1", b'{"a":1}', [("ce_type", "x")])
    assert headers is not None and headers[0] == ("ce_type", "x")
    assert signer.verify(topic, b"node-1", b'{"a":1}', headers) == ""
    assert "does not match" in signer.verify(topic, b"node-2", b'{"a":1}', headers)
    assert "does not match" in signer.verify(topic, b"node-1", b'{"a":2}', headers)
    # moved to another discovery topic: the role is signed too
    assert "does not match" in signer.verify(
        naming.shutdown_topic(ENV), b"node-1", b'{"a":1}', headers
    )
    assert "does not match" in DiscoverySigner([OLD], ENV).verify(
        topic, b"node-1", b'{"a":1}', headers
    )


def test_tombstones_are_signed_and_differ_from_empty_values() -> None:
    signer = DiscoverySigner([KEY], ENV)
    topic = naming.introspection_topic(ENV)
    headers = signer.signed_headers(topic, b"n", None, None)
    assert signer.verify(topic, b"n", None, headers) == ""
    assert signer.verify(topic, b"n", b"", headers) != ""


def test_unsigned_duplicated_and_foreign_topics() -> None:
    signer = DiscoverySigner([KEY], ENV)
    topic = naming.shutdown_topic(ENV)
    assert "no onex_signature header" in signer.verify(topic, b"n", b"v", None)
    headers = signer.signed_headers(topic, b"n", b"v", None)
    assert headers is not None
    assert "2 onex_signature headers" in signer.verify(topic, b"n", b"v", headers * 2)
    # other topics are not signed at all (a node's own events cost nothing extra)
    assert signer.signed_headers("dev.other", b"n", b"v", None) is None


def test_rotation_the_registry_accepts_old_and_new() -> None:
    topic = naming.introspection_topic(ENV)
    old_node = DiscoverySigner(parse_keys(OLD.decode()), ENV)
    new_node = DiscoverySigner(parse_keys(KEY.decode()), ENV)
    registry = DiscoverySigner(parse_keys(f"{KEY.decode()}, {OLD.decode()}"), ENV)
    for node in (old_node, new_node):
        headers = node.signed_headers(topic, b"n", b"v", None)
        assert registry.verify(topic, b"n", b"v", headers) == ""
    assert registry.keys[0] == KEY  # nodes given the same list sign with the first


@pytest.mark.parametrize("text", ["", " , ", "short", f"{'a' * 32},tiny"])
def test_weak_or_empty_keys_are_refused(text: str) -> None:
    with pytest.raises(DiscoveryKeyError, match="ONEX_DISCOVERY_KEY"):
        parse_keys(text)


def test_headers_as_kafka_gives_them() -> None:
    signer = DiscoverySigner([KEY], ENV)
    topic = naming.heartbeat_topic(ENV)
    headers = signer.signed_headers(topic, b"n", b"v", None)
    assert headers is not None
    as_bytes = [
        (name, value.encode() if isinstance(value, str) else value) for name, value in headers
    ]
    assert signer.verify(topic, b"n", b"v", as_bytes) == ""
    assert signer.verify(topic, b"n", b"v", dict(as_bytes)) == ""
    assert SIGNATURE_HEADER in dict(as_bytes)
