"""The ONEX nodes registered in Consul, with status, version, type and address.

``onex-node nodes`` (:mod:`onex_scaffold.cli.nodes`) prints them.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

import consul

from onex_scaffold._exceptions import ConsulQueryError

#: Services the registry manages carry this meta pair (see nodes/registry consul_registry.py).
MANAGED_FILTER: Final = 'Service.Meta.onex_managed_by == "onex-registry"'
_SEVERITY: Final = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}
DEFAULT_CONSUL: Final = "http://127.0.0.1:8500"


@dataclass(frozen=True)
class NodeRow:
    service: str
    service_id: str
    node_id: str
    node_name: str
    node_type: str
    version: str
    status: str
    address: str
    instance_id: str
    domain: str
    check_output: str
    #: The template version the node was rendered from (Meta ``template_version``).
    template_version: str = ""


def consul_address(explicit: str | None) -> str:
    """--consul, else CONSUL_HTTP_ADDR, else the dev stack's Consul, else Consul's default."""
    if explicit:
        return explicit
    env = os.environ.get("CONSUL_HTTP_ADDR")
    if env:
        return env
    try:
        from onex_scaffold.devstack import registry as dev_registry
    except ImportError:
        return DEFAULT_CONSUL
    return dev_registry.consul_http_addr() or DEFAULT_CONSUL


def _client(address: str) -> consul.Consul:
    raw = address if "://" in address else f"http://{address}"
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConsulQueryError(
            f"{address!r} is not a Consul address; use host:port or http://host:port"
        )
    return consul.Consul(
        host=parts.hostname,
        port=parts.port or 8500,
        scheme=parts.scheme,
        token=os.environ.get("CONSUL_HTTP_TOKEN"),
    )


def _worst(statuses: list[str]) -> str:
    if not statuses:
        return "passing"  # Consul's own view: a service without checks is healthy
    return max(statuses, key=lambda s: _SEVERITY.get(s, 2))


def list_nodes(address: str, service: str | None = None) -> list[NodeRow]:
    """Every instance the registry put in Consul (optionally of one service), sorted."""
    client = _client(address)
    try:
        if service:
            names = [service]
        else:
            _, catalog = client.catalog.services()
            names = sorted(catalog)
        rows: list[NodeRow] = []
        for name in names:
            _, entries = client.health.service(name, filter_expr=MANAGED_FILTER)
            rows.extend(_row(entry) for entry in entries)
    except OSError as error:  # requests' errors are OSErrors
        raise ConsulQueryError(
            f"cannot reach Consul at {address}: {error.__class__.__name__}. "
            "Start the dev stack with `onex-node dev up`, or set CONSUL_HTTP_ADDR / --consul."
        ) from error
    except consul.ConsulException as error:
        raise ConsulQueryError(f"Consul at {address} refused the query: {error}") from error
    return sorted(rows, key=lambda r: (r.service, r.node_id))


def _row(entry: dict[str, Any]) -> NodeRow:
    svc = entry.get("Service") or {}
    meta: dict[str, str] = svc.get("Meta") or {}
    sid = str(svc.get("ID", ""))
    checks = [c for c in entry.get("Checks") or [] if c.get("ServiceID") == sid]
    status = _worst([str(c.get("Status", "critical")) for c in checks])
    address = str(svc.get("Address") or (entry.get("Node") or {}).get("Address") or "")
    port = svc.get("Port")
    outputs = [str(c.get("Output", "")).strip() for c in checks if c.get("Status") != "passing"]
    return NodeRow(
        service=str(svc.get("Service", "")),
        service_id=sid,
        node_id=meta.get("node_id", ""),
        node_name=meta.get("node_name", ""),
        node_type=meta.get("node_type", ""),
        version=meta.get("version", ""),
        status=status,
        address=f"{address}:{port}" if port else address,
        instance_id=meta.get("instance_id", ""),
        domain=meta.get("domain", ""),
        check_output="; ".join(o for o in outputs if o)[:200],
        template_version=meta.get("template_version", ""),
    )
