"""Resolving the host names of announced health endpoints, briefly cached.

An endpoint given by name is checked against the address policy with every
address the name resolves to (``AddressPolicy.check``); the answers are reused
for a short while so a burst of announcements does not become a burst of DNS
queries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Final

from .admission import IPAddress

#: DNS answers for health endpoint names are reused this long.
RESOLVE_CACHE_S: Final = 30.0
RESOLVE_TIMEOUT_S: Final = 2.0
#: Names whose answers are kept (announcements may name any number of them).
RESOLVE_MEMORY: Final = 4096


class HostResolver:
    """The addresses a host name resolves to, cached for ``RESOLVE_CACHE_S``."""

    def __init__(self) -> None:
        self._resolved: dict[str, tuple[float, tuple[IPAddress, ...]]] = {}

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        """The addresses ``host`` resolves to (cached briefly); empty when it does not."""
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            infos = []
        addresses: list[IPAddress] = []
        for info in infos:
            try:
                addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            except ValueError:
                continue
        if len(self._resolved) >= RESOLVE_MEMORY:
            self._resolved.clear()
        result = tuple(addresses)
        self._resolved[host] = (now + RESOLVE_CACHE_S, result)
        return result
