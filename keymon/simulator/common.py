"""The serving plumbing every simulated exchange shares.

:class:`SimulatorBase` holds the lock, the injectable clock and the fault knobs
(:class:`~keymon.simulator.faults.FaultKnobs`), the in-process transport, the real server and
the skeleton of request handling: a failed answer when one is injected, else the exchange's
own :meth:`SimulatorBase._dispatch` (which may end early by raising :class:`Answer`), a body
cut in half when truncation is injected, and the injected latency as the response's delay.
Each exchange's module supplies only what is its own: signing, endpoints, keys, bodies, codes
and its admin API.

Nothing here imports from the rest of keymon.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, ClassVar, Final

import httpx

from keymon.simulator.faults import FaultKnobs
from keymon.simulator.server import (
    Handler,
    SimResponse,
    SimulatorAsyncTransport,
    SimulatorServer,
    serve_in_thread,
)

__all__ = ["Answer", "SimulatorBase", "header", "ip_allowed", "json_object", "json_response"]

_JSON: Final = {"Content-Type": "application/json"}


class Answer(Exception):
    """Raised with the response that ends a request early (a refusal)."""

    def __init__(self, response: SimResponse) -> None:
        super().__init__(response.status)
        self.response = response


class SimulatorBase(FaultKnobs):
    """A thread-safe, in-memory fake exchange with an injectable clock (seconds).

    Subclasses implement :meth:`_dispatch`; those with an admin API implement
    :meth:`handle_admin` and set :attr:`has_admin` (and :attr:`admin_in_transport` when the
    in-process transport routes ``/_simulator/`` to it too).
    """

    #: Whether the real server routes ``/_simulator/`` to :meth:`handle_admin`.
    has_admin: ClassVar[bool] = False
    #: Whether the in-process transport does too.
    admin_in_transport: ClassVar[bool] = False

    _keys: Mapping[str, Any]

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._latency = 0.0
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_path: str | None = None
        self._truncate_remaining = 0
        self._clock_skew_ms = 0

    def __repr__(self) -> str:
        with self._lock:
            return f"{type(self).__name__}(keys={len(self._keys)})"

    # ---------------------------------------------------------------- serving

    def _admin_handler(self) -> Handler | None:
        return self.handle_admin if self.has_admin else None

    def transport(self, client_ip: str = "127.0.0.1") -> httpx.AsyncBaseTransport:
        """An in-process httpx async transport; requests come from ``client_ip``."""
        admin = self._admin_handler() if self.admin_in_transport else None
        return SimulatorAsyncTransport(self.handle, client_ip=client_ip, admin_handler=admin)

    def server(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """A real HTTP server (not yet started) serving this simulator (and its admin API)."""
        return SimulatorServer(self.handle, host, port, admin_handler=self._admin_handler())

    def serve_in_thread(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> AbstractContextManager[str]:
        """Context manager: serve on a background thread, yielding the base URL."""
        return serve_in_thread(self.handle, host, port, admin_handler=self._admin_handler())

    # ---------------------------------------------------------------- requests

    def handle(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """Answer one exchange request the way the exchange would."""
        with self._lock:
            self._note_request(path, raw_query, headers)
            response = self._injected_failure(path)
            if response is None:
                try:
                    response = self._dispatch(
                        method.upper(), path, raw_query, body, headers, client_ip
                    )
                except Answer as answer:
                    response = answer.response
                if self._truncate_remaining > 0:
                    self._truncate_remaining -= 1
                    response = replace(response, body=response.body[: len(response.body) // 2])
            self._note_response(response)
            return replace(response, delay=self._latency)

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        """Count a request before anything else (under the lock); nothing by default."""

    def _injected_failure(self, path: str) -> SimResponse | None:
        """The injected failed answer this request for ``path`` gets, if any (under the lock):
        the next ``fail_next`` requests, or only those for ``fail_path`` when it is set."""
        if self._fail_remaining > 0 and self._fail_path in (None, path):
            self._fail_remaining -= 1
            return SimResponse(
                self._fail_status, {"Content-Type": "text/html"}, b"<html>error</html>"
            )
        return None

    def _note_response(self, response: SimResponse) -> None:
        """Count an answer before it leaves (under the lock); nothing by default."""

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """The exchange's answer (under the lock; ``method`` upper-cased); may raise Answer."""
        raise NotImplementedError

    def _faults(self) -> dict[str, object]:
        """The fault settings as the admin API shows them (``/_simulator/faults``)."""
        return {
            "latency": self._latency,
            "fail_next": self._fail_remaining,
            "fail_status": self._fail_status,
            "fail_path": self._fail_path,
            "truncate_next": self._truncate_remaining,
            "clock_skew_ms": self._clock_skew_ms,
        }

    def _set_faults(self, data: dict[str, object]) -> None:
        """Set the fields of :meth:`_faults` given in ``data`` (admin API), all or none."""
        current = self._faults()
        unknown = set(data) - set(current)
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        latency = data.get("latency", self._latency)
        fail_path = data.get("fail_path", self._fail_path)
        ints = {name: data.get(name, value) for name, value in current.items()}
        del ints["latency"], ints["fail_path"]
        if not isinstance(latency, int | float) or not math.isfinite(latency) or latency < 0:
            raise ValueError("invalid latency")
        if fail_path is not None and not isinstance(fail_path, str):
            raise ValueError("fail_path must be an endpoint path or null")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()):
            raise ValueError("invalid fault settings")
        self._latency = float(latency)
        self._fail_path = fail_path
        self._apply_faults({name: int(str(value)) for name, value in ints.items()})

    def _apply_faults(self, ints: dict[str, int]) -> None:
        self._fail_remaining = ints["fail_next"]
        self._fail_status = ints["fail_status"]
        self._truncate_remaining = ints["truncate_next"]
        self._clock_skew_ms = ints["clock_skew_ms"]

    def handle_admin(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """The admin API under ``/_simulator/``, for simulators that set :attr:`has_admin`."""
        raise NotImplementedError


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (case-insensitive), or None."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def ip_allowed(client_ip: str, allowed: list[str]) -> bool:
    """Whether ``client_ip`` is one of ``allowed`` (addresses or CIDRs)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in allowed)


def json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> SimResponse:
    """A JSON answer."""
    return SimResponse(status, {**_JSON, **(headers or {})}, json.dumps(payload).encode())


def json_object(body: bytes) -> dict[str, Any]:
    """An admin request body: a JSON object, or ``{}`` when empty."""
    data = json.loads(body) if body else {}
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    return data
