"""Loopback port helpers."""

from __future__ import annotations

import socket

from onex_scaffold.devstack.errors import PortBusyError

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port and it can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the services themselves (Kafka, Consul, PostgreSQL all set SO_REUSEADDR): a port
        # with only TIME_WAIT leftovers of a stopped listener is free, a live listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST, avoid: set[int] | None = None) -> int:
    """A port the kernel considers free right now (not in `avoid`)."""
    avoid = avoid or set()
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise PortBusyError(f"no free loopback port found on {host}")


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
