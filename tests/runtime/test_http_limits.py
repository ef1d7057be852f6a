"""The node's HTTP server bounds what a client can make it hold: real sockets on loopback.

The assertions are on the server's own accounting (``HealthServer.stats``: the most request
bytes it held for one request, the bodies it held at once, what it refused) and on what
the client saw (a 4xx/503 answer or a closed connection), never on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from .conftest import RenderedNode

MB = 1024 * 1024


@pytest.fixture
def health(rendered: dict[str, RenderedNode]) -> Any:
    return rendered["compute"].module("runtime.health")


@contextlib.asynccontextmanager
async def serving(health: Any, **limits: Any) -> AsyncIterator[Any]:
    server = health.HealthServer(
        "127.0.0.1",
        0,
        reasons=lambda: [],
        details=lambda: {},
        metrics=lambda: "",
        limits=health.HttpLimits(**limits),
    )

    async def echo(data: Any) -> Any:
        return {"got": data}

    server.add_json_route("/echo", echo)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def exchange(
    port: int, head: bytes, stream: Callable[[], bytes] | None = None, total: int = 0
) -> tuple[bytes, int]:
    """Send ``head``, then ``stream()`` chunks up to ``total`` bytes while reading the
    answer; returns (what the server answered, bytes the client managed to send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(head)
        await writer.drain()
        sent += len(head)
        while stream is not None and sent < total:
            chunk = stream()
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    sender = asyncio.create_task(send())
    answer = b""
    try:
        with contextlib.suppress(ConnectionError):
            answer = await asyncio.wait_for(reader.read(), 60)
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait_for(sender, 60)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return answer, sent


def status_of(answer: bytes) -> int | None:
    """The status code, or None when the connection closed without one (reset)."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


async def test_sixty_megabytes_of_headers_are_cut_off_at_the_head_limit(health: Any) -> None:
    async with serving(health) as server:
        counter = iter(range(10**9))

        def header_lines() -> bytes:
            # 64 distinct 1 KiB header lines per chunk: a dict of unbounded size before.
            return b"".join(b"X-Pad-%d: %s\r\n" % (next(counter), b"a" * 1000) for _ in range(64))

        answer, sent = await exchange(
            server.bound_port, b"GET /health HTTP/1.1\r\n", header_lines, 60 * MB
        )
        limits = server.limits
        assert status_of(answer) in (431, None), answer[:200]
        print(f"60 MB of headers: answer {status_of(answer)}, client sent {sent} bytes")
        assert server.stats.refused == {431: 1}
        # The server held one head's worth, then dropped the rest unread-into-memory.
        assert server.stats.peak_request_bytes <= limits.max_header_bytes + limits.max_line_bytes
        assert sent < 60 * MB


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)), 431),
        (b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * (100 * 1024) + b"\r\n", 431),
        (b"GET /" + b"a" * (100 * 1024) + b" HTTP/1.1\r\n", 414),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 411),
        (b"POST /echo HTTP/1.1\r\nContent-Length: -5\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 62914560\r\n", 413),
        (b"NONSENSE\r\n", 400),
    ],
    ids=["101-headers", "long-header", "long-request-line", "chunked", "negative", "60mb", "bad"],
)
async def test_heads_over_a_limit_are_refused_with_the_right_status(
    health: Any, head: bytes, status: int
) -> None:
    async with serving(health) as server:
        answer, _ = await exchange(server.bound_port, head + b"\r\n")
        assert status_of(answer) == status, answer[:300]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert server.stats.refused == {status: 1}
        assert server.stats.peak_request_bytes <= server.limits.max_header_bytes


async def test_a_sixty_megabyte_body_is_refused_before_it_is_read(health: Any) -> None:
    async with serving(health) as server:
        head = b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (60 * MB)
        answer, sent = await exchange(server.bound_port, head, lambda: b"x" * (256 * 1024), 60 * MB)
        assert status_of(answer) in (413, None), answer[:200]
        print(f"60 MB body: answer {status_of(answer)}, client sent {sent} bytes")
        assert server.stats.refused == {413: 1}
        assert server.stats.peak_request_bytes <= server.limits.max_header_bytes
        assert server.stats.peak_bodies_in_flight_bytes == 0
        assert sent < 60 * MB


async def test_bodies_within_the_limit_are_served(health: Any) -> None:
    async with serving(health) as server:
        body = json.dumps({"text": "a" * 500_000}).encode()
        head = b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        answer, _ = await exchange(server.bound_port, head + body)
        assert status_of(answer) == 200
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"got": {"text": "a" * 500_000}}
        assert server.stats.refused == {}
        assert len(body) < server.stats.peak_request_bytes <= len(head) + len(body)


async def test_bodies_of_all_connections_share_one_budget(health: Any) -> None:
    async with serving(health, max_bodies_in_flight_bytes=3000, max_body_bytes=2000) as server:
        release, entered = asyncio.Event(), asyncio.Event()

        async def slow(data: Any) -> Any:
            entered.set()
            await release.wait()
            return data

        server.add_json_route("/slow", slow)
        body = json.dumps({"a": "x" * 1900}).encode()
        head = b"POST /slow HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        first = asyncio.create_task(exchange(server.bound_port, head + body))
        await asyncio.wait_for(entered.wait(), 30)
        second, _ = await exchange(server.bound_port, head + body)
        assert status_of(second) == 503
        release.set()
        answer, _ = await first
        assert status_of(answer) == 200
        assert server.stats.peak_bodies_in_flight_bytes == len(body)
        assert server._bodies_in_flight == 0  # released after the answer


async def test_connections_over_the_limit_are_refused(health: Any) -> None:
    async with serving(health, max_connections=2) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.bound_port) for _ in range(2)]
        for _ in range(3000):  # until the server has accepted both
            if len(server._connections) >= 2:
                break
            await asyncio.sleep(0.01)
        answer, _ = await exchange(server.bound_port, b"GET /health HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 503
        for _, writer in idle:
            writer.close()


async def test_a_client_that_never_finishes_its_head_is_dropped(health: Any) -> None:
    async with serving(health, head_timeout_s=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /health HTTP/1.1\r\nX-Slow: 1\r\n")
        await writer.drain()
        closed: Awaitable[bytes] = reader.read()
        assert await asyncio.wait_for(closed, 10) == b""
        writer.close()
