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

#: The JSON document has exactly these keys, in this order (issue 7, then issue 15's
#: comparisons with the peers and floors measured in the same run).
KEYS: Final = (
    "generate_node_s",
    "copier_floor_s",
    "generation_ratio",
    "startup_to_passing_s",
    "publish_ratio",
    "registry_nodes_per_s",
    "node_rss_mb",
    "publish_vs_floor",
    "publish_vs_faststream",
    "publish_vs_aiokafka",
    "publish_many_ratio",
    "consume_ratio",
    "consume_vs_faststream",
    "registry_ratio",
    "node_rss_vs_faststream",
    "startup_vs_faststream",
    "uvloop",
    "pipeline_request_s",
    "pipeline_overhead_ratio",
    "pipeline_throughput_1_per_min",
    "pipeline_throughput_2_per_min",
    "self_regeneration_s",
    "rollout_requests",
    "rollout_lost_or_duplicated",
)

#: Keys whose value is yes/no (JSON true/false), not a number.
FLAGS: Final = frozenset({"uvloop"})

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
    "publish_vs_floor": Goal("min", 0.9),
    "publish_vs_faststream": Goal("min", 1.5),
    "publish_vs_aiokafka": Goal("min", 4.0),
    "publish_many_ratio": Goal("min", 0.85),
    "consume_ratio": Goal("min", 0.7),
    "consume_vs_faststream": Goal("min", 1.2),
    "registry_ratio": Goal("min", 0.5),
    "node_rss_vs_faststream": Goal("max", 1.2),
    "startup_vs_faststream": Goal("max", math.inf),  # a reference, not a goal
    "uvloop": Goal("max", math.inf),  # how the figures were measured
    "pipeline_request_s": Goal("max", 3.0),  # the design asks < 10 s
    "pipeline_overhead_ratio": Goal("max", 1.3),
    "pipeline_throughput_1_per_min": Goal("max", math.inf),  # a reference, not a goal
    "pipeline_throughput_2_per_min": Goal("max", math.inf),  # compare with the one above
    "self_regeneration_s": Goal("max", math.inf),  # a reference: eight nodes, full validation
    "rollout_requests": Goal("min", 50),
    "rollout_lost_or_duplicated": Goal("max", 0),
}

UNITS: Final = {
    "generate_node_s": "s",
    "copier_floor_s": "s",
    "generation_ratio": "x",
    "startup_to_passing_s": "s",
    "publish_ratio": "x",
    "registry_nodes_per_s": "nodes/s",
    "node_rss_mb": "MB",
    "publish_vs_floor": "x",
    "publish_vs_faststream": "x",
    "publish_vs_aiokafka": "x",
    "publish_many_ratio": "x",
    "consume_ratio": "x",
    "consume_vs_faststream": "x",
    "registry_ratio": "x",
    "node_rss_vs_faststream": "x",
    "startup_vs_faststream": "x",
    "uvloop": "",
    "pipeline_request_s": "s",
    "pipeline_overhead_ratio": "x",
    "pipeline_throughput_1_per_min": "req/min",
    "pipeline_throughput_2_per_min": "req/min",
    "self_regeneration_s": "s",
    "rollout_requests": "req",
    "rollout_lost_or_duplicated": "req",
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


Figure = float | bool | None


def figures(values: Mapping[str, float | None]) -> dict[str, Figure]:
    """The JSON document: exactly ``KEYS``, rounded; a figure not measured is null; the
    ``FLAGS`` are true/false (a value of 0 is false)."""
    unknown = set(values) - set(KEYS)
    if unknown:
        raise KeyError(f"not benchmark figures: {', '.join(sorted(unknown))}")
    out: dict[str, Figure] = {}
    for key in KEYS:
        value = values.get(key)
        if value is None or math.isnan(value):
            out[key] = None
        elif key in FLAGS:
            out[key] = bool(value)
        else:
            out[key] = round(float(value), 4)
    return out


def to_json(values: Mapping[str, float | None]) -> str:
    return json.dumps(figures(values), indent=2) + "\n"


def _fmt(value: Figure) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
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
        verdict = goal.met(None if isinstance(value, bool) else value)
        if math.isinf(goal.limit):
            goal_text, verdict_text = "reference", ""
        else:
            goal_text = goal.describe()
            verdict_text = {True: "met", False: "MISSED", None: "not measured"}[verdict]
        rows.append((key, f"{_fmt(value)} {UNITS[key]}".rstrip(), goal_text, verdict_text))
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


@dataclass(frozen=True)
class Contender:
    """One row of the side-by-side table: medians of one way to do the job."""

    task: str
    name: str
    rate: float | None  # records/s (or nodes/s)
    unit: str = "msg/s"
    cpu_us: float | None = None  # process CPU per record
    note: str = ""
    #: False for times and memory: the best of the task is then the smallest.
    higher_is_better: bool = True


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def contenders_table(rows: Iterable[Contender], markdown: bool = False) -> str:
    """Ours, the peers and the floors side by side; each figure also against the best of its
    task (1.00 = the best; below 1 = slower, or larger for times and memory)."""
    items = list(rows)
    best: dict[str, float] = {}
    for row in items:
        if row.rate is not None and not math.isnan(row.rate):
            pick = max if row.higher_is_better else min
            best[row.task] = pick(best.get(row.task, row.rate), row.rate)
    cells: list[tuple[str, str, str, str, str, str]] = []
    for row in items:
        top = best.get(row.task)
        measured = row.rate is not None and not math.isnan(row.rate)
        share = ""
        if measured and top and row.rate:
            share = f"{row.rate / top if row.higher_is_better else top / row.rate:.2f}"
        rate = "n/a" if row.rate is None or not measured else _amount(row.rate)
        cpu = "" if row.cpu_us is None else f"{row.cpu_us:.1f}"
        cells.append((row.task, row.name, f"{rate} {row.unit}", share, cpu, row.note))
    header = ("task", "contender", "median", "of best", "CPU us/rec", "note")
    if markdown:
        lines = [
            "| task | contender | median | of best | CPU µs/record | note |",
            "|---|---|---:|---:|---:|---|",
        ]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(6)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *cells]
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
