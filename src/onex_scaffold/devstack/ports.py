"""Loopback port helpers."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from onex_scaffold.devstack.errors import PortBusyError

HOST = "127.0.0.1"
#: Where ``free_port`` looks, below the kernel's ephemeral range (see ``free_port``).
LOWEST_PICKED_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port and it can be bound now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Like the services themselves (Kafka, Consul, PostgreSQL all set SO_REUSEADDR): a port
        # with only TIME_WAIT leftovers of a stopped listener is free, a live listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_range() -> range:
    """The ports the kernel hands out as source ports of outgoing connections."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port(host: str = HOST, avoid: set[int] | None = None) -> int:
    """A port free right now (not in `avoid`), for a listener that binds it soon after.

    Picked outside the ephemeral range: a port from that range (what binding port 0 gives) can
    be taken as the source port of any outgoing connection (a Kafka client's, a Consul probe's)
    between the pick and the bind, and the service then fails with "address already in use".
    """
    avoid = avoid or set()
    ephemeral = ephemeral_range()
    pool = [
        r
        for r in (range(LOWEST_PICKED_PORT, ephemeral.start), range(ephemeral.stop, 65536))
        if len(r) > 0
    ]
    if pool:
        for _ in range(200):  # random, so stacks started side by side rarely collide
            port = random.choice(random.choices(pool, weights=[len(r) for r in pool])[0])
            if port not in avoid and port_is_free(port, host):
                return port
    raise PortBusyError(
        f"no free loopback port found on {host} outside the ephemeral range "
        f"{ephemeral.start}-{ephemeral.stop - 1}"
    )


def choose_port(
    service: str,
    wanted: int | None,
    previous: int | None,
    avoid: set[int],
    option: str,
) -> int:
    """Pick a port: the one asked for (must be free), else the previous one if still free, else any.

    Keeping the previous port means a restarted service keeps the address already written to
    `.onex-dev/env` and to the environment of running nodes.
    """
    if wanted:
        if wanted in avoid or not port_is_free(wanted):
            raise PortBusyError(
                f"{service}: port {wanted} on {HOST} is already in use; "
                f"free it or pick another with {option} (0 = any free port)"
            )
        return wanted
    if previous and previous not in avoid and port_is_free(previous):
        return previous
    return free_port(avoid=avoid)


def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def split_hostport(address: str, default_port: int) -> tuple[str, int]:
    """'host:port' (or a URL like http://host:port) -> (host, port)."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail.lstrip(":")
    else:
        host, _, port_text = rest.rpartition(":")
        if not host:
            host, port_text = port_text, ""
    return host, int(port_text) if port_text else default_port
