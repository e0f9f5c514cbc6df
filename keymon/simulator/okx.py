"""A faithful fake of OKX's v5 REST API, limited to what a key monitor needs.

`OkxSimulator` implements OKX's *documented* behaviour (exchange-apis.md §2.2, from the OKX v5
docs "REST Authentication", "Get account configuration" and "Error Code", and the API FAQ),
written from the docs and not from keymon's adapter. It implements:

- ``GET /api/v5/public/time`` and ``GET /api/v5/account/config``, answering the v5 envelope
  ``{"code": "0", "msg": "", "data": [...]}`` (``code`` is a string);
- signed-request validation: the ``OK-ACCESS-*`` headers (``50103``/``50104``/``50106``/
  ``50107`` when one is empty), the ISO 8601 millisecond timestamp (``50112`` when malformed)
  within 30 s of server time (``50102``), unknown or deleted keys (``50111``), the passphrase
  (``50105``), ``base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body))`` over
  the exact bytes sent (``50113``), the key's IP whitelist against the client IP (``50110``,
  HTTP 401, naming the refused IP) and the Read permission (``50120``);
- the documented rate limit of account/config, 5 requests per 2 s per UID, answered with
  ``50011`` (HTTP 429); ``50013`` (system busy) and HTTP 503 ``50001`` by fault injection;
- fault injection (latency, failed responses, truncated bodies, server clock skew) and an admin
  JSON API under ``/_simulator/`` (never used by keymon).

OKX documents that a key with Trade or Withdraw and no IP bound expires after 14 days *without
use*; keymon's polling is use, so the simulator does not model that expiry.

Like the other simulators it is a pure synchronous state machine behind one lock, with an
injectable clock; injected latency is returned as `SimResponse.delay`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
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

__all__ = ["OkxSimulator", "prehash", "sign"]

TIME_PATH: Final = "/api/v5/public/time"
CONFIG_PATH: Final = "/api/v5/account/config"
_WINDOW_MS: Final = 30_000
_RATE_WINDOW_MS: Final = 2000
_RATE_LIMIT: Final = 5
_MAX_IPS: Final = 20
_PERMS: Final = frozenset({"read_only", "trade", "withdraw"})
_JSON: Final = {"Content-Type": "application/json"}
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

#: Required headers and the code OKX answers when each is empty (docs "Error Code").
_HEADER_CODES: Final = (
    ("OK-ACCESS-KEY", "50103", "Request header OK-ACCESS-KEY cannot be empty."),
    ("OK-ACCESS-PASSPHRASE", "50104", "Request header OK-ACCESS-PASSPHRASE cannot be empty."),
    ("OK-ACCESS-SIGN", "50106", "Request header OK-ACCESS-SIGN cannot be empty."),
    ("OK-ACCESS-TIMESTAMP", "50107", "Request header OK-ACCESS-TIMESTAMP cannot be empty."),
)


def prehash(timestamp: str, method: str, request_path: str, body: str) -> str:
    """OKX's pre-hash string: ``timestamp + METHOD + requestPath + body``."""
    return timestamp + method.upper() + request_path + body


def sign(secret: str, text: str) -> str:
    """Base64 HMAC-SHA256 of ``text`` under ``secret``."""
    digest = hmac.new(
        secret.encode(), text.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class _Key:
    secret: str
    passphrase: str
    perm: list[str]
    ips: list[str]
    uid: str
    label: str = ""


@dataclass
class _Window:
    start_ms: int = 0
    count: int = 0


class OkxSimulator(SimulatorBase):
    """A thread-safe, in-memory OKX v5 fake with an injectable clock (seconds)."""

    has_admin = True
    admin_in_transport = True

    def __init__(
        self, *, clock: Callable[[], float] = time.time, limit_per_2s: int = _RATE_LIMIT
    ) -> None:
        if limit_per_2s < 1:
            raise ValueError("the limit must be at least 1")
        super().__init__(clock=clock)
        self._limit = limit_per_2s
        self._keys: dict[str, _Key] = {}
        self._windows: dict[str, _Window] = {}
        self._per_key: Counter[str] = Counter()
        self._count_50011 = 0
        self._busy_remaining = 0
        self._next_uid = 44705892343619584

    # ---------------------------------------------------------------- knobs

    def busy_next(self, n: int) -> None:
        """Answer the next ``n`` exchange requests with ``50013`` (HTTP 429, system busy)."""
        if n < 0:
            raise ValueError("busy_next needs n >= 0")
        with self._lock:
            self._busy_remaining = n

    def set_limit(self, per_2s: int) -> None:
        """Requests per 2 s each account may make to account/config (5, as documented)."""
        if per_2s < 1:
            raise ValueError("the limit must be at least 1")
        with self._lock:
            self._limit = per_2s

    @property
    def count_50011(self) -> int:
        """How many ``50011`` (rate limit) answers have been sent."""
        with self._lock:
            return self._count_50011

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
        perm: list[str] | None = None,
        ips: list[str] | None = None,
    ) -> None:
        """Register a key. Defaults: the guide's key (Read + Trade, bound to 127.0.0.1)."""
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = self._new_key(secret, passphrase, perm, ips)

    def _new_key(
        self, secret: str, passphrase: str, perm: list[str] | None, ips: list[str] | None
    ) -> _Key:
        perms = list(perm) if perm is not None else ["read_only", "trade"]
        bound = list(ips) if ips is not None else ["127.0.0.1"]
        _check_key(perms, bound)
        self._next_uid += 1
        return _Key(secret, passphrase, perms, bound, str(self._next_uid))

    def update_key(
        self, api_key: str, *, perm: list[str] | None = None, ips: list[str] | None = None
    ) -> None:
        """Change a key's permissions or IP whitelist (``[]`` unbinds it)."""
        with self._lock:
            self._update_locked(self._keys[api_key], perm, ips)

    @staticmethod
    def _update_locked(key: _Key, perm: list[str] | None, ips: list[str] | None) -> None:
        _check_key(perm if perm is not None else key.perm, ips if ips is not None else key.ips)
        if perm is not None:
            key.perm = list(perm)
        if ips is not None:
            key.ips = list(ips)

    def delete_key(self, api_key: str) -> None:
        """Forget a key: it answers ``50111`` from now on."""
        with self._lock:
            del self._keys[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- exchange requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = header(headers, "OK-ACCESS-KEY")
        if api_key:
            self._per_key[api_key] += 1

    def _injected_failure(self, path: str) -> SimResponse | None:
        response = super()._injected_failure(path)
        if response is None and self._busy_remaining > 0:
            self._busy_remaining -= 1
            response = _envelope("50013", "Systems are busy. Please try again later.", 429)
        return response

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
            return _envelope("0", "", 200, [{"ts": str(now)}])
        if path != CONFIG_PATH:
            return SimResponse(404, {"Content-Type": "text/plain"}, b"404 Not Found")
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        request_path = path + (f"?{raw_query}" if raw_query else "")
        key = self._authenticate(method, request_path, body, headers, client_ip, now)
        self._admit(key.uid, now)
        return _envelope("0", "", 200, [self._config(key)])

    def _authenticate(
        self,
        method: str,
        request_path: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now: int,
    ) -> _Key:
        for name, code, msg in _HEADER_CODES:
            if not header(headers, name):
                raise Answer(_envelope(code, msg, 401))
        api_key = header(headers, "OK-ACCESS-KEY") or ""
        timestamp = header(headers, "OK-ACCESS-TIMESTAMP") or ""
        signature = header(headers, "OK-ACCESS-SIGN") or ""
        passphrase = header(headers, "OK-ACCESS-PASSPHRASE") or ""
        if not _TIMESTAMP.fullmatch(timestamp):
            raise Answer(_envelope("50112", "Invalid OK-ACCESS-TIMESTAMP", 401))
        try:
            stamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            raise Answer(_envelope("50112", "Invalid OK-ACCESS-TIMESTAMP", 401)) from None
        if abs(stamp.timestamp() * 1000 - now) > _WINDOW_MS:
            raise Answer(_envelope("50102", "Timestamp request expired", 401))
        key = self._keys.get(api_key)
        if key is None:
            raise Answer(_envelope("50111", "Invalid OK-ACCESS-KEY", 401))
        if not hmac.compare_digest(passphrase.encode(), key.passphrase.encode()):
            raise Answer(_envelope("50105", "Invalid OK-ACCESS-PASSPHRASE", 401))
        text = prehash(timestamp, method, request_path, body.decode("utf-8", "surrogateescape"))
        if not hmac.compare_digest(sign(key.secret, text).encode(), signature.encode()):
            raise Answer(_envelope("50113", "Invalid Sign", 401))
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise Answer(
                _envelope(
                    "50110",
                    f"Your IP {client_ip} is not included in your API key's IP whitelist.",
                    401,
                )
            )
        if "read_only" not in key.perm:
            raise Answer(_envelope("50120", "API key doesn't have permission", 401))
        return key

    def _admit(self, uid: str, now: int) -> None:
        window = self._windows.setdefault(uid, _Window())
        if now - window.start_ms >= _RATE_WINDOW_MS:
            window.start_ms, window.count = now, 0
        window.count += 1
        if window.count > self._limit:
            self._count_50011 += 1
            raise Answer(_envelope("50011", "Rate limit reached. Please try again later.", 429))

    @staticmethod
    def _config(key: _Key) -> dict[str, object]:
        return {
            "uid": key.uid,
            "mainUid": key.uid,
            "acctLv": "2",
            "acctStpMode": "cancel_maker",
            "posMode": "net_mode",
            "autoLoan": False,
            "greeksType": "PA",
            "level": "Lv1",
            "levelTmp": "",
            "ctIsoMode": "automatic",
            "mgnIsoMode": "automatic",
            "roleType": "0",
            "traderInsts": [],
            "spotRoleType": "0",
            "spotTraderInsts": [],
            "opAuth": "0",
            "kycLv": "2",
            "label": key.label,
            "ip": ",".join(key.ips),
            "perm": ",".join(key.perm),
            "liquidationGear": "-1",
            "enableSpotBorrow": False,
            "spotBorrowAutoRepay": False,
            "type": "0",
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
        ``GET/POST /_simulator/faults``, ``GET /_simulator/stats``. Secrets and passphrases
        are never returned."""
        method = method.upper()
        parts = [unquote(p) for p in path[len(ADMIN_PREFIX) :].split("/")]
        try:
            data = json_object(body)
            with self._lock:
                if parts == ["keys"] and method == "GET":
                    return json_response(200, [self._view(k, v) for k, v in self._keys.items()])
                if parts == ["keys"] and method == "POST":
                    api_key, secret = data.pop("api_key"), data.pop("secret")
                    passphrase = data.pop("passphrase")
                    if api_key in self._keys:
                        return json_response(409, {"error": "key exists"})
                    key = self._new_key(
                        secret, passphrase, data.pop("perm", None), data.pop("ips", None)
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
                        self._update_locked(found, data.pop("perm", None), data.pop("ips", None))
                    return json_response(200, self._view(parts[1], found))
                if parts == ["faults"]:
                    if method == "POST":
                        self._set_faults(data)
                    return json_response(200, self._faults())
                if parts == ["stats"] and method == "GET":
                    return json_response(
                        200, {"count_50011": self._count_50011, "requests": dict(self._per_key)}
                    )
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": "not found"})

    def _faults(self) -> dict[str, object]:
        return {**super()._faults(), "busy_next": self._busy_remaining}

    def _apply_faults(self, ints: dict[str, int]) -> None:
        super()._apply_faults(ints)
        self._busy_remaining = ints["busy_next"]

    @staticmethod
    def _view(api_key: str, key: _Key) -> dict[str, object]:
        return {"api_key": api_key, "perm": list(key.perm), "ips": list(key.ips), "uid": key.uid}


def _check_key(perm: list[str], ips: list[str]) -> None:
    unknown = set(perm) - _PERMS
    if unknown:
        raise ValueError(f"unknown permissions: {sorted(unknown)}")
    if len(ips) > _MAX_IPS:
        raise ValueError(f"at most {_MAX_IPS} IPs per key")
    for entry in ips:
        ipaddress.ip_network(entry, strict=False)  # ValueError on garbage


def _envelope(code: str, msg: str, status: int, data: list[object] | None = None) -> SimResponse:
    body = {"code": code, "msg": msg, "data": data if data is not None else []}
    return SimResponse(status, dict(_JSON), json.dumps(body).encode())


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_with_passphrase,
    lambda now: [DemoKey("golf-okx", "golf", "okx", "healthy: read + trade, IP-bound")],
    extra=("passphrase",),
)
