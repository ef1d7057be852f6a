"""Pure logic of the runtime (no broker): breaker, backoff, settings precedence, HTTP parsing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import RenderedNode


@pytest.fixture
def rt(rendered: dict[str, RenderedNode]) -> Any:
    class Runtime:
        resilience = rendered["effect"].module("runtime.resilience")
        config = rendered["effect"].module("runtime.config")
        health = rendered["effect"].module("runtime.health")
        metrics = rendered["effect"].module("runtime.metrics")
        testing = rendered["effect"].module("runtime.testing")
        node = rendered["effect"].module("node")

    return Runtime


def test_breaker_opens_after_threshold_probes_once_then_closes(rt: Any) -> None:
    now = [0.0]
    breaker = rt.resilience.CircuitBreaker(failure_threshold=3, reset_s=10, clock=lambda: now[0])
    state = rt.resilience.BreakerState
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is state.CLOSED
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is state.OPEN
    with pytest.raises(rt.resilience.CircuitOpenError, match=r"next probe in 10\.0s"):
        breaker.before_call()
    now[0] = 10.0
    assert breaker.state is state.HALF_OPEN
    breaker.before_call()  # the one probe
    with pytest.raises(rt.resilience.CircuitOpenError):
        breaker.before_call()  # no second probe while the first is out
    breaker.record_failure()
    assert breaker.state is state.OPEN  # a failed probe re-opens for a full cool-down
    now[0] = 20.0
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is state.CLOSED
    assert breaker.consecutive_failures == 0


def test_backoff_grows_and_is_capped(rt: Any) -> None:
    delays = [rt.resilience.backoff_delay(n, 0.5, 4.0) for n in range(1, 8)]
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(d <= 4.0 for d in delays)
    assert all(d >= 2.0 for d in delays[4:])


def test_environment_overrides_the_answers(rt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = rt.node.ANSWERS
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("SERVICE_PORT", raising=False)
    monkeypatch.delenv("SHUTDOWN_GRACE_S", raising=False)
    settings = answers.load_settings()
    assert settings.kafka_bootstrap_servers == "omninode-bridge-redpanda:9092"
    assert settings.service_port == 8000
    assert settings.shutdown_grace_s == 20
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:19092")
    monkeypatch.setenv("SERVICE_PORT", "9001")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    settings = answers.load_settings()
    assert settings.kafka_bootstrap_servers == "broker:19092"
    assert settings.service_port == 9001
    assert settings.kafka_common()["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(settings)


def test_invalid_environment_names_the_variable(rt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_NAME", "Not_A_Label")
    with pytest.raises(ValueError, match="SERVICE_NAME must be a lower-case DNS label"):
        rt.node.ANSWERS.load_settings()


async def test_health_server_answers_errors_as_json(rt: Any) -> None:
    reasons: list[str] = []

    async def echo(body: Any) -> Any:
        if body.get("fail"):
            raise ValueError("fail was set")
        return body

    server = rt.health.HealthServer(
        "127.0.0.1", 0, reasons=lambda: reasons, details=dict, metrics=lambda: "m 1\n"
    )
    server.add_json_route("/echo", echo)
    await server.start()
    base = f"http://127.0.0.1:{server.bound_port}"
    http = rt.testing.http_request
    try:
        assert (await http(f"{base}/health"))[0] == 200
        reasons.append("warming up")
        status, body = await http(f"{base}/health")
        assert status == 503 and b"warming up" in body
        assert await http(f"{base}/metrics") == (200, b"m 1\n")
        assert (await http(f"{base}/nope"))[0] == 404
        assert (await http(f"{base}/echo"))[0] == 405
        assert await http(f"{base}/echo", "POST", {"a": 1}) == (200, b'{"a": 1}')
        assert (await http(f"{base}/echo", "POST", {"fail": True}))[0] == 422
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        await writer.drain()
        assert b" 413 " in await reader.read()
        writer.close()
    finally:
        await server.stop()


def test_metrics_text_is_prometheus_format(rt: Any) -> None:
    metrics = rt.metrics.Metrics({"service": 'a"b'})
    metrics.inc("onex_events_published_total", 3)
    metrics.gauge("onex_x", "help", lambda: 1.5)
    text = metrics.render()
    assert "# TYPE onex_events_published_total counter" in text
    assert 'onex_events_published_total{service="a\\"b"} 3' in text
    assert 'onex_x{service="a\\"b"} 1.5' in text
    assert "onex_uptime_seconds" in text
