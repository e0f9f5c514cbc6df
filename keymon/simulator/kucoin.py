"""A faithful fake of KuCoin's REST API, limited to what a key monitor needs.

`KucoinSimulator` implements KuCoin's *documented* behaviour (exchange-apis.md §2.3, from the
KuCoin docs "Authentication", "Get API Key Info" and the error list; the universal SDK's
``openapi-account-account.json``), written from the docs and not from keymon's adapter:

- ``GET /api/v1/timestamp`` and ``GET /api/v1/user/api-key``, answering the envelope
  ``{"code": "200000", "data": ...}`` (errors ``{"code": "4000xx", "msg": ...}``);
- signed-request validation: the five ``KC-API-*`` headers (``400001``), the timestamp within
  5 s of server time (``400002``), unknown or deleted keys (``400003``), the passphrase sent as
  ``base64(HMAC-SHA256(secret, passphrase))`` for key versions 2 and 3 (``400004``), the
  signature ``base64(HMAC-SHA256(secret, timestamp + METHOD + endpoint + body))`` over the exact
  bytes sent, ``endpoint`` including ``?query`` (``400005``), the key's IP whitelist against the
  client IP (``400006``) and the ``General`` permission the endpoint needs (``400007``);
- the whitelist answered **masked** (first octet and last octet visible: ``203.**.154``);
- a rate limit: per key a fixed window (default 30 s, budget 2000 weight, each key-info call
  weighing 20) answered with ``429000`` and HTTP 429 plus the ``gw-ratelimit-*`` headers (their
  names are unconfirmed in the docs);
- fault injection (latency, failed responses, truncated bodies, server clock skew) and an admin
  JSON API under ``/_simulator/`` (never used by keymon).

The auth-error HTTP status is 401 (the docs call this typical, unconfirmed). Like the other
simulators it is a synchronous state machine behind one lock with an injectable clock.
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
from keymon.simulator.demo_keys import STRANGER_IP, DemoKey, DemoVenue, register_with_passphrase
from keymon.simulator.server import (
    ADMIN_PREFIX,
    SimResponse,
)

__all__ = ["KucoinSimulator", "mask", "sign"]

TIME_PATH: Final = "/api/v1/timestamp"
API_KEY_PATH: Final = "/api/v1/user/api-key"
OK: Final = "200000"
WINDOW_MS: Final = 5000
_API_KEY_WEIGHT: Final = 20
_POOL_WINDOW_MS: Final = 30_000
_POOL_LIMIT: Final = 2000
_JSON: Final = {"Content-Type": "application/json"}
MSG_MISSING_HEADERS: Final = (
    "Please check the header of your request for KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP,"
    " KC-API-PASSPHRASE"
)
MSG_TIMESTAMP: Final = (
    "KC-API-TIMESTAMP Invalid -- Time differs from server time by more than 5 seconds"
)
MSG_IP: Final = "Invalid request ip, the current clientIp is:"
MSG_DENIED: Final = (
    "Access Denied -- Your api key does not have sufficient permissions to access the uri"
)
PERMISSION_NAMES: Final = (
    "General",
    "Spot",
    "Margin",
    "Futures",
    "InnerTransfer",
    "Transfer",
    "Earn",
)


def sign(secret: str, text: str) -> str:
    """base64 of HMAC-SHA256(secret, text)."""
    digest = hmac.new(
        secret.encode(), text.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def mask(entry: str) -> str:
    """KuCoin's masked form of a whitelist entry: first and last octet, ``**`` between."""
    parts = entry.split("/")[0].split(".")
    if len(parts) != 4:
        return "**"
    return f"{parts[0]}.**.{parts[3]}"


@dataclass
class _Key:
    secret: str
    passphrase: str
    version: int
    permissions: list[str]
    ips: list[str]
    created_ms: int
    remark: str = ""


class KucoinSimulator(SimulatorBase):
    """A thread-safe, in-memory KuCoin fake with an injectable clock (seconds)."""

    has_admin = True
    admin_in_transport = True

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        pool_limit: int = _POOL_LIMIT,
        pool_window_ms: int = _POOL_WINDOW_MS,
    ) -> None:
        if pool_limit < 1 or pool_window_ms < 1:
            raise ValueError("limits must be at least 1")
        super().__init__(clock=clock)
        self._pool_limit = pool_limit
        self._pool_window_ms = pool_window_ms
        self._keys: dict[str, _Key] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._per_key: Counter[str] = Counter()
        self._count_429000 = 0

    # ---------------------------------------------------------------- knobs

    @property
    def count_429000(self) -> int:
        """How many ``429000`` (too many requests) answers have been sent."""
        with self._lock:
            return self._count_429000

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
        version: int = 3,
        permissions: list[str] | None = None,
        ips: list[str] | None = None,
    ) -> None:
        """Register a key. Defaults: General and Spot, whitelisted to 127.0.0.1, version 3."""
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = self._new_key(secret, passphrase, version, permissions, ips)

    def _new_key(
        self,
        secret: str,
        passphrase: str,
        version: int,
        permissions: list[str] | None,
        ips: list[str] | None,
    ) -> _Key:
        if version not in (2, 3):
            raise ValueError("version must be 2 or 3")
        perms = list(permissions) if permissions is not None else ["General", "Spot"]
        _check_permissions(perms)
        bound = list(ips) if ips is not None else ["127.0.0.1"]
        _check_ips(bound)
        return _Key(secret, passphrase, version, perms, bound, self._now_ms())

    def update_key(
        self, api_key: str, *, permissions: list[str] | None = None, ips: list[str] | None = None
    ) -> None:
        """Replace a key's permission list or IP whitelist (``[]``: no restriction)."""
        with self._lock:
            self._update_locked(self._keys[api_key], permissions, ips)

    @staticmethod
    def _update_locked(key: _Key, permissions: list[str] | None, ips: list[str] | None) -> None:
        if permissions is not None:
            _check_permissions(permissions)
            key.permissions = list(permissions)
        if ips is not None:
            _check_ips(ips)
            key.ips = list(ips)

    def delete_key(self, api_key: str) -> None:
        """Forget a key: it answers ``400003`` from now on."""
        with self._lock:
            del self._keys[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- exchange requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = header(headers, "KC-API-KEY")
        if api_key is not None:
            self._per_key[api_key] += 1

    @staticmethod
    def _ok(data: object, headers: Mapping[str, str] | None = None) -> SimResponse:
        body = json.dumps({"code": OK, "data": data}).encode()
        return SimResponse(200, {**_JSON, **(headers or {})}, body)

    @staticmethod
    def _error(
        status: int, code: str, msg: str, headers: Mapping[str, str] | None = None
    ) -> Answer:
        body = json.dumps({"code": code, "msg": msg}).encode()
        return Answer(SimResponse(status, {**_JSON, **(headers or {})}, body))

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
            return self._ok(now)
        if path != API_KEY_PATH:
            return SimResponse(404, dict(_JSON), json.dumps({"code": "404000"}).encode())
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        api_key, key = self._authenticate(method, path, raw_query, body, headers, client_ip, now)
        limit_headers = self._admit(api_key, now)
        info = {
            "remark": key.remark,
            "apiKey": api_key,
            "apiVersion": key.version,
            "permission": ",".join(key.permissions),
            "ipWhitelist": ",".join(mask(ip) for ip in key.ips),
            "createdAt": key.created_ms,
            "uid": 165111215,
            "isMaster": True,
        }
        return self._ok(info, limit_headers)

    def _admit(self, api_key: str, now: int) -> dict[str, str]:
        start, used = self._windows.get(api_key, (0, 0))
        if now - start >= self._pool_window_ms:
            start, used = now, 0
        used += _API_KEY_WEIGHT
        self._windows[api_key] = (start, used)
        headers = {
            "gw-ratelimit-limit": str(self._pool_limit),
            "gw-ratelimit-remaining": str(max(0, self._pool_limit - used)),
            "gw-ratelimit-reset": str(max(0, start + self._pool_window_ms - now)),
        }
        if used > self._pool_limit:
            self._count_429000 += 1
            raise self._error(429, "429000", "Too Many Requests", headers)
        return headers

    def _authenticate(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now: int,
    ) -> tuple[str, _Key]:
        api_key = header(headers, "KC-API-KEY")
        signature = header(headers, "KC-API-SIGN")
        timestamp = header(headers, "KC-API-TIMESTAMP")
        passphrase = header(headers, "KC-API-PASSPHRASE")
        version = header(headers, "KC-API-KEY-VERSION")
        if not api_key or not signature or not timestamp or not passphrase:
            raise self._error(401, "400001", MSG_MISSING_HEADERS)
        if not timestamp.isdigit() or abs(int(timestamp) - now) > WINDOW_MS:
            raise self._error(401, "400002", MSG_TIMESTAMP)
        key = self._keys.get(api_key)
        if key is None:
            raise self._error(401, "400003", "KC-API-KEY not exists")
        # Versions 2 and 3 send the passphrase signed; version 1 (retired) sent it plain.
        expected_passphrase = sign(key.secret, key.passphrase)
        if version not in ("2", "3") or not hmac.compare_digest(expected_passphrase, passphrase):
            raise self._error(401, "400004", "KC-API-PASSPHRASE error")
        endpoint = path + (f"?{raw_query}" if raw_query else "")
        text = timestamp + method + endpoint + body.decode("utf-8", "surrogateescape")
        if not hmac.compare_digest(sign(key.secret, text), signature):
            raise self._error(401, "400005", "Signature error - Please check your signature")
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise self._error(401, "400006", MSG_IP + client_ip)
        if "General" not in key.permissions:
            raise self._error(401, "400007", MSG_DENIED)
        return api_key, key

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
                    secret, passphrase = data.pop("secret"), data.pop("passphrase")
                    if api_key in self._keys:
                        return json_response(409, {"error": "key exists"})
                    key = self._new_key(
                        secret,
                        passphrase,
                        int(data.pop("version", 3)),
                        data.pop("permissions", None),
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
                            found, data.pop("permissions", None), data.pop("ips", None)
                        )
                    return json_response(200, self._view(parts[1], found))
                if parts == ["faults"]:
                    if method == "POST":
                        self._set_faults(data)
                    return json_response(200, self._faults())
                if parts == ["stats"] and method == "GET":
                    return json_response(
                        200,
                        {"count_429000": self._count_429000, "requests": dict(self._per_key)},
                    )
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": "not found"})

    @staticmethod
    def _view(api_key: str, key: _Key) -> dict[str, object]:
        return {
            "api_key": api_key,
            "version": key.version,
            "permissions": key.permissions,
            "ips": key.ips,
        }


def _check_permissions(permissions: list[str]) -> None:
    unknown = set(permissions) - set(PERMISSION_NAMES)
    if unknown:
        raise ValueError(f"unknown permissions: {sorted(unknown)}")


def _check_ips(ips: list[str]) -> None:
    for entry in ips:
        ipaddress.ip_network(entry, strict=False)  # ValueError on garbage


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_with_passphrase,
    lambda now: [
        DemoKey(
            "hotel-kucoin",
            "hotel",
            "kucoin",
            f"IP list also holds {STRANGER_IP}, outside trusted_ips (KuCoin masks it)",
            {"ips": ["127.0.0.1", STRANGER_IP]},
        ),
    ],
    extra=("passphrase",),
)
