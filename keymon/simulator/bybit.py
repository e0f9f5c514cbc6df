"""A faithful fake of Bybit's v5 REST API, limited to what a key monitor needs.

`BybitSimulator` implements Bybit's *documented* behaviour (exchange-apis.md §2.1, from
bybit-exchange/docs ``guide.mdx``, ``apikey-info.mdx``, ``error.mdx``), written from the docs
and not from keymon's adapter. It implements:

- ``GET /v5/market/time`` and ``GET /v5/user/query-api``, answering the v5 envelope
  ``{retCode, retMsg, result, retExtInfo, time}``;
- signed-request validation: the ``X-BAPI-*`` headers (HTTP 401 when missing), the timestamp
  window ``server_time - recv_window <= timestamp < server_time + 1000`` (``10002``), unknown,
  deleted or expired keys (``10003``), ``hex(HMAC-SHA256(secret, timestamp + apiKey +
  recvWindow + queryString))`` over the exact bytes sent (``10004``) and the key's bound IPs
  against the client IP (``10010``);
- rate limits: per key and endpoint a fixed one-second window (default 10 requests, query-api's
  documented limit) answered with ``10006`` and the ``X-Bapi-Limit``, ``X-Bapi-Limit-Status``
  and ``X-Bapi-Limit-Reset-Timestamp`` headers; per IP 600 requests per 5 s, then HTTP 403
  for 10 minutes; HTTP 429 (the system-level limit) by fault injection;
- the documented key lifetime: a key with no IP bound (``ips == ["*"]``) expires 90 days after
  creation (``expiredAt``/``deadlineDay``); a bound key shows ``1970-01-01T00:00:00Z`` and ``-2``;
- fault injection (latency, failed responses, truncated bodies, server clock skew) and an admin
  JSON API under ``/_simulator/`` (never used by keymon).

Like the Binance simulator it is a pure synchronous state machine behind one lock, with an
injectable clock; injected latency is returned as `SimResponse.delay`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_plain
from keymon.simulator.server import (
    ADMIN_PREFIX,
    SimResponse,
)

__all__ = ["BybitSimulator", "prehash", "sign"]

TIME_PATH: Final = "/v5/market/time"
QUERY_API_PATH: Final = "/v5/user/query-api"
_FUTURE_TOLERANCE_MS: Final = 1000
_DEFAULT_RECV_WINDOW_MS: Final = 5000
_UNBOUND_LIFETIME: Final = timedelta(days=90)
_IP_WINDOW_MS: Final = 5000
_IP_LIMIT: Final = 600
_IP_BAN_MS: Final = 600_000
_EPOCH: Final = "1970-01-01T00:00:00Z"
_JSON: Final = {"Content-Type": "application/json; charset=utf-8"}

MSG_KEY_INVALID: Final = "API key is invalid."
MSG_UNMATCHED_IP: Final = "Unmatched IP, please check your API key's bound IP addresses."
MSG_TOO_MANY: Final = "Too many visits!"

#: Permission groups of a guide-compliant key (spot trading only); documented group names.
_GROUPS: Final = (
    "ContractTrade",
    "Spot",
    "Wallet",
    "Options",
    "Derivatives",
    "CopyTrading",
    "BlockTrade",
    "Exchange",
    "NFT",
    "Affiliate",
    "Earn",
)


def prehash(timestamp: str, api_key: str, recv_window: str, payload: str) -> str:
    """Bybit's pre-hash string: ``timestamp + apiKey + recvWindow + payload``."""
    return timestamp + api_key + recv_window + payload


def sign(secret: str, text: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``text`` under ``secret``."""
    return hmac.new(
        secret.encode(), text.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Key:
    secret: str
    permissions: dict[str, list[str]]
    ips: list[str]
    read_only: int
    uta: int
    created_ms: int
    expired_at: str | None = None  # an explicit override of the documented lifetime
    note: str = ""


@dataclass
class _Window:
    start_ms: int = 0
    count: int = 0


@dataclass
class _IpState:
    window: _Window = field(default_factory=_Window)
    banned_until_ms: int = 0


class BybitSimulator(SimulatorBase):
    """A thread-safe, in-memory Bybit v5 fake with an injectable clock (seconds)."""

    has_admin = True
    admin_in_transport = True

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        key_limit_per_second: int = 10,
        ip_limit_per_5s: int = _IP_LIMIT,
    ) -> None:
        if key_limit_per_second < 1 or ip_limit_per_5s < 1:
            raise ValueError("limits must be at least 1")
        super().__init__(clock=clock)
        self._key_limit = key_limit_per_second
        self._ip_limit = ip_limit_per_5s
        self._keys: dict[str, _Key] = {}
        self._key_windows: dict[tuple[str, str], _Window] = {}
        self._ips: dict[str, _IpState] = {}
        self._per_key: Counter[str] = Counter()
        self._count_10006 = 0
        self._next_id = 13770661

    # ---------------------------------------------------------------- knobs

    def set_key_limit(self, per_second: int) -> None:
        """Requests per second each key may make to each endpoint (10 for query-api)."""
        if per_second < 1:
            raise ValueError("the limit must be at least 1")
        with self._lock:
            self._key_limit = per_second

    @property
    def count_10006(self) -> int:
        """How many ``10006`` (too many visits) answers have been sent."""
        with self._lock:
            return self._count_10006

    def request_count(self, api_key: str) -> int:
        """How many exchange requests carried ``api_key``."""
        with self._lock:
            return self._per_key[api_key]

    # ---------------------------------------------------------------- keys

    def add_key(
        self,
        api_key: str,
        secret: str,
        *,
        permissions: Mapping[str, list[str]] | None = None,
        ips: list[str] | None = None,
        read_only: bool = False,
        uta: bool = False,
        expired_at: str | None = None,
    ) -> None:
        """Register an HMAC key. Defaults: the guide's key (spot trading, bound to 127.0.0.1).

        A unified-account key (``uta=True``) carries ``Derivatives: [DerivativesTrade]`` by
        default, as the docs say.
        """
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = self._new_key(
                secret, permissions, ips, read_only, uta, expired_at
            )

    def _new_key(
        self,
        secret: str,
        permissions: Mapping[str, list[str]] | None,
        ips: list[str] | None,
        read_only: bool,
        uta: bool,
        expired_at: str | None,
    ) -> _Key:
        groups: dict[str, list[str]] = {group: [] for group in _GROUPS}
        groups["Spot"] = ["SpotTrade"]
        if uta:
            groups["Derivatives"] = ["DerivativesTrade"]
        if permissions is not None:
            groups.update({k: list(v) for k, v in permissions.items()})
        bound = list(ips) if ips is not None else ["127.0.0.1"]
        for entry in bound:
            if entry != "*":
                ipaddress.ip_network(entry, strict=False)  # ValueError on garbage
        return _Key(
            secret=secret,
            permissions=groups,
            ips=bound or ["*"],
            read_only=int(read_only),
            uta=int(uta),
            created_ms=self._now_ms(),
            expired_at=expired_at,
        )

    def update_key(
        self,
        api_key: str,
        *,
        permissions: Mapping[str, list[str]] | None = None,
        ips: list[str] | None = None,
        read_only: bool | None = None,
        expired_at: str | None = None,
    ) -> None:
        """Change a key: permission groups (merged), bound IPs, read-only flag or expiry."""
        with self._lock:
            key = self._keys[api_key]
            self._update_locked(key, permissions, ips, read_only, expired_at)

    @staticmethod
    def _update_locked(
        key: _Key,
        permissions: Mapping[str, list[str]] | None,
        ips: list[str] | None,
        read_only: bool | None,
        expired_at: str | None,
    ) -> None:
        if ips is not None:
            for entry in ips:
                if entry != "*":
                    ipaddress.ip_network(entry, strict=False)
            key.ips = list(ips) or ["*"]
        if permissions is not None:
            key.permissions.update({k: list(v) for k, v in permissions.items()})
        if read_only is not None:
            key.read_only = int(read_only)
        if expired_at is not None:
            key.expired_at = expired_at

    def delete_key(self, api_key: str) -> None:
        """Forget a key: it answers ``10003`` from now on."""
        with self._lock:
            del self._keys[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- exchange requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = header(headers, "X-BAPI-API-KEY")
        if api_key is not None:
            self._per_key[api_key] += 1

    def _envelope(
        self,
        code: int,
        msg: str,
        result: object,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> SimResponse:
        body = {
            "retCode": code,
            "retMsg": msg,
            "result": result,
            "retExtInfo": {},
            "time": self._now_ms(),
        }
        return SimResponse(status, {**_JSON, **(headers or {})}, json.dumps(body).encode())

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
        self._admit_ip(client_ip, now)
        if path == TIME_PATH and method == "GET":
            result = {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
            return self._envelope(0, "OK", result)
        if path != QUERY_API_PATH:
            return SimResponse(404, {"Content-Type": "text/plain"}, b"404 page not found")
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        api_key, key = self._authenticate(raw_query, headers, client_ip, now)
        limit_headers = self._admit_key(api_key, QUERY_API_PATH, now)
        return self._envelope(0, "", self._key_info(api_key, key, now), headers=limit_headers)

    def _admit_ip(self, client_ip: str, now: int) -> None:
        state = self._ips.setdefault(client_ip, _IpState())
        if now < state.banned_until_ms:
            raise Answer(SimResponse(403, {"Content-Type": "text/plain"}, b"403 Forbidden"))
        if now - state.window.start_ms >= _IP_WINDOW_MS:
            state.window = _Window(now, 0)
        state.window.count += 1
        if state.window.count > self._ip_limit:
            state.banned_until_ms = now + _IP_BAN_MS
            raise Answer(SimResponse(403, {"Content-Type": "text/plain"}, b"403 Forbidden"))

    def _admit_key(self, api_key: str, path: str, now: int) -> dict[str, str]:
        window = self._key_windows.setdefault((api_key, path), _Window())
        if now - window.start_ms >= 1000:
            window.start_ms, window.count = now - now % 1000, 0
        window.count += 1
        headers = {
            "X-Bapi-Limit": str(self._key_limit),
            "X-Bapi-Limit-Status": str(max(0, self._key_limit - window.count)),
            "X-Bapi-Limit-Reset-Timestamp": str(window.start_ms + 1000),
        }
        if window.count > self._key_limit:
            self._count_10006 += 1
            raise Answer(self._envelope(10006, MSG_TOO_MANY, {}, headers=headers))
        return headers

    def _authenticate(
        self, raw_query: str, headers: Mapping[str, str], client_ip: str, now: int
    ) -> tuple[str, _Key]:
        api_key = header(headers, "X-BAPI-API-KEY")
        timestamp = header(headers, "X-BAPI-TIMESTAMP")
        signature = header(headers, "X-BAPI-SIGN")
        window = header(headers, "X-BAPI-RECV-WINDOW")
        if not api_key or not timestamp or not signature:
            raise Answer(SimResponse(401, {"Content-Type": "text/plain"}, b"401 Unauthorized"))
        recv_window = window if window is not None else str(_DEFAULT_RECV_WINDOW_MS)
        if not timestamp.isdigit() or not recv_window.isdigit():
            raise Answer(self._envelope(10001, "params error: timestamp or recv_window", {}))
        stamp, span = int(timestamp), int(recv_window)
        if not now - span <= stamp < now + _FUTURE_TOLERANCE_MS:
            raise Answer(
                self._envelope(
                    10002,
                    "invalid request, please check your server timestamp or recv_window param. "
                    f"req_timestamp[{stamp}],server_timestamp[{now}],recv_window[{span}]",
                    {},
                )
            )
        key = self._keys.get(api_key)
        if key is None or self._expired(key, now):
            raise Answer(self._envelope(10003, MSG_KEY_INVALID, {}))
        # For GET the payload is the query string exactly as sent (header value if absent).
        expected = sign(key.secret, prehash(timestamp, api_key, window or "", raw_query))
        if not hmac.compare_digest(expected, signature.lower()):
            origin = prehash(timestamp, api_key, window or "", raw_query)
            raise Answer(self._envelope(10004, f"error sign! origin_string[{origin}]", {}))
        if "*" not in key.ips and not ip_allowed(client_ip, key.ips):
            raise Answer(self._envelope(10010, MSG_UNMATCHED_IP, {}))
        return api_key, key

    def _expiry(self, key: _Key) -> datetime | None:
        if key.expired_at is not None:
            moment = datetime.fromisoformat(key.expired_at.replace("Z", "+00:00"))
            return None if moment.year <= 1970 else moment
        if "*" in key.ips:
            return datetime.fromtimestamp(key.created_ms / 1000, UTC) + _UNBOUND_LIFETIME
        return None

    def _expired(self, key: _Key, now: int) -> bool:
        expiry = self._expiry(key)
        return expiry is not None and expiry.timestamp() * 1000 <= now

    def _key_info(self, api_key: str, key: _Key, now: int) -> dict[str, object]:
        expiry = self._expiry(key)
        if expiry is None:
            expired_at, deadline_day = _EPOCH, -2
        else:
            expired_at = _iso(expiry)
            deadline_day = max(0, int((expiry.timestamp() * 1000 - now) // 86_400_000))
        return {
            "id": str(self._next_id),
            "note": key.note,
            "apiKey": api_key,
            "readOnly": key.read_only,
            "secret": "",
            "permissions": {group: list(values) for group, values in key.permissions.items()},
            "ips": list(key.ips),
            "type": 1,
            "deadlineDay": deadline_day,
            "expiredAt": expired_at,
            "createdAt": _iso(datetime.fromtimestamp(key.created_ms / 1000, UTC)),
            "unified": 0,
            "uta": key.uta,
            "userID": 24617703,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": True,
            "parentUid": "0",
            "kycLevel": "LEVEL_DEFAULT",
            "kycRegion": "",
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
                    return _admin(200, [self._view(k, v) for k, v in self._keys.items()])
                if parts == ["keys"] and method == "POST":
                    api_key, secret = data.pop("api_key"), data.pop("secret")
                    if api_key in self._keys:
                        return _admin(409, {"error": "key exists"})
                    self._keys[api_key] = self._new_key(
                        secret,
                        data.pop("permissions", None),
                        data.pop("ips", None),
                        bool(data.pop("read_only", False)),
                        bool(data.pop("uta", False)),
                        data.pop("expired_at", None),
                    )
                    if data:
                        return _admin(400, {"error": f"unknown fields: {sorted(data)}"})
                    return _admin(201, self._view(api_key, self._keys[api_key]))
                if len(parts) == 2 and parts[0] == "keys":
                    key = self._keys.get(parts[1])
                    if key is None:
                        return _admin(404, {"error": "unknown api_key"})
                    if method == "DELETE":
                        del self._keys[parts[1]]
                        return _admin(200, {"deleted": parts[1]})
                    if method == "PATCH":
                        read_only = data.pop("read_only", None)
                        self._update_locked(
                            key,
                            data.pop("permissions", None),
                            data.pop("ips", None),
                            None if read_only is None else bool(read_only),
                            data.pop("expired_at", None),
                        )
                    return _admin(200, self._view(parts[1], key))
                if parts == ["faults"]:
                    if method == "POST":
                        self._set_faults(data)
                    return _admin(200, self._faults())
                if parts == ["stats"] and method == "GET":
                    return _admin(
                        200, {"count_10006": self._count_10006, "requests": dict(self._per_key)}
                    )
        except (ValueError, KeyError, TypeError) as exc:
            return _admin(400, {"error": str(exc)})
        return _admin(404, {"error": "not found"})

    def _view(self, api_key: str, key: _Key) -> dict[str, object]:
        return {
            "api_key": api_key,
            "permissions": key.permissions,
            "ips": key.ips,
            "read_only": bool(key.read_only),
            "uta": bool(key.uta),
        }


def _admin(status: int, payload: object) -> SimResponse:
    return json_response(status, payload, _JSON)


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_plain,
    lambda now: [
        DemoKey(
            "foxtrot-bybit",
            "foxtrot",
            "bybit",
            "unified account: derivatives trading, as Bybit grants it",
            {"uta": True},
        ),
    ],
)
