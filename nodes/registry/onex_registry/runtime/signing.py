"""Signed discovery records: an HMAC-SHA256 header over the record, optional.

When ``ONEX_DISCOVERY_KEY`` is set, a node signs every record it writes to the
discovery topics (introspection, its tombstone, heartbeat, shutdown) and the
registry accepts only records signed with that key. Unset (the default, the
dev stack too), nothing is signed or checked.

The variable holds one key or several separated by commas: a node signs with
the first, the registry accepts any of them, so a key is rotated by giving the
registry ``new,old``, then the nodes ``new``, then the registry ``new`` alone.

The signature covers the topic's role, the record key and the value (a
tombstone's missing value is distinct from an empty one), so a signed record
cannot be moved to another discovery topic or given another key.
Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final

from . import naming

SIGNATURE_HEADER: Final = "onex_signature"
KEY_VARIABLE: Final = "ONEX_DISCOVERY_KEY"
#: Shorter keys are refused: HMAC-SHA256 wants at least 128 bits of secret.
MIN_KEY_BYTES: Final = 16
_SCHEME: Final = "v1="
_CONTEXT: Final = b"onex-discovery-record-v1"

Headers = list[tuple[str, str | bytes | None]]


class DiscoveryKeyError(ValueError):
    """``ONEX_DISCOVERY_KEY`` holds a key that is too short or empty."""


def parse_keys(text: str) -> tuple[bytes, ...]:
    """``key1,key2`` -> the keys (UTF-8 bytes), first the one to sign with."""
    keys = tuple(part.strip().encode() for part in text.split(",") if part.strip())
    if not keys:
        raise DiscoveryKeyError(f"{KEY_VARIABLE} is set but holds no key")
    short = [i for i, key in enumerate(keys, 1) if len(key) < MIN_KEY_BYTES]
    if short:
        raise DiscoveryKeyError(
            f"{KEY_VARIABLE}: key {', '.join(map(str, short))} has fewer than {MIN_KEY_BYTES} "
            "bytes; use e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return keys


def _part(data: bytes | None) -> bytes:
    if data is None:
        return b"\xff"  # a missing value (tombstone), not an empty one
    return len(data).to_bytes(8, "big") + data


def signature(key: bytes, role: str, record_key: bytes | None, value: bytes | None) -> str:
    """The header value for one record."""
    message = b"".join((_CONTEXT, _part(role.encode()), _part(record_key), _part(value)))
    return _SCHEME + hmac.new(key, message, hashlib.sha256).hexdigest()


def _as_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


class DiscoverySigner:
    """Signs (node side) and verifies (registry side) the records of the discovery topics."""

    def __init__(self, keys: Sequence[bytes], environment: str) -> None:
        if not keys:
            raise DiscoveryKeyError("a discovery signer needs at least one key")
        self.keys = tuple(keys)
        topics = naming.discovery_topics(environment)
        #: topic -> role; only these topics are signed.
        self.roles: dict[str, str] = {
            topics[role]: role for role in ("introspection", "heartbeat", "shutdown")
        }

    @classmethod
    def from_text(cls, text: str, environment: str) -> DiscoverySigner:
        return cls(parse_keys(text), environment)

    def signed_headers(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> Headers | None:
        """``headers`` plus the signature when ``topic`` is a discovery topic (else as given)."""
        role = self.roles.get(topic)
        if role is None:
            return headers
        sig = signature(self.keys[0], role, _as_bytes(key), value)
        return [*(headers or []), (SIGNATURE_HEADER, sig)]

    def verify(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
    ) -> str:
        """``""`` when the record carries a valid signature by one of the keys, else why not."""
        role = self.roles.get(topic)
        if role is None:
            return f"{topic} is not a signed discovery topic"
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        found = [v for name, v in items if name == SIGNATURE_HEADER]
        if not found:
            return f"the record has no {SIGNATURE_HEADER} header and a discovery key is set"
        if len(found) > 1:
            return f"the record has {len(found)} {SIGNATURE_HEADER} headers; one is expected"
        given = _as_bytes(found[0]) or b""
        for candidate in self.keys:
            expected = signature(candidate, role, key, value).encode()
            if hmac.compare_digest(expected, given):
                return ""
        return f"the {SIGNATURE_HEADER} header does not match any discovery key"
