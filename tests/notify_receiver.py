"""A real webhook receiver on 127.0.0.1 for the notification tests.

keymon reaches it through an Apprise ``json://127.0.0.1:PORT/path`` URL, exactly as it would
reach a desk's generic webhook: Apprise POSTs ``{"version", "title", "message", "type", ...}``.
The receiver runs an aiohttp server on its own event loop in a daemon thread, so in-process
tests (whose Apprise calls run in worker threads) and ``keymon run`` subprocesses can both
use it, and records every JSON POST body.

Its behaviour can be switched at any time:

* :meth:`Receiver.answer_ok` - 200, the message counts as delivered (:attr:`delivered`);
* :meth:`Receiver.answer_error` - 500 (or any status);
* :meth:`Receiver.answer_throttled` - 429 with ``Retry-After``;
* :meth:`Receiver.hang` - never answer until :meth:`Receiver.release`; a released request is
  then answered 503 by default, so a late answer to a sender that gave up never counts as
  delivered (``release(200)`` answers it 200: a slow send that succeeds);
* :meth:`Receiver.stop` / :meth:`Receiver.start` - close the listening socket (connections are
  refused) and open it again on the same port.

Every request is in :attr:`requests`, whatever it was answered; only those answered 2xx are in
:attr:`delivered`. Waits are bounded (``timeout``), never open-ended.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

Mode = Literal["ok", "error", "throttled", "hang"]

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Received:
    """One POST as the receiver saw it."""

    path: str
    body: dict[str, Any]
    answered: int | None  # the status it got; None while it hangs


class Receiver:
    """A switchable JSON webhook receiver bound to 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._mode: Mode = "ok"
        self._status = 500
        self._retry_after = "60"
        self._release_status = 503
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="notify-receiver", daemon=True
        )
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0
        self._thread.start()

    # ---------------------------------------------------------------- lifecycle

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def start(self) -> None:
        """Listen on 127.0.0.1 (a free port the first time, the same port afterwards)."""
        self._run(self._start())

    async def _start(self) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        if self._runner is None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
        self._site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Stop listening: from now on connections to the port are refused."""
        self._run(self._stop())

    async def _stop(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def close(self) -> None:
        """Release hung requests, stop the server, end the loop and join the thread."""
        try:
            self.release()
            if self._runner is not None:
                self._run(self._runner.cleanup())
                self._runner = None
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def url(self, path: str = "/hook", **params: str) -> str:
        """The Apprise URL that POSTs JSON to ``path`` on this receiver."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"json://{HOST}:{self.port}{path}" + (f"?{query}" if query else "")

    # ---------------------------------------------------------------- behaviour

    def answer_ok(self) -> None:
        """Answer 200: messages are delivered."""
        self._set("ok")

    def answer_error(self, status: int = 500) -> None:
        """Answer every POST with ``status``."""
        self._status = status
        self._set("error")

    def answer_throttled(self, retry_after: int = 60) -> None:
        """Answer 429 Too Many Requests with ``Retry-After: retry_after``."""
        self._retry_after = str(retry_after)
        self._set("throttled")

    def hang(self) -> None:
        """Never answer, until :meth:`release` (or :meth:`close`)."""
        self._set("hang")

    def release(self, status: int = 503) -> None:
        """Let every hung request go, answered ``status`` (503: its sender has given up)."""
        with self._lock:
            self._release_status = status
        if self._release is not None:
            event = self._release
            self._loop.call_soon_threadsafe(event.set)

    def _set(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
        if mode == "hang" and self._release is not None:
            # A new hang must not be pre-released by an earlier release().
            done = threading.Event()

            def fresh() -> None:
                self._release = asyncio.Event()
                done.set()

            self._loop.call_soon_threadsafe(fresh)
            done.wait(self._timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        with self._lock:
            mode = self._mode
            index = len(self._requests)
            status = {"ok": 200, "error": self._status, "throttled": 429, "hang": None}[mode]
            self._requests.append(Received(request.path, body, status))
        if mode == "ok":
            return web.json_response({"ok": True})
        if mode == "throttled":
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": self._retry_after}
            )
        if mode == "error":
            return web.json_response({"error": "broken"}, status=self._status)
        release = self._release
        assert release is not None
        await release.wait()
        with self._lock:
            status = self._release_status
            self._requests[index] = Received(request.path, body, status)
        if status < 300:
            return web.json_response({"ok": True}, status=status)
        return web.json_response({"error": "too late"}, status=status)

    # ---------------------------------------------------------------- what arrived

    @property
    def requests(self) -> list[Received]:
        """Every POST so far, oldest first, whatever it was answered."""
        with self._lock:
            return list(self._requests)

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the POSTs answered 2xx: the messages that were delivered."""
        with self._lock:
            return [r.body for r in self._requests if r.answered is not None and r.answered < 300]

    @property
    def hanging(self) -> int:
        """How many requests are being held right now."""
        with self._lock:
            return sum(r.answered is None for r in self._requests)

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate(self)`` until true, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout}s")
            time.sleep(0.02)
