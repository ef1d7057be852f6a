"""`onex-node dev up|down|status|stop|start|restart`: the real local stack on loopback.

Only the command line lives here; the stack itself is :mod:`onex_scaffold.devstack`.
Its errors (:class:`~onex_scaffold.devstack.errors.DevStackError`) carry their exit codes
and are printed by :func:`onex_scaffold.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict
from typing import Any

from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES
from onex_scaffold.devstack.stack import ServiceStatus, Stack, StackOptions


def register(subparsers: Any) -> None:
    """Add `dev` and its sub-commands to the `onex-node` parser."""
    dev = subparsers.add_parser(
        "dev",
        help="start/stop a local Kafka, Consul and PostgreSQL on 127.0.0.1",
        description="A real local stack on loopback; runtime files in <root>/.onex-dev/.",
    )
    dev.add_argument(
        "--root",
        default=os.environ.get("ONEX_DEV_ROOT", "."),
        help="project folder holding .onex-dev/ (default: current folder or $ONEX_DEV_ROOT)",
    )
    dev.set_defaults(
        interrupted_hint="`onex-node dev status` shows what runs, `onex-node dev down` stops it"
    )
    actions = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start what is not running and wait until it answers")
    up.add_argument(
        "--kafka",
        choices=["apache", "tansu"],
        default=None,
        help="apache = Apache Kafka 4.x in KRaft mode (default); tansu = instant in-memory broker",
    )
    up.add_argument("--postgres", action="store_true", help="also run PostgreSQL")
    up.add_argument(
        "--no-registry", action="store_true", help="do not start the ONEX registry node"
    )
    up.add_argument(
        "--no-pipeline",
        action="store_true",
        help="do not start the seven stage nodes of the generation pipeline",
    )
    up.add_argument("--kafka-port", type=int, default=None, help="broker port (default: free)")
    up.add_argument("--consul-port", type=int, default=None, help="HTTP port (default: free)")
    up.add_argument("--postgres-port", type=int, default=None, help="port (default: free)")
    up.add_argument(
        "--timeout", type=float, default=None, help="seconds each service may take to answer"
    )
    up.add_argument(
        "--ignore-env",
        action="store_true",
        help="start our own services even if KAFKA_BOOTSTRAP_SERVERS etc. name live ones",
    )
    up.add_argument(
        "--kafka-brokers",
        type=int,
        default=None,
        metavar="N",
        help="Apache Kafka brokers in one KRaft cluster (default 1; 3 = a controller quorum of "
        "three, topics replicated 3 times with min.insync.replicas=2)",
    )
    up.add_argument(
        "--consul-servers",
        type=int,
        default=None,
        metavar="N",
        help="Consul servers in one raft cluster (default 1 = one -dev agent; 3 or 5 add a "
        "client agent that CONSUL_HTTP_ADDR points at)",
    )
    up.add_argument(
        "--registries",
        type=int,
        default=None,
        metavar="N",
        help="registry instances sharing one consumer group (default 1)",
    )
    # Ctrl-C during `up`: the stack stops what this `up` started before the error is shown.
    up.set_defaults(func=_up, interrupted_hint="what this `up` started was stopped")

    down = actions.add_parser("down", help="stop exactly the processes `up` started")
    down.add_argument(
        "--purge", action="store_true", help="also delete the Kafka and PostgreSQL data"
    )
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="what runs where and whether it answers")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    member_help = "a service or cluster member: kafka, kafka-2, consul-3, consul-agent, registry-1"
    restart = actions.add_parser(
        "restart",
        help="restart one member on the same ports (--rolling: pipeline stages without a gap)",
    )
    restart.add_argument(
        "service",
        metavar="MEMBER",
        help=member_help + "; with --rolling: a pipeline stage, or `pipeline` for all seven",
    )
    restart.add_argument(
        "--rolling",
        action="store_true",
        help="start a new instance beside the old one, wait until it is passing in Consul and "
        "has joined its consumer group, then stop the old one (one stage at a time)",
    )
    restart.set_defaults(func=_restart)

    stop = actions.add_parser(
        "stop", help="stop one member, keeping its ports for `start` (the rest keeps running)"
    )
    stop.add_argument("service", metavar="MEMBER", help=member_help)
    stop.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean stop")
    stop.set_defaults(func=_stop)

    start = actions.add_parser("start", help="start one stopped member on its ports")
    start.add_argument("service", metavar="MEMBER", help=member_help)
    start.set_defaults(func=_start)


def _address(item: ServiceStatus) -> str:
    if re.fullmatch(r"(kafka|consul)-[0-9]+", item.name):
        # A broker or Consul server of a cluster: its own ports (what nodes use is in the
        # env file, written once on the first broker and the client agent).
        return ", ".join(f"{key}={port}" for key, port in item.ports.items())
    return ", ".join(f"{key}={value}" for key, value in item.env.items())


def _print_table(items: list[ServiceStatus]) -> None:
    rows = [("SERVICE", "KIND", "VERSION", "PID", "ADDRESS", "STATE")]
    for item in items:
        rows.append(
            (
                item.name,
                item.kind,
                item.version or "-",
                str(item.pid) if item.pid else "-",
                _address(item),
                item.detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, row[-1]]))
    for item in items:
        if item.kind in ("consul", "consul-agent") and "http" in item.ports:
            print(f"Consul UI: http://127.0.0.1:{item.ports['http']}/ui/")


def _up(args: argparse.Namespace) -> int:
    stack = Stack(args.root, verbose=True)
    started = time.monotonic()
    stack.up(
        StackOptions(
            kafka=args.kafka,
            postgres=args.postgres,
            registry=not args.no_registry,
            pipeline=not args.no_pipeline,
            kafka_port=args.kafka_port,
            consul_port=args.consul_port,
            postgres_port=args.postgres_port,
            use_environment=not args.ignore_env,
            timeout_s=args.timeout,
            kafka_brokers=args.kafka_brokers,
            consul_servers=args.consul_servers,
            registries=args.registries,
        )
    )
    print(f"stack up in {time.monotonic() - started:.1f} s")
    _print_table(stack.status())
    print(f"env file: {stack.store.env_path}  (load it: set -a; . {stack.store.env_path}; set +a)")
    return 0


def _down(args: argparse.Namespace) -> int:
    lines = Stack(args.root).down(purge=args.purge)
    for line in lines or ["nothing was running"]:
        print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = Stack(args.root)
    items = stack.status()
    if args.json:
        print(json.dumps([asdict(item) for item in items], indent=2))
    elif not items:
        print(f"nothing started in {stack.root}; run `onex-node dev up`")
    else:
        _print_table(items)
        print(f"env file: {stack.store.env_path}")
    return 0 if items and all(item.answering for item in items) else 1


def _restart(args: argparse.Namespace) -> int:
    stack = Stack(args.root, verbose=True)
    if not args.rolling:
        stack.restart(args.service)
        _print_table([item for item in stack.status() if item.name == args.service])
        return 0
    names = list(PIPELINE_SERVICES) if args.service == "pipeline" else [args.service]
    for name in names:
        stack.roll(name)
    _print_table([item for item in stack.status() if item.name in names])
    return 0


def _stop(args: argparse.Namespace) -> int:
    if not Stack(args.root, verbose=True).stop(args.service, kill=args.kill):
        print(f"{args.service}: was not running")
    return 0


def _start(args: argparse.Namespace) -> int:
    stack = Stack(args.root, verbose=True)
    stack.start(args.service)
    _print_table([item for item in stack.status() if item.name == args.service])
    return 0
