"""librdkafka's log lines, with connection failures throttled.

Without a broker, librdkafka logs a failed connection attempt for every client every
time it retries (``reconnect.backoff.ms``): about 15-20 ERROR lines a second for one
node, which bury everything else. ``KafkaLogThrottle`` lets the first such line through
with a note, then at most one every ``interval_s`` saying how many it held back. Other
librdkafka lines pass unchanged. The node says itself, in its own words, when it waits
for Kafka and when it got through (``base.py``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Final

#: librdkafka texts of a broker that cannot be reached (connect, resolve, transport).
_CONNECTION_FAILURE: Final = re.compile(
    r"Connect to .* failed|Connection refused|Failed to resolve|brokers? (?:are |is )?down"
    r"|Receive failed|Send failed|Disconnected|timed out|No route to host|Connection reset"
    r"|Broker transport failure",
    re.IGNORECASE,
)

LOGGER_NAME: Final = "librdkafka"


class KafkaLogThrottle(logging.Filter):
    """A logging filter for librdkafka's logger; thread-safe (librdkafka logs from the
    threads that serve its clients)."""

    def __init__(
        self, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self.suppressed = 0
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not _CONNECTION_FAILURE.search(text):
            return True
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.interval_s:
                self.suppressed += 1
                self.suppressed_total += 1
                return False
            held_back, self.suppressed = self.suppressed, 0
            since = 0.0 if self._last is None else now - self._last
            self._last = now
        if held_back:
            record.msg = "Kafka connection error (%d more in the last %.0fs not shown): %s"
            record.args = (held_back, since, text)
        else:
            record.msg = "Kafka connection error (repeats shown at most every %.0fs): %s"
            record.args = (self.interval_s, text)
        return True


_installed: KafkaLogThrottle | None = None


def kafka_logger(interval_s: float = 30.0) -> logging.Logger:
    """The logger to give librdkafka clients (``"logger"`` in their config), throttled once
    per process."""
    global _installed
    logger = logging.getLogger(LOGGER_NAME)
    if _installed is None:
        _installed = KafkaLogThrottle(interval_s)
        logger.addFilter(_installed)
    return logger
