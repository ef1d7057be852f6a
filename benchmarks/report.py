"""The pure part of the benchmark: figures, goals, the table and the JSON document."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

#: The JSON document has exactly these keys, in this order (issue 7).
KEYS: Final = (
    "generate_node_s",
    "copier_floor_s",
    "generation_ratio",
    "startup_to_passing_s",
    "publish_ratio",
    "registry_nodes_per_s",
    "node_rss_mb",
    "pipeline_request_s",
    "pipeline_overhead_ratio",
    "pipeline_throughput_1_per_min",
    "pipeline_throughput_2_per_min",
)

Direction = Literal["max", "min"]


@dataclass(frozen=True)
class Goal:
    """``max``: the figure must not exceed ``limit``; ``min``: it must reach ``limit``."""

    direction: Direction
    limit: float

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value <= self.limit if self.direction == "max" else value >= self.limit

    def describe(self) -> str:
        return f"{'<=' if self.direction == 'max' else '>='} {self.limit:g}"


GOALS: Final[dict[str, Goal]] = {
    "generate_node_s": Goal("max", 0.5),
    "copier_floor_s": Goal("max", math.inf),  # a reference, not a goal
    "generation_ratio": Goal("max", 4.0),
    "startup_to_passing_s": Goal("max", 3.0),
    "publish_ratio": Goal("min", 0.7),
    "registry_nodes_per_s": Goal("min", 100.0),
    "node_rss_mb": Goal("max", 100.0),
    "pipeline_request_s": Goal("max", 3.0),  # the design asks < 10 s
    "pipeline_overhead_ratio": Goal("max", 1.3),
    "pipeline_throughput_1_per_min": Goal("max", math.inf),  # a reference, not a goal
    "pipeline_throughput_2_per_min": Goal("max", math.inf),  # compare with the one above
}

UNITS: Final = {
    "generate_node_s": "s",
    "copier_floor_s": "s",
    "generation_ratio": "x",
    "startup_to_passing_s": "s",
    "publish_ratio": "x",
    "registry_nodes_per_s": "nodes/s",
    "node_rss_mb": "MB",
    "pipeline_request_s": "s",
    "pipeline_overhead_ratio": "x",
    "pipeline_throughput_1_per_min": "req/min",
    "pipeline_throughput_2_per_min": "req/min",
}


def median(samples: Iterable[float]) -> float:
    """Median of the samples; ValueError names the problem when there are none."""
    values = [float(v) for v in samples]
    if not values:
        raise ValueError("no samples to take a median of: the measurement produced nothing")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def rss_mb_from_status(status_text: str) -> float:
    """VmRSS of a /proc/<pid>/status text, in MiB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 3 and parts[2].lower() == "kb":
                return int(parts[1]) / 1024
    raise ValueError("no 'VmRSS: <n> kB' line in the status text (a kernel thread or zombie?)")


def figures(values: Mapping[str, float | None]) -> dict[str, float | None]:
    """The JSON document: exactly ``KEYS``, rounded; a figure not measured is null."""
    unknown = set(values) - set(KEYS)
    if unknown:
        raise KeyError(f"not benchmark figures: {', '.join(sorted(unknown))}")
    out: dict[str, float | None] = {}
    for key in KEYS:
        value = values.get(key)
        out[key] = None if value is None or math.isnan(value) else round(float(value), 4)
    return out


def to_json(values: Mapping[str, float | None]) -> str:
    return json.dumps(figures(values), indent=2) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def table(values: Mapping[str, float | None], markdown: bool = False) -> str:
    """The figures against their goals, as plain text or a Markdown table."""
    rows: list[tuple[str, str, str, str]] = []
    for key, value in figures(values).items():
        goal = GOALS[key]
        verdict = goal.met(value)
        if math.isinf(goal.limit):
            goal_text, verdict_text = "reference", ""
        else:
            goal_text = goal.describe()
            verdict_text = {True: "met", False: "MISSED", None: "not measured"}[verdict]
        rows.append((key, f"{_fmt(value)} {UNITS[key]}", goal_text, verdict_text))
    header = ("figure", "value", "goal", "")
    if markdown:
        lines = ["| figure | value | goal | |", "|---|---:|---|---|"]
        lines += [f"| `{a}` | {b} | {c} | {d} |" for a, b, c, d in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def machine() -> str:
    """One line saying what the figures were measured on."""
    cpus = os.cpu_count() or 0
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    memory = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                    break
    except OSError:
        pass
    cpu = f"{cpus} cores" + (f" ({model})" if model else "")
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}{memory}, {system}, Python {platform.python_version()}"


def load_average() -> str:
    """The 1/5/15-minute load averages: how busy the machine was besides the benchmark."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f}/{five:.1f}/{fifteen:.1f}"
