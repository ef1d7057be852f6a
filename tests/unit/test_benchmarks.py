"""The pure parts of benchmarks/: statistics, goals, the JSON document and the table.

No timing is asserted here: speed lives in ``benchmarks/run.py`` only.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest

# benchmarks/ is a folder of the checkout (on pytest's pythonpath), not part of the package.
from benchmarks import report
from benchmarks.registry import HealthServer


def test_json_has_exactly_the_issue_keys_in_order() -> None:
    values = {key: float(i) for i, key in enumerate(report.KEYS)}
    document = json.loads(report.to_json(values))
    assert list(document) == [
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
    ]
    assert document["publish_ratio"] == 4.0
    assert document["uvloop"] is True  # a flag is true/false, never a number


def test_uvloop_flag_false_and_unmeasured() -> None:
    assert json.loads(report.to_json({"uvloop": 0.0}))["uvloop"] is False
    assert json.loads(report.to_json({}))["uvloop"] is None
    lines = {line.split()[0]: line for line in report.table({"uvloop": 1.0}).splitlines()[1:]}
    assert " yes " in lines["uvloop"] + " "
    assert "MISSED" not in lines["uvloop"]


def test_unmeasured_figures_are_null_not_invented() -> None:
    document = json.loads(report.to_json({"generate_node_s": 0.4, "publish_ratio": math.nan}))
    assert document["generate_node_s"] == 0.4
    assert document["publish_ratio"] is None
    assert document["node_rss_mb"] is None
    assert set(document) == set(report.KEYS)


def test_unknown_figure_is_refused() -> None:
    with pytest.raises(KeyError, match="machine"):
        report.figures({"machine": 2.0})


def test_median_and_ratio() -> None:
    assert report.median([3.0, 1.0, 2.0]) == 2.0
    assert report.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(ValueError, match="no samples"):
        report.median([])
    assert report.ratio(1.0, 4.0) == 0.25
    assert math.isnan(report.ratio(1.0, 0.0))


@pytest.mark.parametrize(
    ("key", "value", "met"),
    [
        ("generate_node_s", 0.5, True),
        ("generate_node_s", 0.51, False),
        ("publish_ratio", 0.7, True),
        ("publish_ratio", 0.69, False),
        ("registry_nodes_per_s", 99.0, False),
        ("node_rss_mb", 100.0, True),
        ("startup_to_passing_s", None, None),
        ("publish_vs_floor", 0.9, True),
        ("publish_vs_floor", 0.89, False),
        ("publish_vs_aiokafka", 3.9, False),
        ("consume_ratio", 0.7, True),
        ("registry_ratio", 0.49, False),
        ("node_rss_vs_faststream", 1.2, True),
        ("node_rss_vs_faststream", 1.21, False),
        ("startup_vs_faststream", 5.0, True),  # a reference: never missed
    ],
)
def test_goal_directions(key: str, value: float | None, met: bool | None) -> None:
    assert report.GOALS[key].met(value) is met


def test_table_marks_missed_goals_and_missing_figures() -> None:
    text = report.table({"generate_node_s": 0.8, "publish_ratio": 0.9})
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "MISSED" in lines["generate_node_s"]
    assert lines["publish_ratio"].rstrip().endswith("met")
    assert "not measured" in lines["node_rss_mb"]
    assert "reference" in lines["copier_floor_s"]
    markdown = report.table({"node_rss_mb": 44.1}, markdown=True)
    assert markdown.splitlines()[0].startswith("| figure |")
    assert "| `node_rss_mb` | 44.1 MB | <= 100 | met |" in markdown


def test_rss_from_proc_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  99999 kB\nVmRSS:\t   45056 kB\nThreads:\t7\n"
    assert report.rss_mb_from_status(status) == 44.0
    with pytest.raises(ValueError, match="VmRSS"):
        report.rss_mb_from_status("Name:\tkthreadd\n")


def test_health_server_answers_every_synthetic_node_and_nothing_else() -> None:
    # Loopback only; the server is what the registry benchmark's nodes point Consul at.
    with HealthServer() as server:
        for index in (0, 7, 499):
            with urllib.request.urlopen(server.url(index), timeout=5) as response:
                assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5)
        assert missing.value.code == 404
        missing.value.close()  # the error holds the response's socket


def test_contenders_table_shows_each_rate_against_the_best_of_its_task() -> None:
    rows = [
        report.Contender("publish", "floor", 50_000.0, cpu_us=10.0),
        report.Contender("publish", "ours", 40_000.0, cpu_us=12.5, note="uvloop"),
        report.Contender("publish", "aiokafka", math.nan),
        report.Contender("registry", "floor", 200.0, "nodes/s"),
        report.Contender("registry", "ours", 150.0, "nodes/s"),
    ]
    text = report.contenders_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["task", "contender"]
    ours = next(line for line in lines if " ours " in line and line.startswith("publish"))
    assert "40,000 msg/s" in ours and "0.80" in ours and "12.5" in ours and "uvloop" in ours
    missing = next(line for line in lines if "aiokafka" in line)
    assert "n/a" in missing and "0." not in missing
    registry_ours = next(line for line in lines if line.startswith("registry") and "ours" in line)
    assert "0.75" in registry_ours and "nodes/s" in registry_ours
    markdown = report.contenders_table(rows, markdown=True).splitlines()
    assert markdown[0].startswith("| task | contender |")
    assert "| publish | floor | 50,000 msg/s | 1.00 | 10.0 |  |" in markdown


def test_contenders_table_times_and_memory_best_is_smallest() -> None:
    rows = [
        report.Contender("idle memory", "ours", 40.0, "MB RSS", higher_is_better=False),
        report.Contender("idle memory", "peer", 50.0, "MB RSS", higher_is_better=False),
    ]
    lines = report.contenders_table(rows).splitlines()
    assert "40.00 MB RSS" in lines[1] and "1.00" in lines[1]
    assert "50.00 MB RSS" in lines[2] and "0.80" in lines[2]


def test_a_lost_or_duplicated_request_during_a_rollout_misses_its_goal() -> None:
    lines = {
        line.split()[0]: line
        for line in report.table(
            {"rollout_lost_or_duplicated": 1.0, "rollout_requests": 50.0}
        ).splitlines()[1:]
    }
    assert "MISSED" in lines["rollout_lost_or_duplicated"]
    assert "MISSED" not in lines["rollout_requests"]
