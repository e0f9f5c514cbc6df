"""A faithful fake of Bitget's v2 REST API, limited to what a key monitor needs.

`BitgetSimulator` implements Bitget's *documented* behaviour (exchange-apis.md §2.5, from
Bitget's "Get Account Info" and "Signature" pages and ccxt's error map), written from the docs
and not from keymon's adapter. It implements:

- ``GET /api/v2/public/time`` and ``GET /api/v2/spot/account/info``, answering the v2 envelope
  ``{"code": "00000", "msg": "success", "requestTime": ms, "data": {...}}``;
- signed-request validation: the ``ACCESS-KEY``/``-SIGN``/``-TIMESTAMP``/``-PASSPHRASE``
  headers, the timestamp window (30 s either side of server time, ``40008``; the window is
  from Bitget's signature docs, not exchange-apis.md), unknown or deleted keys (``40006``),
  ``base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + ["?" + query] + body))``
  over the exact bytes sent (``40009``), the passphrase (``40012``) and the key's IP
  whitelist against the client IP (``40018``);
- the account-info rate limit, 1 request/s per UID (one UID per key here), answered with
  HTTP 429 and code ``429``;
- fault injection (latency, failed responses, truncated bodies, server clock skew) and an admin
  JSON API under ``/_simulator/`` (never used by keymon).

Missing headers answer ``40001``/``40003``/``40005``/``40011`` with HTTP 400 (ccxt's map, not
exchange-apis.md); keymon never sends such a request. Like the other simulators it is a pure
synchronous state machine behind one lock, with an injectable clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from keymon.simulator.common import (
    Answer,
    SimulatorBase,
    header,
    ip_allowed,
    json_object,
    json_response,
)
from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_with_passphrase
from keymon.simulator.server import (
    ADMIN_PREFIX,
    SimResponse,
)

__all__ = ["BitgetSimulator", "prehash", "sign"]

TIME_PATH: Final = "/api/v2/public/time"
ACCOUNT_INFO_PATH: Final = "/api/v2/spot/account/info"
TIMESTAMP_WINDOW_MS: Final = 30_000
_JSON: Final = {"Content-Type": "application/json"}
#: The default key: spot read and spot trade, whitelisted to 127.0.0.1.
DEFAULT_AUTHORITIES: Final = ("stor", "stow")


def prehash(timestamp: str, method: str, request_path: str, query: str, body: str) -> str:
    """``timestamp + METHOD + requestPath + ("?" + queryString if any) + body``."""
    return timestamp + method.upper() + request_path + (f"?{query}" if query else "") + body


def sign(secret: str, text: str) -> str:
    """Base64 of the HMAC-SHA256 digest of ``text`` under ``secret``."""
    digest = hmac.new(
        secret.encode(), text.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class _Key:
    secret: str
    passphrase: str
    authorities: list[str]
    ips: list[str]
    user_id: str


class BitgetSimulator(SimulatorBase):
    """A thread-safe, in-memory Bitget v2 fake with an injectable clock (seconds)."""

    has_admin = True
    admin_in_transport = True

    def __init__(
        self, *, clock: Callable[[], float] = time.time, limit_per_second: int = 1
    ) -> None:
        if limit_per_second < 1:
            raise ValueError("the limit must be at least 1")
        super().__init__(clock=clock)
        self._limit = limit_per_second
        self._keys: dict[str, _Key] = {}
        self._windows: dict[str, tuple[int, int]] = {}  # user id -> (second, count)
        self._per_key: Counter[str] = Counter()
        self._count_429 = 0
        self._next_uid = 1234567890

    # ---------------------------------------------------------------- knobs

    def set_limit(self, per_second: int) -> None:
        """Account-info requests per second per UID (documented: 1)."""
        if per_second < 1:
            raise ValueError("the limit must be at least 1")
        with self._lock:
            self._limit = per_second

    @property
    def count_429(self) -> int:
        """How many rate-limit answers have been sent."""
        with self._lock:
            return self._count_429

    def request_count(self, api_key: str) -> int:
        """How many exchange requests carried ``api_key``."""
        with self._lock:
            return self._per_key[api_key]

    # ---------------------------------------------------------------- keys

    def add_key(
        self,
        api_key: str,
        secret: str,
        passphrase: str,
        *,
        authorities: list[str] | None = None,
        ips: list[str] | None = None,
    ) -> None:
        """Register a key. Defaults: spot read + spot trade, whitelisted to 127.0.0.1."""
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = self._new_key(secret, passphrase, authorities, ips)

    def _new_key(
        self,
        secret: str,
        passphrase: str,
        authorities: list[str] | None,
        ips: list[str] | None,
    ) -> _Key:
        bound = list(ips) if ips is not None else ["127.0.0.1"]
        _check_ips(bound)
        self._next_uid += 1
        return _Key(
            secret=secret,
            passphrase=passphrase,
            authorities=list(authorities if authorities is not None else DEFAULT_AUTHORITIES),
            ips=bound,
            user_id=str(self._next_uid),
        )

    def update_key(
        self, api_key: str, *, authorities: list[str] | None = None, ips: list[str] | None = None
    ) -> None:
        """Replace a key's authority codes and/or IP whitelist (``[]``: no whitelist)."""
        with self._lock:
            self._update_locked(self._keys[api_key], authorities, ips)

    @staticmethod
    def _update_locked(key: _Key, authorities: list[str] | None, ips: list[str] | None) -> None:
        if ips is not None:
            _check_ips(ips)
            key.ips = list(ips)
        if authorities is not None:
            key.authorities = list(authorities)

    def delete_key(self, api_key: str) -> None:
        """Forget a key: it answers ``40006`` from now on."""
        with self._lock:
            del self._keys[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- exchange requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = header(headers, "ACCESS-KEY")
        if api_key is not None:
            self._per_key[api_key] += 1

    def _envelope(self, code: str, msg: str, data: object, *, status: int = 200) -> SimResponse:
        body = {"code": code, "msg": msg, "requestTime": self._now_ms(), "data": data}
        return SimResponse(status, dict(_JSON), json.dumps(body).encode())

    def _error(self, code: str, msg: str, status: int = 400) -> Answer:
        return Answer(self._envelope(code, msg, None, status=status))

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        now = self._now_ms()
        if path == TIME_PATH and method == "GET":
            return self._envelope("00000", "success", {"serverTime": str(now)})
        if path != ACCOUNT_INFO_PATH:
            return SimResponse(404, {"Content-Type": "text/plain"}, b"404 Not Found")
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        key = self._authenticate(method, path, raw_query, body, headers, client_ip, now)
        self._admit(key, now)
        return self._envelope("00000", "success", self._info(key))

    def _authenticate(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now: int,
    ) -> _Key:
        api_key = header(headers, "ACCESS-KEY")
        signature = header(headers, "ACCESS-SIGN")
        timestamp = header(headers, "ACCESS-TIMESTAMP")
        passphrase = header(headers, "ACCESS-PASSPHRASE")
        if not api_key:
            raise self._error("40001", "ACCESS_KEY cannot be empty")
        if not signature:
            raise self._error("40003", "Signature cannot be empty")
        if not passphrase:
            raise self._error("40011", "ACCESS_PASSPHRASE cannot be empty")
        if not timestamp or not timestamp.isdigit():
            raise self._error("40005", "Invalid ACCESS_TIMESTAMP")
        if abs(int(timestamp) - now) > TIMESTAMP_WINDOW_MS:
            raise self._error("40008", "Request timestamp expired")
        key = self._keys.get(api_key)
        if key is None:
            raise self._error("40006", "Invalid ACCESS_KEY")
        text = prehash(timestamp, method, path, raw_query, body.decode("utf-8", "surrogateescape"))
        if not hmac.compare_digest(sign(key.secret, text), signature):
            raise self._error("40009", "sign signature error")
        if not hmac.compare_digest(key.passphrase.encode(), passphrase.encode()):
            raise self._error("40012", "apikey/password is incorrect")
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise self._error("40018", f"Invalid IP, your ip is {client_ip}")
        return key

    def _admit(self, key: _Key, now: int) -> None:
        second = now // 1000
        start, count = self._windows.get(key.user_id, (second, 0))
        count = count + 1 if start == second else 1
        self._windows[key.user_id] = (second, count)
        if count > self._limit:
            self._count_429 += 1
            raise self._error("429", "Too Many Requests", status=429)

    def _info(self, key: _Key) -> dict[str, object]:
        return {
            "userId": key.user_id,
            "inviterId": "0",
            "ips": ",".join(key.ips),
            "authorities": list(key.authorities),
            "parentId": int(key.user_id),
            "traderType": "not_trader",
            "channelCode": "",
            "channel": "",
            "regisTime": "1600000000000",
        }

    # ---------------------------------------------------------------- admin API

    def handle_admin(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """``GET/POST /_simulator/keys``, ``GET/PATCH/DELETE /_simulator/keys/{api_key}``,
        ``GET/POST /_simulator/faults``, ``GET /_simulator/stats``. Secrets are never returned.
        """
        method = method.upper()
        parts = [unquote(p) for p in path[len(ADMIN_PREFIX) :].split("/")]
        try:
            data = json_object(body)
            with self._lock:
                if parts == ["keys"] and method == "GET":
                    return json_response(200, [self._view(k, v) for k, v in self._keys.items()])
                if parts == ["keys"] and method == "POST":
                    api_key = data.pop("api_key")
                    if api_key in self._keys:
                        return json_response(409, {"error": "key exists"})
                    key = self._new_key(
                        data.pop("secret"),
                        data.pop("passphrase"),
                        data.pop("authorities", None),
                        data.pop("ips", None),
                    )
                    if data:
                        return json_response(400, {"error": f"unknown fields: {sorted(data)}"})
                    self._keys[api_key] = key
                    return json_response(201, self._view(api_key, key))
                if len(parts) == 2 and parts[0] == "keys":
                    found = self._keys.get(parts[1])
                    if found is None:
                        return json_response(404, {"error": "unknown api_key"})
                    if method == "DELETE":
                        del self._keys[parts[1]]
                        return json_response(200, {"deleted": parts[1]})
                    if method == "PATCH":
                        self._update_locked(
                            found, data.pop("authorities", None), data.pop("ips", None)
                        )
                    return json_response(200, self._view(parts[1], found))
                if parts == ["faults"]:
                    if method == "POST":
                        self._set_faults(data)
                    return json_response(200, self._faults())
                if parts == ["stats"] and method == "GET":
                    return json_response(
                        200, {"count_429": self._count_429, "requests": dict(self._per_key)}
                    )
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": "not found"})

    @staticmethod
    def _view(api_key: str, key: _Key) -> dict[str, object]:
        return {"api_key": api_key, "authorities": key.authorities, "ips": key.ips}


def _check_ips(ips: list[str]) -> None:
    for entry in ips:
        ipaddress.ip_network(entry, strict=False)  # ValueError on garbage


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_with_passphrase,
    lambda now: [
        DemoKey(
            "india-bitget",
            "india",
            "bitget",
            "withdrawals switched on",
            {"authorities": ["stor", "stow", "wwow"]},
        ),
    ],
    extra=("passphrase",),
)
