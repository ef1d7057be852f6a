"""What the registry lets in from the bus: sizes, addresses, clocks. Pure, no I/O.

Anyone who can write to the discovery topics can try to put anything into
Consul. Every record goes through these checks before it changes the view; a
record that fails one is dead-lettered with the message of ``AdmissionError``,
which names the field and the rule. The limits are documented in
docs/registry.md and docs/security.md; they sit well inside Consul's own
(Meta: 64 pairs, keys <= 128 characters, values <= 512 bytes; KV values 512 KiB;
a transaction 512 KiB and 64 operations).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import Final

from .runtime import naming
from .runtime.events import ModelNodeIntrospectionEvent

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AdmissionError(ValueError):
    """A record the registry refuses; the message names the field and the rule."""


# ---------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------

#: A whole discovery record (the Kafka value), checked before it is parsed.
MAX_RECORD_BYTES: Final = 128 * 1024
#: The KV manifest of one node (its announcement as JSON). Consul takes 512 KiB per value
#: and per transaction; 64 KiB keeps eight full manifests within one transaction.
MAX_MANIFEST_BYTES: Final = 64 * 1024
MAX_TAGS: Final = 32
MAX_ACTIONS: Final = 64
MAX_PROTOCOLS: Final = 16
MAX_PROTOCOL_CHARS: Final = 64
#: 15 Meta pairs are the registry's own; 48 more fit under Consul's 64.
MAX_METADATA_PAIRS: Final = 48
MAX_METADATA_KEY_CHARS: Final = 128
MAX_METADATA_VALUE_BYTES: Final = 1024
MAX_DESCRIPTION_CHARS: Final = 4000
MAX_INSTANCE_ID_CHARS: Final = 200
MAX_VERSION_CHARS: Final = 64
MAX_URL_CHARS: Final = 2048
MAX_SHORT_TEXT_CHARS: Final = 256

_PRINTABLE: Final = re.compile(r"[^\x00-\x1f\x7f]*")


def _printable(field: str, value: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise AdmissionError(f"{field} has {len(value)} characters; at most {max_chars} allowed")
    if not _PRINTABLE.fullmatch(value):
        raise AdmissionError(f"{field} holds control characters; only printable text is allowed")


def _count(field: str, items: Sized, limit: int) -> None:
    if len(items) > limit:
        raise AdmissionError(f"{field} has {len(items)} entries; at most {limit} allowed")


def check_sizes(event: ModelNodeIntrospectionEvent, manifest_bytes: int) -> None:
    """Refuse an announcement with a field over its limit or breaking its naming rule."""
    problems = [
        f"{rule} {msg}"
        for rule, value in (
            ("node_name", event.node_name),
            ("service_name", event.service_name),
            ("domain", event.domain),
            ("version", event.version),
        )
        if (msg := naming.check(rule, value))
    ]
    if problems:
        raise AdmissionError("; ".join(problems))
    _printable("version", event.version, MAX_VERSION_CHARS)
    _printable("instance_id", event.instance_id, MAX_INSTANCE_ID_CHARS)
    if not event.instance_id:
        raise AdmissionError("instance_id is empty; a node always announces its instance id")
    _printable("description", event.description, MAX_DESCRIPTION_CHARS)
    caps = event.capabilities
    _count("tags", event.tags, MAX_TAGS)
    for tag in event.tags:
        _printable("a tag", tag, MAX_SHORT_TEXT_CHARS)
    _count("capabilities.actions", caps.actions, MAX_ACTIONS)
    for action in caps.actions:
        if msg := naming.check("action", action):
            raise AdmissionError(f"capabilities.actions entry {action[:80]!r} {msg}")
    _count("capabilities.protocols", caps.protocols, MAX_PROTOCOLS)
    for protocol in caps.protocols:
        _printable("a capabilities.protocols entry", protocol, MAX_PROTOCOL_CHARS)
    _count("capabilities.metadata", caps.metadata, MAX_METADATA_PAIRS)
    for key, value in caps.metadata.items():
        _printable("a capabilities.metadata key", key, MAX_METADATA_KEY_CHARS)
        if len(value.encode()) > MAX_METADATA_VALUE_BYTES:
            raise AdmissionError(
                f"capabilities.metadata[{key[:80]!r}] has {len(value.encode())} bytes; "
                f"at most {MAX_METADATA_VALUE_BYTES} allowed"
            )
    if event.health_endpoint is not None:
        _printable("health_endpoint", event.health_endpoint, MAX_URL_CHARS)
    if manifest_bytes > MAX_MANIFEST_BYTES:
        raise AdmissionError(
            f"the manifest has {manifest_bytes} bytes; at most {MAX_MANIFEST_BYTES} allowed"
        )


def check_record_size(value: bytes | None) -> None:
    if value is not None and len(value) > MAX_RECORD_BYTES:
        raise AdmissionError(
            f"the record has {len(value)} bytes; discovery records are at most "
            f"{MAX_RECORD_BYTES} bytes"
        )


# ---------------------------------------------------------------------------
# Health endpoints: where the Consul agent will send a request every interval
# ---------------------------------------------------------------------------

#: Refused unless the operator says otherwise (REGISTRY_REFUSED_NETWORKS): link-local (cloud
#: metadata services live there), the unspecified and multicast ranges (Go dials 0.0.0.0 as
#: the local host), and the cloud metadata addresses outside link-local (AWS IPv6, Alibaba).
DEFAULT_REFUSED_NETWORKS: Final = (
    "169.254.0.0/16,fe80::/10,0.0.0.0/8,::/128,224.0.0.0/4,255.255.255.255/32,ff00::/8,"
    "fd00:ec2::254/128,100.100.100.200/32"
)

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME: Final = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_PATH: Final = re.compile(r"[\x21-\x7e]*")
#: A last label of digits or 0x...: inet_aton would read the name as an address.
_NUMERIC_TAIL: Final = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")


def parse_networks(text: str, variable: str) -> tuple[IPNetwork, ...]:
    """``10.0.0.0/8, fd00::/8`` -> networks; a bad entry names the variable."""
    networks: list[IPNetwork] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as error:
            raise ValueError(
                f"{variable}: {item!r} is not a network; write CIDRs like 10.0.0.0/8 or "
                f"fd00::/8, separated by commas ({error})"
            ) from error
    return tuple(networks)


_DECIMAL: Final = re.compile(r"[1-9][0-9]*")
_HEX: Final = re.compile(r"0[xX][0-9A-Fa-f]*")
_OCTAL: Final = re.compile(r"0[0-7]*")


def parse_legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any form ``inet_aton`` accepts (``2852039166``, ``0xa9fea9fe``,
    ``0251.0376.0251.0376``, ``169.254.43518``), or None when ``text`` is not one."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        if _DECIMAL.fullmatch(part):
            numbers.append(int(part))
        elif _HEX.fullmatch(part):
            numbers.append(int(part[2:] or "0", 16))
        elif _OCTAL.fullmatch(part):
            numbers.append(int(part, 8))
        else:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d (deprecated IPv4-compatible)
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if address in _NAT64:
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class HealthEndpoint:
    """A checked health URL: ``host`` is an IP literal or a DNS name still to be resolved."""

    url: str
    host: str
    port: int
    address: IPAddress | None  # None for a DNS name

    @property
    def is_name(self) -> bool:
        return self.address is None


def parse_health_url(url: str) -> HealthEndpoint:
    """Parse strictly: http(s), no user info, no percent-escapes or odd characters in the host,
    IPv4 only as a.b.c.d, IPv6 without a zone, a port in 1-65535."""
    if len(url) > MAX_URL_CHARS:
        raise AdmissionError(f"health_endpoint has {len(url)} characters; at most {MAX_URL_CHARS}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise AdmissionError(
            f"health_endpoint {url[:200]!r} is not a URL ({error}); announce "
            "http://host:port/health"
        ) from error
    if parts.scheme not in ("http", "https"):
        raise AdmissionError(
            f"health_endpoint {url[:200]!r} must use http or https, e.g. "
            "http://10.0.0.5:8000/health"
        )
    netloc = parts.netloc
    if "@" in netloc or "%" in netloc or "\\" in url:
        raise AdmissionError(
            f"health_endpoint {url[:200]!r} holds user info, a percent-escape or a backslash "
            "in its address; announce a plain host and port"
        )
    if not _PATH.fullmatch(url):
        raise AdmissionError(f"health_endpoint {url[:200]!r} holds spaces or non-ASCII characters")
    host = parts.hostname or ""
    if not host:
        raise AdmissionError(f"health_endpoint {url[:200]!r} has no host")
    default_port = 443 if parts.scheme == "https" else 80
    if port == 0:
        raise AdmissionError(f"health_endpoint {url[:200]!r} has port 0")
    resolved_port = port or default_port
    if netloc.startswith("["):
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError as error:
            raise AdmissionError(
                f"health_endpoint {url[:200]!r}: {host!r} is not an IPv6 address (zones "
                "such as %eth0 are refused)"
            ) from error
        return HealthEndpoint(url, host, resolved_port, v6)
    bare = host[:-1] if host.endswith(".") else host
    legacy = parse_legacy_ipv4(bare)
    if legacy is not None:
        if bare != str(legacy):
            raise AdmissionError(
                f"health_endpoint {url[:200]!r} spells the IPv4 address {legacy} in a "
                "non-standard form; write it as a.b.c.d"
            )
        return HealthEndpoint(url, str(legacy), resolved_port, legacy)
    if len(bare) > 253 or not _HOSTNAME.fullmatch(bare):
        raise AdmissionError(
            f"health_endpoint {url[:200]!r}: {host[:80]!r} is neither an IP address nor a "
            "DNS name (letters, digits, '-' and '.')"
        )
    if _NUMERIC_TAIL.fullmatch(bare.rsplit(".", 1)[-1]):
        raise AdmissionError(
            f"health_endpoint {url[:200]!r}: {host[:80]!r} looks like a number, which "
            "resolvers read as an address; write the address as a.b.c.d"
        )
    return HealthEndpoint(url, bare.lower(), resolved_port, None)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a health endpoint may point at."""

    allowed: tuple[IPNetwork, ...] = ()  # empty: any address that is not refused
    refused: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_text(cls, allowed: str, refused: str) -> AddressPolicy:
        return cls(
            allowed=parse_networks(allowed, "REGISTRY_ALLOWED_NETWORKS"),
            refused=parse_networks(refused, "REGISTRY_REFUSED_NETWORKS"),
        )

    def problem(self, address: IPAddress) -> str:
        """``""`` when ``address`` may be checked by Consul, else why not."""
        candidates: list[IPAddress] = [address]
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
        for candidate in candidates:
            for network in self.refused:
                if candidate.version == network.version and candidate in network:
                    spelled = f" (written {address})" if candidate is not address else ""
                    return f"{candidate}{spelled} is in the refused network {network}"
        if self.allowed:
            target = inner if inner is not None else address
            if not any(target.version == n.version and target in n for n in self.allowed):
                allowed = ", ".join(str(n) for n in self.allowed)
                return f"{target} is outside the allowed networks ({allowed})"
        return ""

    def check(self, endpoint: HealthEndpoint, resolved: Iterable[IPAddress] = ()) -> None:
        """Refuse the endpoint when its address (or any address its name resolves to) is
        refused or outside the allowed networks."""
        addresses = [endpoint.address] if endpoint.address is not None else list(resolved)
        if endpoint.address is None and not addresses:
            raise AdmissionError(
                f"health_endpoint {endpoint.url[:200]!r}: {endpoint.host!r} does not resolve; "
                "announce an address the registry can check"
            )
        for address in addresses:
            reason = self.problem(address)
            if reason:
                via = f" ({endpoint.host} resolves to it)" if endpoint.is_name else ""
                raise AdmissionError(
                    f"health_endpoint {endpoint.url[:200]!r} refused: {reason}{via}; "
                    "the operator sets REGISTRY_ALLOWED_NETWORKS / REGISTRY_REFUSED_NETWORKS"
                )


# ---------------------------------------------------------------------------
# Clocks
# ---------------------------------------------------------------------------


def check_clock(sent_at: float, now: float, max_skew_s: float, what: str) -> None:
    """Refuse an event dated further ahead than the accepted skew (it would outrank the
    node's real later events: announcements and shutdowns are ordered by their time)."""
    if sent_at - now > max_skew_s:
        raise AdmissionError(
            f"{what} is dated {sent_at - now:.0f}s in the future; the accepted clock skew is "
            f"{max_skew_s:.0f}s (REGISTRY_MAX_CLOCK_SKEW_S); fix the sender's clock"
        )


# ---------------------------------------------------------------------------
# Keys and bindings
# ---------------------------------------------------------------------------


def check_key(key: str | None, node_id: str) -> None:
    """Refuse a record whose key (as text) is not the node_id its payload is about."""
    if key != node_id:
        raise AdmissionError(
            f"record key {(key or '')[:80]!r} differs from the payload's node_id {node_id}; "
            "discovery records are keyed by the node_id they are about"
        )


def check_binding(
    binding: tuple[str, str, str | None], service_name: str, instance_id: str | None, what: str
) -> None:
    """Refuse a heartbeat or shutdown (``what``) naming another service or instance than
    the node_id is registered as (``instance_id`` None: the sender's format has none)."""
    bound_service, bound_instance, _ = binding
    if service_name != bound_service or (instance_id is not None and instance_id != bound_instance):
        raise AdmissionError(
            f"{what} names service {service_name[:80]!r} instance {str(instance_id)[:80]!r}, "
            f"but the node_id is registered as service {bound_service!r} instance "
            f"{bound_instance!r}; a {what} must match the node's registration"
        )
