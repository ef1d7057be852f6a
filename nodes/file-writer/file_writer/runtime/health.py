"""A tiny asyncio HTTP/1.1 server for ``/health``, ``/metrics`` and extra JSON routes.

It is started before anything touches Kafka, so an orchestrator can see why a
node is not ready. Standard library only: it keeps start-up fast and memory low.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

log = logging.getLogger(__name__)

JsonHandler = Callable[[Any], Awaitable[Any]]

_MAX_BODY = 1 << 20  # 1 MiB: more is refused with 413
_READ_TIMEOUT_S = 10.0


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
    ) -> None:
        self.host = host
        self.port = port
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
            self._server = await asyncio.start_server(self._serve, self.host, self.port)

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
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            return
        method, target, _ = parts
        headers: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        try:
            status, content_type, body = await self._route(method, path, headers, reader)
        except HttpError as exc:
            status, content_type = exc.status, "application/json"
            body = json.dumps({"error": str(exc)}).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
        await writer.drain()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], reader: asyncio.StreamReader
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
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length must be an integer") from None
        if length > _MAX_BODY:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {_MAX_BODY} bytes")
        raw = await asyncio.wait_for(reader.readexactly(length), _READ_TIMEOUT_S) if length else b""
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
