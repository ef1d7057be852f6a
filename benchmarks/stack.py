"""The live stack the benchmark runs against: the one from ``onex-node dev up``, or its own.

Addresses come from the environment or ``<root>/.onex-dev/env``. When Kafka or Consul does not
answer there, a stack is started in a temporary folder and stopped afterwards; when only the
registry is missing, a stack in a temporary folder adopts the live Kafka and Consul and starts
just the registry (``down`` then stops only the registry).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from onex_scaffold.devstack.registry import REGISTRY_VAR, probe_registry
from onex_scaffold.devstack.stack import KafkaKind, Stack, StackOptions
from onex_scaffold.devstack.state import parse_env
from onex_scaffold.devstack.testing import StackUnavailable, read_stack_addresses


@dataclass(frozen=True)
class BenchStack:
    kafka: str
    consul_url: str
    registry_url: str
    environment: str
    started_here: bool
    #: The folder whose .onex-dev/ holds the stack (its stage nodes can be rolled).
    root: Path


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _registry_url(root: Path) -> str | None:
    url = os.environ.get(REGISTRY_VAR)
    env_file = root / ".onex-dev" / "env"
    if not url and env_file.is_file():
        url = parse_env(env_file.read_text()).get(REGISTRY_VAR)
    if url and probe_registry(url) is None:
        return url
    return None


@contextmanager
def bench_stack(
    root: Path, kafka_kind: str = "apache", pipeline: bool = True
) -> Iterator[BenchStack]:
    """Yield the stack's addresses; stop whatever this function started (the pipeline's
    stage nodes only when ``pipeline``)."""
    environment = os.environ.get("KAFKA_ENVIRONMENT", "dev")
    own: Stack | None = None
    own_dir: Path | None = None
    try:
        try:
            addresses = read_stack_addresses(root)
            registry = _registry_url(root)
            if registry is None:
                _log("the registry does not answer: starting one against the live Kafka/Consul")
                own_dir = Path(tempfile.mkdtemp(prefix="onex-bench-stack-"))
                own = Stack(own_dir)
                env = own.up(
                    StackOptions(registry=True, pipeline=pipeline), environ=addresses.env()
                )
                registry = env[REGISTRY_VAR]
            kafka, consul = addresses.kafka_bootstrap_servers, addresses.consul_url
            _log(f"stack from {addresses.source}: Kafka {kafka}, Consul {consul}")
        except StackUnavailable as error:
            _log(f"{error}; starting a stack for this run ({kafka_kind} Kafka)")
            own_dir = Path(tempfile.mkdtemp(prefix="onex-bench-stack-"))
            own = Stack(own_dir)
            kind: KafkaKind = "tansu" if kafka_kind == "tansu" else "apache"
            env = own.up(
                StackOptions(kafka=kind, registry=True, pipeline=pipeline, use_environment=False)
            )
            kafka, registry = env["KAFKA_BOOTSTRAP_SERVERS"], env[REGISTRY_VAR]
            consul = env["CONSUL_HTTP_ADDR"]
            consul = consul if "://" in consul else f"http://{consul}"
        yield BenchStack(
            kafka=kafka,
            consul_url=consul.rstrip("/"),
            registry_url=registry,
            environment=environment,
            started_here=own is not None,
            root=own_dir if own_dir is not None else root,
        )
    finally:
        if own is not None:
            _log("stopping the stack this run started")
            own.down()
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
