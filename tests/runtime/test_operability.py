"""What an operator meets first: settings from ``.env``, quiet logs without a broker,
Prometheus output that scrapes cleanly."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from .conftest import RenderedNode

# -- librdkafka log throttling (pure) ---------------------------------------------------


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord(
        "librdkafka",
        logging.ERROR,
        __file__,
        1,
        "%s [%s] %s",
        ("FAIL", "rdkafka#producer-1", text),
        None,
    )


def test_connection_errors_pass_once_then_once_per_interval_with_a_count(
    rendered: dict[str, RenderedNode],
) -> None:
    kafka_logs = rendered["effect"].module("runtime.kafka_logs")
    now = [100.0]
    throttle = kafka_logs.KafkaLogThrottle(30.0, clock=lambda: now[0])
    refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    passed = []
    for _ in range(300):  # 20 a second for 15 s
        record = _record(refused)
        if throttle.filter(record):
            passed.append(record.getMessage())
        now[0] += 0.05
    assert len(passed) == 1
    assert "repeats shown at most every 30s" in passed[0] and "Connection refused" in passed[0]
    now[0] += 20.0  # 35 s after the first
    record = _record(refused)
    assert throttle.filter(record)
    assert "299 more in the last 35s not shown" in record.getMessage()
    # Anything else librdkafka says passes unchanged.
    other = _record("Topic x partition count changed from 1 to 3")
    assert throttle.filter(other)
    assert other.getMessage().endswith("partition count changed from 1 to 3")


# -- Prometheus (pure) --------------------------------------------------------------


def test_metrics_keep_full_precision_and_no_reserved_labels(
    rendered: dict[str, RenderedNode],
) -> None:
    metrics_mod = rendered["effect"].module("runtime.metrics")
    metrics = metrics_mod.Metrics({"service": "svc", "instance_id": "i-1"})
    metrics.inc("onex_events_published_total", 1_000_000)
    metrics.inc("onex_messages_consumed_total", 123_456_789_012)
    metrics.gauge("onex_fraction", "A fraction.", lambda: 0.1 + 0.2)
    metrics.gauge("onex_nan", "Not a number.", lambda: float("nan"))
    text = metrics.render()
    assert 'onex_events_published_total{instance_id="i-1",service="svc"} 1000000\n' in text
    assert "} 123456789012\n" in text
    assert "} 0.30000000000000004\n" in text
    assert "onex_nan{" in text and "} NaN\n" in text
    assert "e+" not in text
    assert not re.search(r"[{,]instance=", text)
    with pytest.raises(ValueError, match="reserved by Prometheus"):
        metrics_mod.Metrics({"instance": "i-1"})


def test_a_node_labels_its_metrics_instance_id(
    rendered: dict[str, RenderedNode], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INSTANCE_ID", "node-7")
    node = rendered["compute"].node_class()()
    text = node.metrics.render()
    assert 'instance_id="node-7"' in text
    assert not re.search(r"[{,]instance=", text)


# -- start_node.py without a broker, settings from .env ----------------------------------


def _closed_port() -> int:
    return free_port()  # nothing listens there


def _run(project: RenderedNode, env: dict[str, str], seconds: float) -> str:
    """Run ``start_node.py`` in its project folder for ``seconds``, stop it, return its output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SERVICE_", "LOG_"))}
    proc = subprocess.Popen(
        [sys.executable, "start_node.py"],
        cwd=project.path,
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


def test_no_broker_at_start_gives_a_few_clear_lines(rendered: dict[str, RenderedNode]) -> None:
    port = _closed_port()
    output = _run(
        rendered["effect"],
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "SERVICE_PORT": "0",
            "SERVICE_BIND_HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "KAFKA_CONNECT_WAIT_S": "2",
        },
        seconds=8,
    )
    lines = output.strip().splitlines()
    # Before: about 20 librdkafka ERROR lines a second (139 lines in 10 s).
    assert len(lines) <= 10, output
    assert sum("Kafka connection error" in line for line in lines) == 1, output
    assert any(f"Kafka is not reachable at 127.0.0.1:{port}" in line for line in lines), output


def test_settings_in_dot_env_take_effect_and_the_environment_wins(
    rendered: dict[str, RenderedNode], tmp_path: Path
) -> None:
    project = rendered["effect"]
    port = free_port()
    dot_env = project.path / ".env"
    dot_env.write_text(
        f"LOG_LEVEL=DEBUG\nSERVICE_PORT={port}\nSERVICE_BIND_HOST=127.0.0.1\n"
        f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{_closed_port()}\nINSTANCE_ID=from-dot-env\n"
    )
    try:
        answers: list[Any] = []

        def probe() -> None:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        pass
                except urllib.error.HTTPError as exc:  # 503: no broker, as expected
                    answers.append(exc.code)
                    return
                except OSError:
                    time.sleep(0.1)

        import threading

        thread = threading.Thread(target=probe)
        thread.start()
        output = _run(project, {}, seconds=4)
        thread.join()
        assert answers == [503], output  # SERVICE_PORT from .env
        assert " DEBUG " in output, output  # LOG_LEVEL from .env
        # The process environment wins over .env.
        quiet = _run(project, {"LOG_LEVEL": "WARNING", "SERVICE_PORT": "0"}, seconds=3)
        assert " DEBUG " not in quiet and " INFO " not in quiet, quiet
    finally:
        dot_env.unlink()
