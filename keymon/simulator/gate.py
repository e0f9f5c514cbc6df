"""A fake Gate APIv4, written from exchange-apis.md §2.4 (not from keymon's adapter).

Serves ``GET /api/v4/spot/time`` (``server_time`` in ms), ``GET /api/v4/account/detail`` (the
calling key's ``ip_whitelist``) and ``GET /api/v4/account/main_keys`` (every key, ``key``
masked). Requests are signed ``hex(HMAC-SHA512(secret, METHOD\\npath\\nquery\\nhex(SHA512(body))
\\ntimestamp))`` with ``KEY``, ``Timestamp`` (s) and ``SIGN``; a timestamp more than 60 s from
the server's clock is refused with ``REQUEST_EXPIRED``. Errors are ``{"label", "message"}``
bodies with a 4xx status.

Fault injection comes from :class:`~keymon.simulator.faults.FaultKnobs`: latency (returned as
`SimResponse.delay`), failed and truncated answers, and a server clock skew that both
``spot/time`` and the timestamp window use.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from keymon.simulator.common import (
    Answer,
    SimulatorBase,
    header,
    ip_allowed,
    json_response,
)
from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_plain
from keymon.simulator.server import SimResponse

__all__ = ["GateSimulator", "prehash", "sign"]

TIME_PATH: Final = "/api/v4/spot/time"
DETAIL_PATH: Final = "/api/v4/account/detail"
MAIN_KEYS_PATH: Final = "/api/v4/account/main_keys"
TIMESTAMP_WINDOW_S: Final = 60
#: The default key: spot read-write only, bound to 127.0.0.1 (the guide's key).
DEFAULT_PERMS: Final = (("spot", False),)


def prehash(method: str, path: str, query: str, body: bytes, timestamp: str) -> str:
    """Gate's pre-hash: ``METHOD\\npath\\nquery\\nhex(SHA512(body))\\ntimestamp``."""
    return "\n".join((method.upper(), path, query, hashlib.sha512(body).hexdigest(), timestamp))


def sign(secret: str, text: str) -> str:
    """Hex HMAC-SHA512."""
    return hmac.new(secret.encode(), text.encode(), hashlib.sha512).hexdigest()


@dataclass
class _Key:
    secret: str
    perms: list[tuple[str, bool]]
    ips: list[str] = field(default_factory=list)
    created_at: int = 0
    #: ``main_keys`` ``state``: 1 normal, 2 and 3 frozen/locked (the SDKs' docs differ on which).
    state: int = 1
    #: Without the ``account`` read permission, ``account/detail`` answers 403 ``FORBIDDEN``.
    account_read: bool = True


class GateSimulator(SimulatorBase):
    """A thread-safe, in-memory Gate APIv4 fake with an injectable clock (seconds)."""

    def __init__(self, *, clock: Callable[[], float] = time.time, user_id: int = 1667201533):
        super().__init__(clock=clock)
        self._user_id = user_id
        self._keys: dict[str, _Key] = {}
        self.main_keys_forbidden = False
        self._limit: int | None = None
        self._window: tuple[int, int] = (0, 0)  # (second, signed requests in it)

    def add_key(
        self,
        api_key: str,
        secret: str,
        *,
        perms: list[tuple[str, bool]] | None = None,
        ips: list[str] | None = None,
        account_read: bool = True,
    ) -> None:
        """Create a key: ``perms`` is (name, read_only) pairs; ``ips`` defaults to loopback;
        ``account_read=False``: a valid key that may not read ``account/detail``."""
        for entry in ips or ():
            ipaddress.ip_network(entry, strict=False)
        with self._lock:
            self._keys[api_key] = _Key(
                secret,
                list(DEFAULT_PERMS if perms is None else perms),
                list(["127.0.0.1"] if ips is None else ips),
                self._now_ms() // 1000,
                account_read=account_read,
            )

    def update_key(
        self,
        api_key: str,
        *,
        perms: list[tuple[str, bool]] | None = None,
        ips: list[str] | None = None,
        state: int | None = None,
    ) -> None:
        with self._lock:
            key = self._keys[api_key]
            if state is not None:
                key.state = state
            if perms is not None:
                key.perms = list(perms)
            if ips is not None:
                key.ips = list(ips)

    def set_limit(self, per_second: int | None) -> None:
        """Answer 429 ``TOO_MANY_REQUESTS`` past ``per_second`` signed requests a second."""
        with self._lock:
            self._limit = per_second

    def delete_key(self, api_key: str) -> None:
        with self._lock:
            self._keys.pop(api_key, None)

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        now_ms = self._now_ms()
        now = now_ms / 1000
        if path == TIME_PATH and method == "GET":
            return json_response(200, {"server_time": now_ms})
        if path not in (DETAIL_PATH, MAIN_KEYS_PATH):
            return json_response(404, {"label": "NOT_FOUND", "message": "not found"})
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        _, key = self._authenticate(method, path, raw_query, body, headers, client_ip, now)
        second, count = self._window
        count = count + 1 if second == int(now) else 1
        self._window = (int(now), count)
        if self._limit is not None and count > self._limit:
            raise _error(429, "TOO_MANY_REQUESTS", "Request rate limit exceeded")
        if path == DETAIL_PATH and not key.account_read:
            raise _error(403, "FORBIDDEN", "No permission")
        if path == DETAIL_PATH:
            return json_response(
                200,
                {
                    "user_id": self._user_id,
                    "ip_whitelist": list(key.ips),
                    "currency_pairs": [],
                    "key": {"mode": 1},
                    "tier": 0,
                    "copy_trading_role": 0,
                },
            )
        if self.main_keys_forbidden:
            raise _error(403, "FORBIDDEN", "Not allowed")
        return json_response(200, [self._entry(k, v) for k, v in self._keys.items()])

    def _entry(self, api_key: str, key: _Key) -> dict[str, object]:
        return {
            "state": key.state,
            "mode": 1,
            "name": "",
            "currency_pairs": [],
            "user_id": self._user_id,
            "ip_whitelist": list(key.ips),
            "perms": [{"name": name, "read_only": ro} for name, ro in key.perms],
            "key": mask(api_key),
            "created_at": key.created_at,
            "updated_at": key.created_at,
            "last_access": self._now_ms() // 1000,
        }

    def _authenticate(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now: float,
    ) -> tuple[str, _Key]:
        api_key = header(headers, "KEY")
        signature = header(headers, "SIGN")
        timestamp = header(headers, "Timestamp")
        if not api_key or not signature or not timestamp:
            raise _error(401, "MISSING_REQUIRED_HEADER", "Missing required header")
        try:
            stamp = float(timestamp)
        except ValueError:
            raise _error(401, "INVALID_CREDENTIALS", "Invalid timestamp") from None
        if abs(stamp - now) > TIMESTAMP_WINDOW_S:
            raise _error(401, "REQUEST_EXPIRED", "Request timestamp expired")
        key = self._keys.get(api_key)
        if key is None:
            raise _error(401, "INVALID_KEY", "Invalid key provided")
        if not hmac.compare_digest(
            sign(key.secret, prehash(method, path, raw_query, body, timestamp)), signature
        ):
            raise _error(401, "INVALID_SIGNATURE", "Signature mismatch")
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise _error(403, "IP_FORBIDDEN", f"Request IP {client_ip} not in whitelist")
        return api_key, key


def mask(api_key: str) -> str:
    """Gate's masked form: the first 12 characters, then ``*****``."""
    return api_key[:12] + "*****"


def _error(status: int, label: str, message: str) -> Answer:
    return Answer(json_response(status, {"label": label, "message": message}))


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_plain,
    lambda now: [DemoKey("kilo-gate", "kilo", "gate", "healthy: spot trading, IP-bound")],
)
