"""Counters and gauges rendered in the Prometheus text format for ``/metrics``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

_HELP: dict[str, tuple[str, str]] = {
    "onex_events_published_total": ("counter", "Events the broker confirmed."),
    "onex_events_publish_failed_total": ("counter", "Events that failed after all retries."),
    "onex_events_dead_lettered_total": ("counter", "Events sent to a dead-letter topic."),
    "onex_messages_consumed_total": ("counter", "Messages read from Kafka."),
    "onex_messages_processed_total": ("counter", "Messages handled successfully."),
    "onex_handler_errors_total": ("counter", "Handler attempts that raised."),
    "onex_publish_retries_total": ("counter", "Publish attempts retried after a failure."),
}


class Metrics:
    """Process-local metrics of one node; cheap enough to update on every message."""

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.started = time.monotonic()
        self.counters: dict[str, float] = dict.fromkeys(_HELP, 0.0)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._labels = labels or {}
        clash = RESERVED_LABELS & set(self._labels)
        if clash:
            raise ValueError(
                f"metric labels {sorted(clash)} are reserved by Prometheus; use another name "
                "(the node labels its instance id instance_id)"
            )

    def inc(self, name: str, amount: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_text, read)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def render(self) -> str:
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self._labels.items()))
        suffix = "{" + labels + "}" if labels else ""
        lines: list[str] = []
        for name, value in self.counters.items():
            kind, help_text = _HELP.get(name, ("counter", name))
            lines += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} {kind}",
                f"{name}{suffix} {sample_value(value)}",
            ]
        gauges = dict(self.gauges)
        gauges["onex_uptime_seconds"] = ("Seconds since the node started.", lambda: self.uptime_s)
        for name, (help_text, read) in gauges.items():
            lines += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} gauge",
                f"{name}{suffix} {sample_value(read())}",
            ]
        return "\n".join(lines) + "\n"


#: Labels Prometheus sets itself on every scraped series; a target must not use them
#: (``instance`` would be overwritten by, or clash with, the scrape's own).
RESERVED_LABELS = frozenset({"instance", "job"})


def sample_value(value: float) -> str:
    """A sample value at full precision: whole numbers as integers (``1000000``, not
    ``%g``'s ``1e+06``), others with every digit of the float, and Prometheus' spellings
    of NaN and the infinities."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
