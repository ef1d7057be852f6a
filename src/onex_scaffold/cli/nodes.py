"""``onex-node nodes``: the ONEX nodes registered in Consul, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from onex_scaffold._fleet import (
    DEFAULT_CONSUL,
    NodeRow,
    consul_address,
    list_nodes,
    newest_template_version,
    outdated_nodes,
    template_checkout,
)


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
    parser.add_argument(
        "--outdated",
        action="store_true",
        help="only the nodes behind the newest template version (exit 1 when there are any)",
    )
    parser.add_argument(
        "--template",
        metavar="SRC",
        help="with --outdated: the template checkout or git URL whose newest version counts "
        "(default: the bundled template's checkout)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = list_nodes(consul_address(args.consul), args.service)  # ConsulQueryError: exit 2
    if not args.outdated:
        if args.json:
            print(json.dumps([asdict(r) for r in rows], indent=2))
        else:
            print(format_table(rows, args.service))
        return 0
    newest = newest_template_version(args.template)
    behind = outdated_nodes(rows, newest, template_checkout(args.template))
    if args.json:
        print(json.dumps({"newest": newest, "outdated": [asdict(r) for r in behind]}, indent=2))
    elif behind:
        print(f"{len(behind)} of {len(rows)} node(s) behind template version {newest}:")
        print(format_table(behind))
    else:
        print(f"all {len(rows)} node(s) up to date with template version {newest}")
    return 1 if behind else 0


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
