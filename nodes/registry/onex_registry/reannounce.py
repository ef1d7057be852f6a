"""How often the registry asks a service it does not know to announce itself again.

A heartbeat from a node the registry does not know (its announcement was lost or
compacted away) makes the registry ask that service to announce itself. Anyone
can write heartbeats, so the requests are limited: once per service every few
seconds, and within a global rate, so forged heartbeats cannot make the registry
flood the request topic.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

#: A node that heartbeats without the registry knowing it is asked to announce at most this often.
REANNOUNCE_COOLDOWN_S: Final = 5.0
#: Services whose last request time is remembered (heartbeats may name any number of them).
REANNOUNCE_MEMORY: Final = 4096


class TokenBucket:
    """``rate`` events per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ReannounceLimiter:
    """Says whether a service may be asked to announce itself now (and remembers it)."""

    def __init__(self, rate: float, burst: int) -> None:
        self._bucket = TokenBucket(rate, burst)
        #: service -> when it was last asked (bounded: heartbeats may name any service)
        self.last_request: OrderedDict[str, float] = OrderedDict()

    def may_request(self, service_name: str) -> bool:
        now = time.monotonic()
        last = self.last_request.get(service_name)
        if last is not None and now - last < REANNOUNCE_COOLDOWN_S:
            return False
        if not self._bucket.take():
            return False
        self.last_request[service_name] = now
        self.last_request.move_to_end(service_name)
        while len(self.last_request) > REANNOUNCE_MEMORY:
            self.last_request.popitem(last=False)
        return True
