"""``onex-node nodes``: the ONEX nodes registered in Consul, with status, version, type, address."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any, Final

import consul

#: Services the registry manages carry this meta pair (see nodes/registry consul_registry.py).
MANAGED_FILTER: Final = 'Service.Meta.onex_managed_by == "onex-registry"'
_SEVERITY: Final = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}
DEFAULT_CONSUL: Final = "http://127.0.0.1:8500"


class ConsulQueryError(RuntimeError):
    """Consul could not be asked; the message says where and what to do."""


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


def format_table(rows: list[NodeRow], service: str | None = None) -> str:
    if not rows:
        if service:
            return f"no instance of {service} registered in Consul (try without --service)"
        return "no ONEX nodes registered in Consul"
    headers = ("SERVICE", "TYPE", "VERSION", "TEMPLATE", "STATUS", "ADDRESS", "NODE ID")
    table = [headers] + [
        (
            r.service,
            r.node_type,
            r.version,
            r.template_version or "-",
            r.status,
            r.address,
            r.node_id,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    address = consul_address(args.consul)
    try:
        rows = list_nodes(address, args.service)
    except ConsulQueryError as error:
        print(f"onex-node nodes: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_table(rows, args.service))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "nodes",
        help="list the ONEX nodes registered in Consul",
        description="List the ONEX nodes the registry put in Consul, with their health status.",
    )
    parser.add_argument("--service", metavar="S", help="only instances of this service")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--consul",
        metavar="ADDR",
        help="Consul HTTP address (default: CONSUL_HTTP_ADDR, the dev stack's Consul, "
        f"or {DEFAULT_CONSUL})",
    )
    parser.set_defaults(func=run)
