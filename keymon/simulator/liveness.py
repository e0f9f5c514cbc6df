"""The shared body of the fakes for exchanges that show a key nothing about itself.

MEXC, BitMart, Bitrue, LBank, Coinstore and Biconomy (and XT, whose fake lists the key's
settings on top) answer a signed read call for a key that exists, is signed with the right
secret, is called from an allowed IP and in time; they refuse it otherwise, each with its own
documented codes. :class:`LivenessSimulator` holds what they share: the keys (secret, IP
whitelist, state: active, frozen, expired or disabled), the per-key rate window, fault
injection (:class:`~keymon.simulator.faults.FaultKnobs`), the in-process transport, the real
server and an admin API under ``/_simulator/``. Each exchange's module supplies how a request
is signed and which of its codes and bodies answer what
(:meth:`LivenessSimulator.authenticate`, :meth:`LivenessSimulator.refusal`, ...).

Nothing here imports from the rest of keymon.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final
from urllib.parse import unquote

from keymon.simulator.common import Answer, SimulatorBase, header, ip_allowed, json_response
from keymon.simulator.server import (
    ADMIN_PREFIX,
    SimResponse,
)

__all__ = [
    "STATES",
    "Answer",
    "LivenessSimulator",
    "Refusal",
    "Request",
    "SimKey",
    "ip_allowed",
    "json_response",
]

STATES: Final = frozenset({"active", "frozen", "expired", "disabled"})


class Refusal(enum.Enum):
    """Why the exchange refuses a request; each exchange answers each with its own code."""

    MISSING_AUTH = "missing_auth"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    TIMESTAMP = "timestamp"
    IP_REFUSED = "ip_refused"
    FROZEN = "frozen"
    EXPIRED = "expired"
    DISABLED = "disabled"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class Request:
    """One request as the exchange sees it."""

    method: str
    path: str
    raw_query: str
    body: bytes
    headers: Mapping[str, str]
    client_ip: str

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


@dataclass
class SimKey:
    """A key the exchange holds. ``extra`` carries exchange-specific credentials (a memo)."""

    secret: str
    ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    state: str = "active"
    extra: dict[str, str] = field(default_factory=dict)


class LivenessSimulator(SimulatorBase):
    """A thread-safe, in-memory fake of one liveness-only exchange (clock in seconds).

    Subclasses set :attr:`probe` (the signed read call keymon makes), :attr:`time_path`
    where the exchange has a server-time endpoint, and implement :meth:`authenticate`,
    :meth:`refusal`, :meth:`success` and :meth:`time_body`.
    """

    #: The signed, read-only call: (METHOD, path).
    probe: ClassVar[tuple[str, str]]
    #: The public server-time endpoint, or None.
    time_path: ClassVar[str | None] = None
    #: Signed requests one key may make per rate window, and the window in seconds.
    rate_limit: ClassVar[tuple[int, float]] = (20, 1.0)
    has_admin = True

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._keys: dict[str, SimKey] = {}
        self._limit, self._window_s = self.rate_limit
        self._windows: dict[str, tuple[int, int]] = {}
        self.requests = 0

    # ------------------------------------------------------------------ keys

    def add_key(self, api_key: str, secret: str, *, ips: list[str] | None = None) -> None:
        """Create an active key; ``ips`` defaults to loopback, ``[]`` means no IP binding."""
        self._add(api_key, SimKey(secret, _checked_ips(ips)))

    def _add(self, api_key: str, key: SimKey) -> None:
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = key

    def update_key(
        self, api_key: str, *, ips: list[str] | None = None, state: str | None = None
    ) -> None:
        """Change a key's IP whitelist or state (active, frozen, expired, disabled)."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(sorted(STATES))}")
        checked = _checked_ips(ips) if ips is not None else None
        with self._lock:
            key = self._keys[api_key]
            if checked is not None:
                key.ips = checked
            if state is not None:
                key.state = state

    def delete_key(self, api_key: str) -> None:
        with self._lock:
            self._keys.pop(api_key, None)

    def set_rate_limit(self, requests: int, window_s: float | None = None) -> None:
        """Refuse a key's signed requests past ``requests`` per window (RATE_LIMITED)."""
        if requests < 1:
            raise ValueError("requests must be >= 1")
        with self._lock:
            self._limit = requests
            if window_s is not None:
                self._window_s = window_s

    # ------------------------------------------------------------------ serving

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        self.requests += 1

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        return self._serve(Request(method, path, raw_query, body, headers, client_ip))

    def _serve(self, request: Request) -> SimResponse:
        now_ms = self._now_ms()
        if self.time_path is not None and request.path == self.time_path:
            if request.method != "GET":
                return SimResponse(405, {"Allow": "GET"}, b"")
            return self.time_body(now_ms)
        if request.path != self.probe[1]:
            return self.not_found(request)
        if request.method != self.probe[0]:
            return SimResponse(405, {"Allow": self.probe[0]}, b"")
        api_key = self.authenticate(request, now_ms)
        key = self._keys[api_key]
        if key.state != "active":
            raise Answer(self.refusal(Refusal(key.state), request))
        if key.ips and not ip_allowed(request.client_ip, key.ips):
            raise Answer(self.refusal(Refusal.IP_REFUSED, request))
        self._count(api_key, now_ms)
        return self.success(request, api_key)

    def _count(self, api_key: str, now_ms: int) -> None:
        window = int(now_ms / 1000 / self._window_s)
        start, count = self._windows.get(api_key, (window, 0))
        count = count + 1 if start == window else 1
        self._windows[api_key] = (window, count)
        if count > self._limit:
            raise Answer(self.refusal(Refusal.RATE_LIMITED, None))

    def key_for(self, api_key: str | None, request: Request) -> SimKey:
        """The key named in a request, or the exchange's unknown-key refusal."""
        key = self._keys.get(api_key or "")
        if key is None:
            raise Answer(self.refusal(Refusal.UNKNOWN_KEY, request))
        return key

    def refuse(self, why: Refusal, request: Request | None) -> Answer:
        """The exception that ends a request with the exchange's answer for ``why``."""
        return Answer(self.refusal(why, request))

    # ------------------------------------------------------------------ exchange specifics

    def authenticate(self, request: Request, now_ms: int) -> str:
        """Check the signature and timestamp; return the API key, or raise :class:`Answer`."""
        raise NotImplementedError

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        """The exchange's documented answer for ``why``."""
        raise NotImplementedError

    def success(self, request: Request, api_key: str) -> SimResponse:
        """The exchange's answer to an accepted probe."""
        raise NotImplementedError

    def time_body(self, now_ms: int) -> SimResponse:
        """The server-time endpoint's answer."""
        raise NotImplementedError

    def not_found(self, request: Request) -> SimResponse:
        return json_response(404, {"error": "not found"})

    # ------------------------------------------------------------------ admin API

    def handle_admin(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """``GET /_simulator/keys``, ``PATCH/DELETE /_simulator/keys/{api_key}`` (``ips``,
        ``state``), ``POST /_simulator/faults`` (``fail``, ``status``, ``truncate``,
        ``latency``, ``clock_skew_ms``), ``GET /_simulator/stats``. Secrets never leave."""
        method = method.upper()
        parts = [unquote(p) for p in path[len(ADMIN_PREFIX) :].split("/")]
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                return json_response(400, {"error": "the body must be a JSON object"})
            if parts == ["keys"] and method == "GET":
                with self._lock:
                    return json_response(200, [_view(k, v) for k, v in self._keys.items()])
            if len(parts) == 2 and parts[0] == "keys":
                if parts[1] not in self._keys:
                    return json_response(404, {"error": "unknown api_key"})
                if method == "DELETE":
                    self.delete_key(parts[1])
                    return json_response(200, {"deleted": parts[1]})
                if method == "PATCH":
                    unknown = set(data) - {"ips", "state"}
                    if unknown:
                        return json_response(400, {"error": f"unknown fields: {sorted(unknown)}"})
                    self.update_key(parts[1], ips=data.get("ips"), state=data.get("state"))
                with self._lock:
                    return json_response(200, _view(parts[1], self._keys[parts[1]]))
            if parts == ["faults"] and method == "POST":
                if "fail" in data:
                    self.fail_next(int(data["fail"]), int(data.get("status", 503)))
                if "truncate" in data:
                    self.truncate_next(int(data["truncate"]))
                if "latency" in data:
                    self.latency = float(data["latency"])
                if "clock_skew_ms" in data:
                    self.clock_skew_ms = int(data["clock_skew_ms"])
                return json_response(200, {"ok": True})
            if parts == ["stats"] and method == "GET":
                with self._lock:
                    return json_response(200, {"requests": self.requests})
        except (ValueError, TypeError, KeyError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": "no such admin endpoint"})


def _view(api_key: str, key: SimKey) -> dict[str, Any]:
    return {"api_key": api_key, "ips": list(key.ips), "state": key.state}


def _checked_ips(ips: list[str] | None) -> list[str]:
    if ips is None:
        return ["127.0.0.1"]
    for entry in ips:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"invalid ips entry {entry!r}") from None
    return list(ips)
