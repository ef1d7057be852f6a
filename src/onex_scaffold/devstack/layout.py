"""Members of the stack: how many of each service run, and what each one is called.

A service with one member keeps its plain name (`kafka`, `consul`, `registry`); a clustered one
numbers its members (`kafka-1`..`kafka-3`, `consul-1`..`consul-3`, `registry-1`, `registry-2`).
A Consul cluster also runs `consul-agent`, the client agent that nodes and the registry talk to
(one per host in production). Members start in `member_names` order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONSUL_AGENT = "consul-agent"
#: Sizes a cluster may have (a KRaft quorum and a Consul raft need an odd count to be useful).
MAX_MEMBERS = 5

_MEMBER = re.compile(r"^(?P<service>[a-z]+)(?:-(?P<index>[1-9][0-9]*))?$")


@dataclass(frozen=True)
class Layout:
    """How many members each clustered service has."""

    kafka: int = 1
    consul: int = 1
    registry: int = 1

    def size(self, service: str) -> int:
        return int(getattr(self, service, 1))


def member_name(service: str, index: int, size: int) -> str:
    """`kafka` for a single broker, `kafka-2` for the second of three."""
    return service if size == 1 else f"{service}-{index}"


def members_of(service: str, size: int) -> list[str]:
    names = [member_name(service, i, size) for i in range(1, size + 1)]
    if service == "consul" and size > 1:
        names.append(CONSUL_AGENT)
    return names


def service_of(member: str) -> str:
    """The service a member belongs to: `kafka-2` -> `kafka`, `consul-agent` -> `consul`."""
    if member == CONSUL_AGENT:
        return "consul"
    match = _MEMBER.match(member)
    return match.group("service") if match else member


def index_of(member: str) -> int:
    """1 for `kafka` and `kafka-1`, 2 for `kafka-2`; 0 for `consul-agent`."""
    if member == CONSUL_AGENT:
        return 0
    match = _MEMBER.match(member)
    return int(match.group("index") or 1) if match else 1


def layout_of(names: list[str]) -> Layout:
    """The layout that a set of member names (e.g. from state.json) was started with."""

    def count(service: str) -> int:
        numbered = [n for n in names if service_of(n) == service and n != CONSUL_AGENT]
        return max(1, len(numbered))

    return Layout(kafka=count("kafka"), consul=count("consul"), registry=count("registry"))


def order_key(member: str, order: tuple[str, ...]) -> tuple[int, int, str]:
    """Sort key: the service's place in `order`, then member index (the Consul client agent
    after the servers)."""
    service = service_of(member)
    rank = order.index(service) if service in order else len(order)
    index = index_of(member)
    return rank, index if index else MAX_MEMBERS + 1, member
