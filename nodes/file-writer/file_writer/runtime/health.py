"""A tiny asyncio HTTP/1.1 server for ``/health``, ``/metrics`` and extra JSON routes.

It is started before anything touches Kafka, so an orchestrator can see why a
node is not ready. Standard library only: it keeps start-up fast and memory low.

Everything a client sends is bounded (``HttpLimits``): the request line and each
header line, the number of header lines and their bytes together, the body, the
bodies of all connections together, the number of connections and the time to send
the head. Over a bound the server answers 414, 431, 413 or 503 and closes the
connection, having held at most the bound in memory; what the client still sends is
read and dropped (up to a bound) so that it can read the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

log = logging.getLogger(__name__)

JsonHandler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class HttpLimits:
    """What one client may make the server hold (bytes) or wait for (seconds)."""

    #: The request line and each header line, CRLF included (414 / 431 over it).
    max_line_bytes: int = 8 * 1024
    #: Header lines per request (431 over it).
    max_headers: int = 100
    #: All header lines of a request together (431 over it).
    max_header_bytes: int = 32 * 1024
    #: One request body (413 over it; Content-Length is required for a body).
    max_body_bytes: int = 1 << 20
    #: Bodies being read or handled on all connections together (503 over it).
    max_bodies_in_flight_bytes: int = 8 << 20
    #: Open connections (503 over it).
    max_connections: int = 256
    #: Time for the request line and headers together (slow clients are dropped).
    head_timeout_s: float = 10.0
    #: Time for the body.
    body_timeout_s: float = 10.0
    #: After refusing a request, bytes (and seconds) of the client's rest read and dropped.
    discard_bytes: int = 1 << 20
    discard_timeout_s: float = 1.0


@dataclass
class HttpStats:
    """What the server held: the tests assert bounds on these, not on timing."""

    #: Largest number of request bytes (head + body) held for one request.
    peak_request_bytes: int = 0
    #: Largest total of bodies held at once.
    peak_bodies_in_flight_bytes: int = 0
    #: Requests refused, by status code.
    refused: dict[int, int] = field(default_factory=dict)


class _Refused(Exception):
    """The request breaks a limit: answer ``status`` and close."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class HealthServer:
    """``/health`` (200 ready / 503 with reasons), ``/metrics`` (Prometheus text), and
    ``POST`` JSON routes added with ``add_json_route``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        reasons: Callable[[], list[str]],
        details: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
        limits: HttpLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self.stats = HttpStats()
        self._bodies_in_flight = 0
        self._reasons = reasons
        self._details = details
        self._metrics = metrics
        self._routes: dict[str, JsonHandler] = {}
        self._get_routes: dict[str, Callable[[], Awaitable[Any]]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    def add_json_route(self, path: str, handler: JsonHandler) -> None:
        self._routes[path] = handler

    def add_get_route(self, path: str, handler: Callable[[], Awaitable[Any]]) -> None:
        """``GET path`` answers ``handler()`` as JSON (e.g. a reducer's ``/state``)."""
        self._get_routes[path] = handler

    @property
    def bound_port(self) -> int:
        """The real port (useful when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is None:
            # ``limit`` bounds the reader's buffer for one line (readline raises beyond it).
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=self.limits.max_line_bytes
            )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if len(self._connections) > self.limits.max_connections:
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections")
            await self._handle(reader, writer)
        except _Refused as exc:
            await self._refuse(reader, writer, exc)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exc: _Refused
    ) -> None:
        """Answer ``exc.status``, then read and drop (bounded) what the client still sends,
        so it can read the answer instead of a connection reset."""
        code = exc.status.value
        self.stats.refused[code] = self.stats.refused.get(code, 0) + 1
        body = json.dumps({"error": str(exc)}).encode()
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(_head(exc.status, "application/json", len(body)) + body)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            limits = self.limits
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.discard_timeout_s):
                    dropped = 0
                    while dropped < limits.discard_bytes:
                        chunk = await reader.read(64 * 1024)
                        if not chunk:
                            break
                        dropped += len(chunk)

    async def _readline(self, reader: asyncio.StreamReader, what: str) -> bytes:
        try:
            return await reader.readline()
        except ValueError:  # the line is longer than the reader's limit
            status = (
                HTTPStatus.REQUEST_URI_TOO_LONG
                if what == "request line"
                else HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            )
            raise _Refused(status, f"{what} over {self.limits.max_line_bytes} bytes") from None

    async def _read_head(
        self, reader: asyncio.StreamReader
    ) -> tuple[list[str], dict[str, str], int] | None:
        """(request line parts, headers, bytes read), or None when the client sent nothing."""
        limits = self.limits
        request_line = await self._readline(reader, "request line")
        if not request_line:
            return None
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            raise _Refused(HTTPStatus.BAD_REQUEST, "malformed request line")
        size = len(request_line)
        headers: dict[str, str] = {}
        count = 0
        while True:
            line = await self._readline(reader, "header line")
            if line in (b"\r\n", b"\n", b""):
                break
            count += 1
            size += len(line)
            if count > limits.max_headers:
                raise _Refused(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"more than {limits.max_headers} header lines",
                )
            if size > limits.max_header_bytes:
                raise _Refused(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"request head over {limits.max_header_bytes} bytes",
                )
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return parts, headers, size

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.limits.head_timeout_s):
            head = await self._read_head(reader)
        if head is None:
            return
        (method, target, _), headers, head_size = head
        self._note_request_bytes(head_size)
        path = target.split("?", 1)[0]
        try:
            status, content_type, body = await self._route(method, path, headers, reader, head_size)
        except HttpError as exc:
            status, content_type = exc.status, "application/json"
            body = json.dumps({"error": str(exc)}).encode()
        writer.write(_head(status, content_type, len(body)) + (b"" if method == "HEAD" else body))
        await writer.drain()

    def _note_request_bytes(self, size: int) -> None:
        self.stats.peak_request_bytes = max(self.stats.peak_request_bytes, size)

    async def _read_body(
        self, reader: asyncio.StreamReader, headers: dict[str, str], head_size: int
    ) -> bytes:
        """The body, within the limits; the caller releases ``len(body)`` from the budget."""
        limits = self.limits
        if "transfer-encoding" in headers:
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        raw_length = headers.get("content-length", "0")
        if not raw_length.isdigit():
            raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length must be a whole number")
        length = int(raw_length)
        if length > limits.max_body_bytes:
            raise _Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limits.max_body_bytes} bytes"
            )
        if self._bodies_in_flight + length > limits.max_bodies_in_flight_bytes:
            raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "busy: too many request bodies")
        self._bodies_in_flight += length
        stats = self.stats
        stats.peak_bodies_in_flight_bytes = max(
            stats.peak_bodies_in_flight_bytes, self._bodies_in_flight
        )
        self._note_request_bytes(head_size + length)
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                return await reader.readexactly(length) if length else b""
        except BaseException:
            self._bodies_in_flight -= length
            raise

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        head_size: int,
    ) -> tuple[HTTPStatus, str, bytes]:
        if path in ("/health", "/health/ready") and method in ("GET", "HEAD"):
            reasons = self._reasons()
            body = {"status": "ready" if not reasons else "not_ready", "reasons": reasons}
            body.update(self._details())
            status = HTTPStatus.OK if not reasons else HTTPStatus.SERVICE_UNAVAILABLE
            return status, "application/json", json.dumps(body).encode()
        if path == "/health/live" and method in ("GET", "HEAD"):
            return HTTPStatus.OK, "application/json", b'{"status":"alive"}'
        if path == "/metrics" and method in ("GET", "HEAD"):
            return (
                HTTPStatus.OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self._metrics().encode(),
            )
        getter = self._get_routes.get(path)
        if getter is not None and method in ("GET", "HEAD"):
            return HTTPStatus.OK, "application/json", json.dumps(await getter()).encode()
        handler = self._routes.get(path)
        if handler is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no route {path}")
        if method != "POST":
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts POST with a JSON body")
        raw = await self._read_body(reader, headers, head_size)
        try:
            return await self._call(path, handler, raw)
        finally:
            self._bodies_in_flight -= len(raw)

    async def _call(
        self, path: str, handler: JsonHandler, raw: bytes
    ) -> tuple[HTTPStatus, str, bytes]:
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        try:
            result = await handler(data)
        except HttpError:
            raise
        except (ValueError, TypeError) as exc:
            raise HttpError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from exc
        except Exception as exc:
            log.exception("route %s failed", path)
            raise HttpError(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}"
            ) from exc
        return HTTPStatus.OK, "application/json", json.dumps(result, default=str).encode()


def _head(status: HTTPStatus, content_type: str, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
