"""Shared fixtures (template-owned: `copier update` refreshes this file)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Port 1 on loopback: connections are refused at once, so "no broker" is fast and certain.
ABSENT_BROKER = "127.0.0.1:1"


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Environment of a node whose broker is absent, on a free port, with short timings."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", ABSENT_BROKER)
    monkeypatch.setenv("SERVICE_PORT", "0")
    monkeypatch.setenv("SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("SERVICE_BIND_HOST", "127.0.0.1")
    monkeypatch.setenv("INSTANCE_ID", f"test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("KAFKA_CONNECT_WAIT_S", "0.2")
    monkeypatch.setenv("SHUTDOWN_GRACE_S", "5")
    monkeypatch.setenv("REDUCER_STATE_PATH", str(tmp_path / "state.sqlite3"))
    monkeypatch.chdir(tmp_path)  # ignore a developer's .env
    yield


@pytest.fixture
def kafka_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Environment for integration tests against the broker in KAFKA_BOOTSTRAP_SERVERS.

    Each test gets its own topic prefix and consumer group, so runs never see each
    other's records. Returns the bootstrap servers.
    """
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        pytest.skip(
            "integration test: set KAFKA_BOOTSTRAP_SERVERS=host:port to run it against a real broker"
        )
    run = uuid.uuid4().hex[:10]
    monkeypatch.setenv("KAFKA_ENVIRONMENT", f"it{run}")
    monkeypatch.setenv("KAFKA_CONSUMER_GROUP", f"it-{run}")
    monkeypatch.setenv("INSTANCE_ID", f"it-{run}")
    monkeypatch.setenv("SERVICE_PORT", "0")
    monkeypatch.setenv("SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("SERVICE_BIND_HOST", "127.0.0.1")
    monkeypatch.setenv("HEARTBEAT_INTERVAL_S", "1")
    monkeypatch.setenv("AGGREGATION_WINDOW_S", "0.5")
    monkeypatch.setenv("HANDLER_BACKOFF_S", "0.05")
    monkeypatch.setenv("KAFKA_CONNECT_WAIT_S", "30")
    monkeypatch.setenv("REDUCER_STATE_PATH", str(tmp_path / "state.sqlite3"))
    monkeypatch.chdir(tmp_path)
    yield servers
