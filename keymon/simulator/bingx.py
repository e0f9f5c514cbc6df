"""A faithful fake of BingX's REST API, limited to what a key monitor needs.

`BingxSimulator` implements BingX's *documented* behaviour (exchange-apis.md §2.7; the BingX docs
"Signature Authentication", "Rate limit", "Common error codes" and, on the common "Sub-account"
page, "Query user API Key permissions"; the BingX API management page for key rules), written
from the docs and not from keymon's adapter:

- ``GET /openApi/swap/v2/server/time`` (unsigned) and ``GET /openApi/v1/account/apiPermissions``,
  answering the envelope ``{"code": 0, "msg": "", "timestamp": ..., "data": {...}}``; the
  permissions answer is ``{apiKey, permissions, ipAddresses, note}``, bare as in BingX's own
  example answer (inside the envelope with :meth:`set_wrap_permissions`), ``permissions`` a list of
  codes (1 spot trading, 2 read, 3 perpetual futures, 4 universal transfer, 5 withdraw, 7
  sub-account internal transfer) and ``ipAddresses`` the key's whitelist;
- signed requests: the key in ``X-BX-APIKEY`` (``100413`` "Null apiKey" when absent,
  "Incorrect apiKey" when unknown or deleted); ``timestamp`` (ms) required (``100421`` when
  absent, ``80014`` when not a number) and within ``recvWindow`` (default 5000 ms) of server
  time (``100421``); ``signature`` required (``100412``) and equal to the hex HMAC-SHA256 of the
  exact parameter string sent, the query string directly followed by the body, minus the
  ``signature`` parameter (``100001``); the key's IP whitelist against the client IP
  (``100419``, naming the refused IP) and the Read permission (``100004``);
- the endpoint's limit, 2 requests/s per UID, answered with ``100410``; every signed answer
  carries ``X-RateLimit-Requests-Remain`` and ``X-RateLimit-Requests-Expire`` (the end of the
  window, epoch ms);
- the key rules of BingX's API page: at most 20 IPv4 addresses per key, and a key with
  withdrawal permission must be bound to IPs (:class:`ValueError` otherwise); a key bound to no
  IP with trading or transfer permissions is deleted after 14 days without a signed call (the
  simulator counts every authenticated call as use, which is what BingX presumably does);
- fault injection (latency, failed responses, truncated bodies, server clock skew).

BingX answers business errors with HTTP 200 and a non-zero ``code``; the simulator does the
same. The order of the checks, a symmetric timestamp window (a timestamp too far ahead is refused
like one too old) and the format of ``X-RateLimit-Requests-Expire`` are assumptions. Like the
other simulators it is a pure synchronous state machine behind one lock, with an injectable
clock; injected latency is returned as `SimResponse.delay`. It has no admin API.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from keymon.simulator.common import (
    Answer,
    SimulatorBase,
    header,
    ip_allowed,
)
from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_plain
from keymon.simulator.server import SimResponse

__all__ = ["BingxSimulator", "sign", "signed_payload"]

TIME_PATH: Final = "/openApi/swap/v2/server/time"
PERMISSIONS_PATH: Final = "/openApi/v1/account/apiPermissions"
API_KEY_HEADER: Final = "X-BX-APIKEY"
DEFAULT_RECV_WINDOW_MS: Final = 5000
RATE_LIMIT_PER_SECOND: Final = 2
IDLE_DELETION_S: Final = 14 * 86400
MAX_IPS: Final = 20
#: Documented permission codes; 2 is Read, 5 is withdraw.
CODES: Final = frozenset({1, 2, 3, 4, 5, 7})
READ: Final = 2
WITHDRAW: Final = 5
#: Codes that put an unbound key on the 14-day idle-deletion list (trading and transfers).
IDLE_DELETION_CODES: Final = frozenset({1, 3, 4, 5, 7})
DEFAULT_PERMISSIONS: Final = (1, 2)
_JSON: Final = {"Content-Type": "application/json"}
_IP_PAGE: Final = "https://bingx.com/en/account/api/"


def sign(secret: str, payload: bytes | str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` under ``secret``."""
    message = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_payload(raw_query: str, body: bytes | str = b"") -> bytes:
    """What BingX signs: the raw query then the raw body, no separator, minus ``signature``."""
    query = raw_query.encode("utf-8", "surrogateescape")
    raw_body = body.encode("utf-8") if isinstance(body, str) else body
    return _strip_signature(query) + _strip_signature(raw_body)


def _strip_signature(part: bytes) -> bytes:
    """``part`` without its ``signature=...`` parameter, every other byte kept as sent."""
    pieces = part.split(b"&")
    kept = [p for p in pieces if not p.startswith(b"signature=")]
    return part if len(kept) == len(pieces) else b"&".join(kept)


@dataclass
class _Key:
    secret: str
    uid: str
    permissions: list[int]
    ips: list[str]
    note: str
    last_used: float


@dataclass
class _Window:
    second: int = 0
    count: int = 0


class BingxSimulator(SimulatorBase):
    """A thread-safe, in-memory BingX fake with an injectable clock (seconds)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        limit_per_second: int = RATE_LIMIT_PER_SECOND,
    ) -> None:
        if limit_per_second < 1:
            raise ValueError("the limit must be at least 1")
        super().__init__(clock=clock)
        self._limit = limit_per_second
        self._wrap_permissions = False
        self._keys: dict[str, _Key] = {}
        self._windows: dict[str, _Window] = {}
        self._per_key: Counter[str] = Counter()
        self._count_100410 = 0
        self._deleted_idle: list[str] = []
        self._next_uid = 1_000_000_000

    # ---------------------------------------------------------------- knobs

    def set_limit(self, per_second: int) -> None:
        """Requests per second each UID may make to apiPermissions (2, as documented)."""
        if per_second < 1:
            raise ValueError("the limit must be at least 1")
        with self._lock:
            self._limit = per_second

    def set_wrap_permissions(self, wrap: bool) -> None:
        """Answer apiPermissions inside the ``{"code", "msg", "data"}`` envelope (``True``) or as
        the bare object of BingX's own example answer (``False``, the default)."""
        with self._lock:
            self._wrap_permissions = wrap

    @property
    def count_100410(self) -> int:
        """How many ``100410`` (rate limit) answers have been sent."""
        with self._lock:
            return self._count_100410

    @property
    def deleted_idle(self) -> list[str]:
        """Keys the simulator deleted for 14 days without use, oldest first."""
        with self._lock:
            return list(self._deleted_idle)

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
        permissions: list[int] | None = None,
        ips: list[str] | None = None,
        uid: str | None = None,
        note: str = "keymon",
    ) -> None:
        """Register a key. Defaults: the guide's key (Read + Spot Trading, bound to 127.0.0.1)."""
        codes = list(permissions) if permissions is not None else list(DEFAULT_PERMISSIONS)
        bound = list(ips) if ips is not None else ["127.0.0.1"]
        _check_key(codes, bound)
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            if uid is None:
                self._next_uid += 1
                uid = str(self._next_uid)
            self._keys[api_key] = _Key(secret, uid, codes, bound, note, self._clock())

    def update_key(
        self, api_key: str, *, permissions: list[int] | None = None, ips: list[str] | None = None
    ) -> None:
        """Change a key's permissions or IP whitelist (``[]`` unbinds it)."""
        with self._lock:
            key = self._keys[api_key]
            codes = list(permissions) if permissions is not None else key.permissions
            bound = list(ips) if ips is not None else key.ips
            _check_key(codes, bound)
            key.permissions, key.ips = codes, bound

    def delete_key(self, api_key: str) -> None:
        """Forget a key: it answers ``100413`` from now on."""
        with self._lock:
            del self._keys[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- exchange requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = header(headers, API_KEY_HEADER)
        if api_key:
            self._per_key[api_key] += 1

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
            return _envelope(now, 0, "", {"serverTime": now})
        if path != PERMISSIONS_PATH:
            return SimResponse(404, {"Content-Type": "text/plain"}, b"404 Not Found")
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        self._expire_idle_keys()
        api_key, key = self._authenticate(raw_query, body, headers, client_ip, now)
        remain, expire = self._admit(key.uid, now)
        limits = {
            "X-RateLimit-Requests-Remain": str(remain),
            "X-RateLimit-Requests-Expire": str(expire),
        }
        data = {
            "apiKey": api_key,
            "permissions": sorted(key.permissions),
            "ipAddresses": list(key.ips),
            "note": key.note,
        }
        if self._wrap_permissions:
            return _envelope(now, 0, "", data, limits)
        # BingX's example answer for this endpoint is the bare object (docs-v3, "Query API KEY
        # Permissions").
        return SimResponse(200, {**_JSON, **limits}, json.dumps(data).encode())

    def _authenticate(
        self, raw_query: str, body: bytes, headers: Mapping[str, str], client_ip: str, now: int
    ) -> tuple[str, _Key]:
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        api_key = header(headers, API_KEY_HEADER) or ""
        if not api_key:
            raise Answer(_envelope(now, 100413, "Null apiKey"))
        timestamp = params.get("timestamp")
        if not timestamp:
            raise Answer(_envelope(now, 100421, "Null timestamp or timestamp mismatch"))
        if not timestamp.isdigit():
            raise Answer(_envelope(now, 80014, "timestamp is invalid"))
        window = params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS))
        if not window.isdigit():
            raise Answer(_envelope(now, 80014, "Invalid parameters, err: recvWindow"))
        if abs(now - int(timestamp)) > int(window):
            raise Answer(_envelope(now, 100421, "Null timestamp or timestamp mismatch"))
        signature = params.get("signature")
        if not signature:
            raise Answer(_envelope(now, 100412, "Null signature"))
        key = self._keys.get(api_key)
        if key is None:
            raise Answer(_envelope(now, 100413, "Incorrect apiKey"))
        expected = sign(key.secret, signed_payload(raw_query, body))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Answer(_envelope(now, 100001, "Signature verification failed"))
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise Answer(
                _envelope(
                    now,
                    100419,
                    f"your current request IP is {client_ip} does not match IP whitelist , "
                    f"please go to {_IP_PAGE} to verify the ip you have set",
                )
            )
        key.last_used = self._clock()
        if READ not in key.permissions:
            raise Answer(
                _envelope(
                    now,
                    100004,
                    "Permission denied as the API key was created without the permission, "
                    "this api need Read permission",
                )
            )
        return api_key, key

    def _admit(self, uid: str, now: int) -> tuple[int, int]:
        """Count one call of ``uid`` in its one-second window: (remaining, window end ms)."""
        second = now // 1000
        window = self._windows.setdefault(uid, _Window(second))
        if window.second != second:
            window.second, window.count = second, 0
        window.count += 1
        expire = (second + 1) * 1000
        if window.count > self._limit:
            self._count_100410 += 1
            limits = {
                "X-RateLimit-Requests-Remain": "0",
                "X-RateLimit-Requests-Expire": str(expire),
            }
            raise Answer(_envelope(now, 100410, "rate limited", None, limits))
        return self._limit - window.count, expire

    def _expire_idle_keys(self) -> None:
        """BingX's rule: a key bound to no IP with trading or transfer permissions goes after
        14 days without use."""
        cutoff = self._clock() - IDLE_DELETION_S
        for name, key in list(self._keys.items()):
            if (
                not key.ips
                and IDLE_DELETION_CODES & set(key.permissions)
                and key.last_used < cutoff
            ):
                del self._keys[name]
                self._deleted_idle.append(name)


def _check_key(permissions: list[int], ips: list[str]) -> None:
    unknown = set(permissions) - CODES
    if unknown:
        raise ValueError(f"unknown permission codes: {sorted(unknown)}")
    if len(ips) > MAX_IPS:
        raise ValueError(f"at most {MAX_IPS} IPs per key")
    for entry in ips:
        try:
            ipaddress.IPv4Address(entry)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IPv4 address (BingX binds addresses)") from None
    if WITHDRAW in permissions and not ips:
        raise ValueError("a key with withdrawal permission must be bound to IPs")


def _envelope(
    now: int,
    code: int,
    msg: str,
    data: object = None,
    headers: Mapping[str, str] | None = None,
) -> SimResponse:
    body: dict[str, object] = {"code": code, "msg": msg, "timestamp": now}
    if data is not None:
        body["data"] = data
    return SimResponse(200, {**_JSON, **(headers or {})}, json.dumps(body).encode())


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_plain,
    lambda now: [
        DemoKey(
            "mike-bingx",
            "mike",
            "bingx",
            "trading key bound to no IP (BingX deletes it after 14 idle days)",
            {"ips": []},
        ),
    ],
)
