"""Addresses of a live stack for tests and benchmarks (used by tests/e2e/conftest.py).

The addresses come from the environment (KAFKA_BOOTSTRAP_SERVERS, CONSUL_HTTP_ADDR,
DATABASE_URL) or else from `<root>/.onex-dev/env` written by `onex-node dev up`, and each is
probed for real.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from onex_scaffold.devstack.consul import probe_consul
from onex_scaffold.devstack.kafka import probe_kafka
from onex_scaffold.devstack.postgres import PostgresService
from onex_scaffold.devstack.state import ServiceRecord, parse_env

_KEYS = ("KAFKA_BOOTSTRAP_SERVERS", "CONSUL_HTTP_ADDR", "DATABASE_URL")


class StackUnavailable(Exception):
    """No live stack answers; the message says which service and where it was looked for."""


@dataclass(frozen=True)
class StackAddresses:
    """Where the live stack answers. `database_url` is None when PostgreSQL is not running."""

    kafka_bootstrap_servers: str
    consul_http_addr: str
    database_url: str | None
    source: str
    root: Path

    @property
    def consul_host_port(self) -> tuple[str, int]:
        rest = self.consul_http_addr.split("://", 1)[-1]
        host, _, port = rest.rpartition(":")
        return host, int(port)

    @property
    def consul_url(self) -> str:
        address = self.consul_http_addr
        return address if "://" in address else f"http://{address}"

    def env(self) -> dict[str, str]:
        """The variables a node process needs to reach the stack."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "CONSUL_HTTP_ADDR": self.consul_http_addr,
        }
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        return env


def read_stack_addresses(
    root: Path, environ: Mapping[str, str] | None = None, probe: bool = True
) -> StackAddresses:
    """The live stack's addresses; raises StackUnavailable when Kafka or Consul is silent.

    A DATABASE_URL that does not answer becomes None (PostgreSQL is optional).
    """
    environ = os.environ if environ is None else environ
    from_environ = {k: environ[k] for k in _KEYS if environ.get(k)}
    env_file = root / ".onex-dev" / "env"
    from_file = parse_env(env_file.read_text()) if env_file.is_file() else {}
    env = {**from_file, **from_environ}
    source = "the environment" if from_environ else str(env_file)
    kafka = env.get("KAFKA_BOOTSTRAP_SERVERS")
    consul = env.get("CONSUL_HTTP_ADDR")
    if not kafka or not consul:
        raise StackUnavailable(
            f"no KAFKA_BOOTSTRAP_SERVERS/CONSUL_HTTP_ADDR in the environment or {env_file}"
        )
    database_url = env.get("DATABASE_URL")
    if probe:
        reason = probe_kafka(kafka)
        if reason is not None:
            raise StackUnavailable(f"Kafka at {kafka} (from {source}) does not answer: {reason}")
        reason = probe_consul(consul)
        if reason is not None:
            raise StackUnavailable(f"Consul at {consul} (from {source}) does not answer: {reason}")
        if database_url:
            record = ServiceRecord(
                name="postgres", kind="external", env={"DATABASE_URL": database_url}
            )
            if PostgresService().probe(record) is not None:
                database_url = None
    return StackAddresses(
        kafka_bootstrap_servers=kafka,
        consul_http_addr=consul,
        database_url=database_url,
        source=source,
        root=root,
    )
