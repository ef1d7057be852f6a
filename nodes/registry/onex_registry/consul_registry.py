"""Introspection event -> Consul agent registration, and the Consul client.

Everything here up to ``ConsulAgent`` is pure: it turns an introspection event
into exactly what the registry sends to Consul, so the mapping is unit-tested
without a Consul. ``ConsulAgent`` is the blocking py-consul client; the
reconciler calls it from worker threads, never from the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final

import consul  # type: ignore[import-untyped]
import consul.exceptions  # type: ignore[import-untyped]
import requests
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .admission import (
    DEFAULT_REFUSED_NETWORKS,
    AddressPolicy,
    AdmissionError,
    HealthEndpoint,
    parse_health_url,
)
from .runtime import naming
from .runtime.events import ModelNodeIntrospectionEvent
from .runtime.signing import DiscoverySigner, parse_keys

# ---------------------------------------------------------------------------
# Consul's limits on service metadata (agent/structs: validateMetaPair).
# ---------------------------------------------------------------------------
META_MAX_PAIRS: Final = 64
META_KEY_MAX_LEN: Final = 128
META_VALUE_MAX_BYTES: Final = 512
META_RESERVED_PREFIX: Final = "consul-"
_META_KEY_BAD_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")

#: Meta keys the registry owns; a node's own capability metadata goes under ``cap_``.
MANAGED_BY_KEY: Final = "onex_managed_by"
MANAGED_BY_VALUE: Final = "onex-registry"
FINGERPRINT_KEY: Final = "onex_fingerprint"
#: The template version a node was rendered from (``onex-node nodes`` shows it).
TEMPLATE_VERSION_KEY: Final = "template_version"
#: Consul's limit on operations in one /v1/txn request.
TXN_MAX_OPS: Final = 64
#: Consul refuses a /v1/txn request body over 512 KiB (txn_max_req_len); a batch of KV
#: writes stays under this many bytes of request body (base64 values and JSON around them).
TXN_MAX_BYTES: Final = 384 * 1024

_DURATION: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float:
    """Seconds in a Consul (Go) duration such as ``10s``, ``1m30s`` or ``500ms``."""
    if not _DURATION.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a duration; write a number with a unit ms, s, m or h, e.g. 10s or 1m"
        )
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


class RegistrySettings(BaseSettings):
    """Registry settings from the environment (``REGISTRY_*`` and Consul's own variables)."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore")

    consul_http_addr: str = Field(
        default="http://127.0.0.1:8500",
        validation_alias="CONSUL_HTTP_ADDR",
        description="Consul agent HTTP address, as Consul's own CLI reads it",
    )
    consul_http_token: str | None = Field(default=None, validation_alias="CONSUL_HTTP_TOKEN")
    check_interval: str = "5s"
    check_timeout: str = "2s"
    deregister_after: str = "1m"
    #: How long after a node's last introspection or heartbeat it still counts as alive, so a
    #: node that vanished is not re-registered forever after Consul reaped it.
    node_ttl_s: float = Field(default=90.0, gt=0)
    #: How often the agent's services are compared with the registry's view (Consul restarts).
    reconcile_interval_s: float = Field(default=1.0, gt=0)
    #: Worker threads for blocking Consul calls.
    consul_concurrency: int = Field(default=16, ge=1, le=128)
    consul_timeout_s: float = Field(default=5.0, gt=0)
    retry_base_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    #: Probe the node's health endpoint once before registering, so the check starts with its
    #: real status instead of waiting up to one interval for Consul's first run.
    initial_probe: bool = True
    probe_timeout_s: float = Field(default=1.0, gt=0)
    #: A node that announces itself before its /health is ready is probed again this often,
    #: for at most ``promote_window_s``, and marked passing once it answers.
    promote_interval_s: float = Field(default=0.25, gt=0)
    promote_window_s: float = Field(default=15.0, ge=0)
    #: TTL of the heartbeat-fed check given to nodes that announce no health endpoint.
    heartbeat_ttl: str = "90s"
    #: A node silent this long (no announcement, no heartbeat), or removed by Consul and
    #: silent since, is forgotten: its record is tombstoned on the compacted topic and its
    #: KV manifest deleted. At least ``node_ttl_s``.
    record_ttl_s: float = Field(default=600.0, gt=0)
    #: How often expired records and orphaned KV manifests are looked for.
    expiry_interval_s: float = Field(default=30.0, gt=0)
    #: Networks a health endpoint may point at (comma-separated CIDRs); empty: any address
    #: not refused. The dev stack sets loopback.
    allowed_networks: str = ""
    #: Networks a health endpoint may never point at (link-local and cloud metadata).
    refused_networks: str = DEFAULT_REFUSED_NETWORKS
    #: Envelopes dated further ahead than this are refused (they would outrank the node's
    #: real later announcements and shutdown).
    max_clock_skew_s: float = Field(default=60.0, ge=0)
    #: Nodes the registry holds at most; announcements of further nodes are dead-lettered.
    max_nodes: int = Field(default=10_000, ge=1)
    #: Requests to re-announce sent for heartbeats of unknown nodes: a sustained rate per
    #: second and a burst (each service is asked at most every 5 s).
    reannounce_per_s: float = Field(default=2.0, gt=0)
    reannounce_burst: int = Field(default=10, ge=1)
    #: Bytes of KV request body per Consul transaction (Consul's limit is 512 KiB).
    txn_max_bytes: int = Field(default=TXN_MAX_BYTES, ge=4096, le=512 * 1024)
    #: Also read omnibase_core's discovery topics (omnibase.py); their names get this prefix.
    omnibase_core: bool = True
    omnibase_topic_prefix: str = ""
    #: When set, only discovery records signed with one of these keys are accepted
    #: (runtime/signing.py); several keys, comma-separated, during a rotation.
    discovery_key: SecretStr | None = Field(default=None, validation_alias="ONEX_DISCOVERY_KEY")

    @field_validator("check_interval", "check_timeout", "heartbeat_ttl")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @field_validator("deregister_after")
    @classmethod
    def _deregister_floor(cls, value: str) -> str:
        # Consul silently raises anything lower to one minute; refuse it so the setting says
        # what really happens.
        if duration_seconds(value) < 60:
            raise ValueError(
                f"REGISTRY_DEREGISTER_AFTER={value!r} is below Consul's 1m floor; use 1m or more"
            )
        return value

    @field_validator("allowed_networks", "refused_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        AddressPolicy.from_text(value, "")
        return value

    @field_validator("discovery_key")
    @classmethod
    def _keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_keys(value.get_secret_value())
        return value

    def address_policy(self) -> AddressPolicy:
        return AddressPolicy.from_text(self.allowed_networks, self.refused_networks)

    def signer(self, environment: str) -> DiscoverySigner | None:
        if self.discovery_key is None:
            return None
        return DiscoverySigner.from_text(self.discovery_key.get_secret_value(), environment)

    @model_validator(mode="after")
    def _ttls(self) -> RegistrySettings:
        if self.record_ttl_s < self.node_ttl_s:
            raise ValueError(
                f"REGISTRY_RECORD_TTL_S={self.record_ttl_s} is below REGISTRY_NODE_TTL_S="
                f"{self.node_ttl_s}; a record expires only after its node stopped counting as live"
            )
        return self

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> RegistrySettings:
        if duration_seconds(self.check_timeout) > duration_seconds(self.check_interval):
            raise ValueError(
                f"REGISTRY_CHECK_TIMEOUT={self.check_timeout} exceeds "
                f"REGISTRY_CHECK_INTERVAL={self.check_interval}; make the timeout shorter"
            )
        return self

    def consul_endpoint(self) -> tuple[str, str, int]:
        """(scheme, host, port) of ``CONSUL_HTTP_ADDR``; a bare ``host:port`` means http."""
        return parse_consul_addr(self.consul_http_addr)


def parse_consul_addr(addr: str) -> tuple[str, str, int]:
    raw = addr if "://" in addr else f"http://{addr}"
    parsed = urllib.parse.urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"CONSUL_HTTP_ADDR={addr!r} is not an address; use host:port or http://host:port"
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 8500)
    return parsed.scheme, parsed.hostname, port


# ---------------------------------------------------------------------------
# The mapping
# ---------------------------------------------------------------------------


def meta_key(raw: str) -> str:
    """A Consul-safe meta key: [A-Za-z0-9_-], at most 128 characters, never ``consul-``."""
    key = _META_KEY_BAD_CHARS.sub("_", raw)[:META_KEY_MAX_LEN]
    if key.lower().startswith(META_RESERVED_PREFIX):
        key = ("x-" + key)[:META_KEY_MAX_LEN]
    return key or "_"


def meta_value(raw: str) -> str:
    """At most 512 bytes of UTF-8 (Consul counts bytes), cut on a character boundary."""
    data = raw.encode()
    if len(data) <= META_VALUE_MAX_BYTES:
        return raw
    marker = "…"
    budget = META_VALUE_MAX_BYTES - len(marker.encode())
    return data[:budget].decode(errors="ignore") + marker


def build_meta(
    event: ModelNodeIntrospectionEvent, kv_key: str, extra_meta: dict[str, str] | None = None
) -> dict[str, str]:
    """Service meta within Consul's budget; the full manifest lives in KV at ``kv_key``."""
    extra_meta = extra_meta or {}
    meta: dict[str, str] = {
        MANAGED_BY_KEY: MANAGED_BY_VALUE,
        "node_id": str(event.node_id),
        "node_name": event.node_name,
        "node_type": event.node_type,
        "service_name": event.service_name,
        "version": event.version,
        "domain": event.domain,
        "instance_id": event.instance_id,
        "manifest_key": kv_key,
    }
    if event.description:
        meta["description"] = event.description
    if event.capabilities.actions:
        meta["actions"] = ",".join(event.capabilities.actions)
    if event.capabilities.protocols:
        meta["protocols"] = ",".join(event.capabilities.protocols)
    if event.health_endpoint:
        meta["health_endpoint"] = event.health_endpoint
    # The template version the node was rendered from: a field of the announcement, or its
    # capability metadata (``onex-node nodes`` shows it; ``--outdated`` compares it).
    template_version = getattr(event, "template_version", None) or event.capabilities.metadata.get(
        TEMPLATE_VERSION_KEY
    )
    if template_version:
        meta[TEMPLATE_VERSION_KEY] = str(template_version)
    for name, value in sorted(extra_meta.items()):
        meta.setdefault(name, value)
    # Keep one slot for the fingerprint added by ``build_registration``.
    budget = META_MAX_PAIRS - 1
    for name, value in sorted(event.capabilities.metadata.items()):
        if len(meta) >= budget:
            break
        key = meta_key(f"cap_{name}")
        meta.setdefault(key, value)
    return {meta_key(k): meta_value(v) for k, v in meta.items()}


def build_tags(event: ModelNodeIntrospectionEvent) -> list[str]:
    """node_type, domain, then the node's own tags that are valid tags, without repeats."""
    tags: list[str] = []
    for tag in (event.node_type, event.domain, *event.tags):
        if tag not in tags and not naming.check("tag", tag):
            tags.append(tag)
    return tags


class HealthEndpointError(AdmissionError):
    """The introspection event's health endpoint is not a usable http(s) URL."""


def parse_health_endpoint(url: str) -> tuple[str, int]:
    """(host, port) of a health URL, parsed strictly (``admission.parse_health_url``)."""
    try:
        endpoint = parse_health_url(url)
    except AdmissionError as error:
        raise HealthEndpointError(str(error)) from error
    return endpoint.host, endpoint.port


@dataclass(frozen=True)
class Registration:
    """One node's Consul registration and KV manifest, ready to send."""

    node_id: str
    service_id: str
    name: str
    address: str | None
    port: int | None
    tags: tuple[str, ...]
    meta: dict[str, str] = field(hash=False)
    check: dict[str, Any] = field(hash=False)
    check_id: str
    kv_key: str
    manifest: str
    health_endpoint: str | None
    fingerprint: str

    @property
    def uses_http_check(self) -> bool:
        return self.health_endpoint is not None


def build_registration(
    event: ModelNodeIntrospectionEvent,
    settings: RegistrySettings,
    *,
    manifest: str | None = None,
    extra_meta: dict[str, str] | None = None,
    endpoint: HealthEndpoint | None = None,
) -> Registration:
    """The exact registration for ``event``: same event, same registration, same ID.

    ``manifest`` replaces the KV manifest (an omnibase_core announcement keeps its own
    shape there); ``extra_meta`` adds Meta pairs after the registry's own.
    """
    service_id = naming.consul_service_id(event.service_name, event.node_id)
    kv_key = naming.consul_kv_key(event.node_id)
    check_id = f"{service_id}:health"
    address: str | None = None
    port: int | None = None
    check: dict[str, Any]
    if event.health_endpoint:
        if endpoint is not None and endpoint.url == event.health_endpoint:
            address, port = endpoint.host, endpoint.port  # parsed by the caller already
        else:
            address, port = parse_health_endpoint(event.health_endpoint)
        check = {
            "CheckID": check_id,
            "Name": f"{event.service_name} /health",
            "HTTP": event.health_endpoint,
            "Method": "GET",
            "Interval": settings.check_interval,
            "Timeout": settings.check_timeout,
            "DeregisterCriticalServiceAfter": settings.deregister_after,
        }
    else:
        # No endpoint to poll: heartbeats feed a TTL check, so silence turns it critical.
        check = {
            "CheckID": check_id,
            "Name": f"{event.service_name} heartbeat",
            "TTL": settings.heartbeat_ttl,
            "DeregisterCriticalServiceAfter": settings.deregister_after,
        }
    meta = build_meta(event, kv_key, extra_meta)
    tags = tuple(build_tags(event))
    # The correlation_id differs per announcement; leaving it out keeps a re-announcement of an
    # unchanged node a no-op for Consul.
    if manifest is None:
        manifest = event.model_dump_json(exclude={"correlation_id"})
    digest = hashlib.sha256(
        json.dumps(
            [service_id, event.service_name, address, port, tags, meta, check, manifest],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    meta[FINGERPRINT_KEY] = digest
    return Registration(
        node_id=str(event.node_id),
        service_id=service_id,
        name=event.service_name,
        address=address,
        port=port,
        tags=tags,
        meta=meta,
        check=check,
        check_id=check_id,
        kv_key=kv_key,
        manifest=manifest,
        health_endpoint=event.health_endpoint,
        fingerprint=digest,
    )


def probe_health(url: str, timeout_s: float) -> bool:
    """One GET of the node's health endpoint (blocking): True on a 2xx answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------
# The blocking client
# ---------------------------------------------------------------------------


class ConsulUnavailableError(RuntimeError):
    """The Consul agent could not be reached or failed a request; the call is retried."""


class ConsulRefusedError(ConsulUnavailableError):
    """Consul answered that the request itself is wrong (400, 409, 413...): retrying the same
    request cannot help, so the record behind it is isolated (dead-lettered)."""


@dataclass(frozen=True)
class AgentSnapshot:
    """What the local agent holds now: managed services' fingerprints and check states."""

    fingerprints: dict[str, str]  # service_id -> fingerprint (managed services only)
    check_status: dict[str, str]  # service_id -> passing|warning|critical


class ConsulAgent:
    """py-consul calls the registry needs. Blocking: call from worker threads only.

    One py-consul client (one ``requests`` session) per thread, since sessions are not
    meant to be shared between threads.
    """

    def __init__(self, settings: RegistrySettings) -> None:
        self._settings = settings
        self._local = threading.local()

    def _client(self) -> consul.Consul:
        client: consul.Consul | None = getattr(self._local, "client", None)
        if client is None:
            scheme, host, port = self._settings.consul_endpoint()
            client = consul.Consul(
                host=host, port=port, scheme=scheme, token=self._settings.consul_http_token
            )
            client.http.connections_timeout = self._settings.consul_timeout_s
            self._local.client = client
        return client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (consul.exceptions.BadRequest, consul.exceptions.ClientError) as error:
            raise ConsulRefusedError(self._describe(what, error)) from error
        except (requests.RequestException, consul.ConsulException) as error:
            raise ConsulUnavailableError(self._describe(what, error)) from error

    def _describe(self, what: str, error: Exception) -> str:
        """One short line: what failed, where, and why (not urllib3's whole retry story)."""
        if isinstance(error, requests.Timeout):
            reason = f"no answer within {self._settings.consul_timeout_s:.0f}s"
        elif isinstance(error, requests.ConnectionError):
            reason = "connection refused or reset; is the Consul agent running?"
        else:
            reason = f"{type(error).__name__}: {str(error)[:200]}"
        return f"Consul {what} failed at {self._settings.consul_http_addr}: {reason}"

    def snapshot(self) -> AgentSnapshot:
        client = self._client()
        services: dict[str, Any] = self._call("list services", client.agent.services)
        checks: dict[str, Any] = self._call("list checks", client.agent.checks)
        fingerprints = {
            sid: str((svc.get("Meta") or {}).get(FINGERPRINT_KEY, ""))
            for sid, svc in services.items()
            if (svc.get("Meta") or {}).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE
        }
        status: dict[str, str] = {}
        for check in checks.values():
            sid = check.get("ServiceID") or ""
            if sid in fingerprints:
                status[sid] = _worst(status.get(sid), str(check.get("Status", "")))
        return AgentSnapshot(fingerprints=fingerprints, check_status=status)

    def register(self, registration: Registration, initial_status: str | None) -> None:
        """The service and its check (the KV manifest is written by ``write_manifests``)."""
        client = self._client()
        check = dict(registration.check)
        if initial_status is not None:
            check["Status"] = initial_status
        self._call(
            f"register {registration.service_id}",
            client.agent.service.register,
            registration.name,
            service_id=registration.service_id,
            address=registration.address,
            port=registration.port,
            tags=list(registration.tags),
            meta=registration.meta,
            check=check,
            replace_existing_checks=True,
        )

    def deregister(self, service_id: str) -> None:
        client = self._client()
        try:
            client.agent.service.deregister(service_id)
        except consul.NotFound:
            pass  # already gone (Consul reaped it, or it restarted): the goal is reached
        except (requests.RequestException, consul.ConsulException) as error:
            raise ConsulUnavailableError(
                self._describe(f"deregister {service_id}", error)
            ) from error

    def write_manifests(self, items: list[tuple[str, str]]) -> None:
        """Set KV ``key -> value`` for up to ``TXN_MAX_OPS`` keys in one transaction."""
        self._txn(
            [
                {
                    "KV": {
                        "Verb": "set",
                        "Key": key,
                        "Value": base64.b64encode(value.encode()).decode(),
                    }
                }
                for key, value in items
            ]
        )

    def delete_manifests(self, keys: list[str]) -> None:
        self._txn([{"KV": {"Verb": "delete", "Key": key}} for key in keys])

    def list_manifest_keys(self) -> list[str]:
        """Every key under the registry's KV prefix (``naming.consul_kv_key``)."""
        prefix = naming.consul_kv_key("")
        _, keys = self._call("list manifests", self._client().kv.get, prefix, keys=True)
        return [str(key) for key in keys or []]

    def _txn(self, operations: list[dict[str, Any]]) -> None:
        if not operations:
            return
        if len(operations) > TXN_MAX_OPS:
            raise ValueError(f"a Consul transaction holds at most {TXN_MAX_OPS} operations")
        self._call(f"KV transaction of {len(operations)}", self._client().txn.put, operations)

    def ttl_update(self, check_id: str, status: str, note: str) -> None:
        client = self._client()
        fn = {
            "passing": client.agent.check.ttl_pass,
            "warning": client.agent.check.ttl_warn,
        }.get(status, client.agent.check.ttl_fail)
        self._call(f"update check {check_id}", fn, check_id, notes=note)


_SEVERITY: Final = {"passing": 0, "warning": 1, "critical": 2}


def _worst(current: str | None, new: str) -> str:
    if current is None:
        return new
    return new if _SEVERITY.get(new, 2) > _SEVERITY.get(current, 2) else current
