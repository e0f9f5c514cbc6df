"""Exchange-agnostic plumbing that serves a simulated exchange to HTTP clients.

A simulated exchange is just a synchronous *handler*: a function that takes one HTTP request
(method, raw path, raw query string, body, headers, client IP) and returns a `SimResponse`. This
module knows nothing about any particular exchange. It offers three ways to put a handler in
front of a client:

- `SimulatorAsyncTransport` / `SimulatorSyncTransport`: httpx transports that call the handler
  in-process, for unit tests that want a real `httpx` client but no sockets.
- `SimulatorServer`: a real aiohttp server on a TCP port (127.0.0.1 by default), for end-to-end
  tests and demos.
- `serve_in_thread`: the same server hosted on its own event loop in a daemon thread, so that
  synchronous tests and subprocess-driven tests can use it.

Paths under `/_simulator/` may be routed to a separate *admin handler* (key management, fault
injection); everything else goes to the exchange handler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType

import httpx
from aiohttp import web

__all__ = [
    "ADMIN_PREFIX",
    "Handler",
    "SimResponse",
    "SimulatorAsyncTransport",
    "SimulatorServer",
    "SimulatorSyncTransport",
    "serve_in_thread",
]

#: Requests whose path starts with this prefix go to the admin handler when one is given.
ADMIN_PREFIX = "/_simulator/"


@dataclass(frozen=True)
class SimResponse:
    """One simulated HTTP answer; `delay` is latency the transport must wait before answering."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


#: (method, raw path, raw query string, body, headers, client IP) -> response.
Handler = Callable[[str, str, str, bytes, Mapping[str, str], str], SimResponse]


def _is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX.rstrip("/") or path.startswith(ADMIN_PREFIX)


def _pick(handler: Handler, admin_handler: Handler | None, path: str) -> Handler:
    if admin_handler is not None and _is_admin_path(path):
        return admin_handler
    return handler


def _split_raw_target(raw_path: bytes) -> tuple[str, str]:
    """Split httpx's raw request target into (path, query) without decoding percent-escapes."""
    path, _, query = raw_path.partition(b"?")
    # Request targets are ASCII on the wire (httpx percent-encodes everything else), so
    # decoding cannot change a byte that a signature covers.
    return path.decode("ascii"), query.decode("ascii")


class SimulatorAsyncTransport(httpx.AsyncBaseTransport):
    """An httpx async transport that answers every request from a simulator handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        client_ip: str = "127.0.0.1",
        admin_handler: Handler | None = None,
    ) -> None:
        self._handler = handler
        self._admin_handler = admin_handler
        self._client_ip = client_ip

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Hand the raw request to the handler and wait out its injected latency."""
        body = await request.aread()
        path, raw_query = _split_raw_target(request.url.raw_path)
        handler = _pick(self._handler, self._admin_handler, path)
        sim = handler(request.method, path, raw_query, body, request.headers, self._client_ip)
        if sim.delay > 0:
            await asyncio.sleep(sim.delay)
        return httpx.Response(sim.status, headers=sim.headers, content=sim.body)


class SimulatorSyncTransport(httpx.BaseTransport):
    """An httpx sync transport that answers every request from a simulator handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        client_ip: str = "127.0.0.1",
        admin_handler: Handler | None = None,
    ) -> None:
        self._handler = handler
        self._admin_handler = admin_handler
        self._client_ip = client_ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Hand the raw request to the handler and wait out its injected latency."""
        body = request.read()
        path, raw_query = _split_raw_target(request.url.raw_path)
        handler = _pick(self._handler, self._admin_handler, path)
        sim = handler(request.method, path, raw_query, body, request.headers, self._client_ip)
        if sim.delay > 0:
            # This is the simulated network latency itself, not a wait for synchronisation.
            time.sleep(sim.delay)
        return httpx.Response(sim.status, headers=sim.headers, content=sim.body)


class SimulatorServer:
    """A real HTTP server (aiohttp low-level server) that answers from a simulator handler.

    Use as ``async with SimulatorServer(handler) as server: ... server.url ...`` or call
    `start()` / `stop()` yourself. With ``port=0`` the OS picks a free port; `port` and `url`
    are set once `start()` returns.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        admin_handler: Handler | None = None,
    ) -> None:
        self._handler = handler
        self._admin_handler = admin_handler
        self.host = host
        self.port = port
        self._runner: web.ServerRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:54321``."""
        if self._runner is None:
            raise RuntimeError("SimulatorServer is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raises OSError if the address cannot be bound."""
        if self._runner is not None:
            raise RuntimeError("SimulatorServer is already running")
        # access_log=None: the simulator must stay quiet, and request lines are of no use here.
        server = web.Server(self._on_request, access_log=None)
        # A short shutdown timeout: stop() should not wait a minute for idle keep-alive clients.
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _on_request(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        # The raw forms, never the decoded ones: exchanges sign the exact bytes sent, and
        # re-encoding (case of percent-escapes, '+' vs '%20') would break signatures.
        path = request.rel_url.raw_path
        raw_query = request.rel_url.raw_query_string
        handler = _pick(self._handler, self._admin_handler, path)
        sim = handler(request.method, path, raw_query, body, request.headers, request.remote or "")
        if sim.delay > 0:
            await asyncio.sleep(sim.delay)
        return web.Response(status=sim.status, body=sim.body, headers=sim.headers)


@contextmanager
def serve_in_thread(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    admin_handler: Handler | None = None,
    timeout: float = 10.0,
) -> Iterator[str]:
    """Run a `SimulatorServer` on its own event loop in a daemon thread; yield its base URL.

    The server is stopped, the loop closed and the thread joined when the block exits.
    ``timeout`` bounds start-up and shut-down so a broken server cannot hang a test run.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="simulator-server", daemon=True)
    thread.start()
    server = SimulatorServer(handler, host, port, admin_handler=admin_handler)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout)
        yield server.url
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout)
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
