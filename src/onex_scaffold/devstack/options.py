"""What `up` runs: the options, the cluster sizes they ask for, and the members they select.

Adding a service (the pipeline, for example) takes three steps: its name in `SERVICE_ORDER`,
a branch in `factory.ServiceFactory.build`, and (if optional) a flag in `StackOptions` read by
`wanted_services`. `depends_on` names the services whose members must answer before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from onex_scaffold.devstack.errors import DevStackError
from onex_scaffold.devstack.layout import Layout, layout_of, members_of, service_of
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES
from onex_scaffold.devstack.state import StackState

#: Services in start order; `down` stops them in reverse.
SERVICE_ORDER: tuple[str, ...] = ("kafka", "consul", "postgres", "registry", *PIPELINE_SERVICES)
#: Most members a clustered service may have.
MAX_SIZE = {"kafka": 5, "consul": 5, "registry": 3}

KafkaKind = Literal["apache", "tansu"]


@dataclass
class StackOptions:
    """What `up` should run. `kafka=None` keeps what ran before (Apache Kafka the first time)."""

    kafka: KafkaKind | None = None
    postgres: bool = False
    # The ONEX registry (nodes/registry): Kafka introspection -> Consul.
    registry: bool = True
    # The seven stage nodes of the generation pipeline (nodes/<stage>).
    pipeline: bool = True
    kafka_port: int | None = None
    consul_port: int | None = None
    postgres_port: int | None = None
    # Use KAFKA_BOOTSTRAP_SERVERS / CONSUL_HTTP_ADDR / DATABASE_URL when they name a live service.
    use_environment: bool = True
    # Per-service start limit in seconds; None = each service's own default.
    timeout_s: float | None = None
    # Cluster sizes; None keeps what ran before (one of each the first time).
    kafka_brokers: int | None = None
    consul_servers: int | None = None
    registries: int | None = None


def layout_for(options: StackOptions, state: StackState) -> Layout:
    """Cluster sizes for `up`: as asked, else as the members in state.json, else one each."""
    before = layout_of(list(state.services))
    sizes: dict[str, int] = {}
    for service, asked, flag in (
        ("kafka", options.kafka_brokers, "--kafka-brokers"),
        ("consul", options.consul_servers, "--consul-servers"),
        ("registry", options.registries, "--registries"),
    ):
        size = asked if asked is not None else before.size(service)
        if not 1 <= size <= MAX_SIZE[service]:
            raise DevStackError(f"{flag} must be between 1 and {MAX_SIZE[service]}, got {size}")
        sizes[service] = size
    if sizes["consul"] % 2 == 0:
        raise DevStackError(
            f"--consul-servers must be odd (1, 3 or 5), got {sizes['consul']}: an even raft "
            "cluster tolerates no more failures than the odd one below it"
        )
    return Layout(**sizes)


def wanted_services(
    options: StackOptions, state: StackState, layout: Layout | None = None
) -> list[str]:
    """Members `up` brings up: the always-on ones, the optional ones asked for or already up."""
    layout = layout or Layout()
    present = {service_of(name) for name in state.services}
    wanted = {"kafka", "consul"}
    if options.postgres or "postgres" in present:
        wanted.add("postgres")
    if options.registry or "registry" in present:
        wanted.add("registry")
    for name in PIPELINE_SERVICES:
        if options.pipeline or name in present:
            wanted.add(name)
    names: list[str] = []
    for service in SERVICE_ORDER:
        if service in wanted:
            names += members_of(service, layout.size(service))
    return names


def depends_on(name: str) -> tuple[str, ...]:
    """Services whose members must answer before `name` starts (Kafka, Consul, PostgreSQL
    need none)."""
    service = service_of(name)
    return ("kafka", "consul") if service == "registry" or service in PIPELINE_SERVICES else ()
