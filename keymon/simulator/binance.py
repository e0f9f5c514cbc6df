"""A faithful fake of Binance's REST API, limited to what a key monitor needs.

`BinanceSimulator` is an independent implementation of Binance's *documented* behaviour (see
docs: exchange-apis.md section 1), written from the docs and not from keymon's own adapter, so
that keymon's tests check keymon against Binance rather than against itself. It implements:

- the endpoints ``GET /api/v3/ping``, ``GET /api/v3/time``, ``GET /sapi/v1/system/status``,
  ``GET /sapi/v1/account/apiRestrictions``, ``GET /sapi/v1/account/apiTradingStatus`` and
  ``GET /sapi/v1/account/status`` (the last two USER_DATA, IP weight 1, with per-key state:
  :meth:`BinanceSimulator.set_trading_status`, :meth:`BinanceSimulator.set_account_status`);
- signed-request validation in Binance's order (API-key format, unknown key, mandatory
  parameters, recvWindow, timestamp window, HMAC-SHA256 / Ed25519 / RSA signature over the raw
  query string followed by the raw body, IP whitelist), with Binance's codes and messages;
- per-IP fixed one-minute weight windows with the ``X-MBX-USED-WEIGHT-1M`` and
  ``X-SAPI-USED-IP-WEIGHT-1M`` headers, 429 with ``Retry-After``, then escalating 418 bans;
- fault injection (latency, failed responses, truncated bodies, server clock skew);
- an admin JSON API under ``/_simulator/`` for tests and demos (never used by keymon).

The class is a pure, synchronous state machine guarded by a single lock, with an injectable
clock. It never sleeps: injected latency is returned as `SimResponse.delay` and the transport
(`keymon.simulator.server`) waits it out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, NamedTuple, TypeGuard
from urllib.parse import parse_qsl, unquote

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from keymon.simulator.demo_keys import DAY, DemoKey, DemoVenue
from keymon.simulator.server import (
    ADMIN_PREFIX,
    SimResponse,
    SimulatorAsyncTransport,
    SimulatorServer,
    SimulatorSyncTransport,
    serve_in_thread,
)

__all__ = [
    "API_KEY_HEADER",
    "BinanceSimulator",
    "LoggedRequest",
    "signed_payload",
    "verify_hmac",
]

API_KEY_HEADER: Final = "X-MBX-APIKEY"

# Real keys are 64 alphanumerics; any non-empty alphanumeric string is accepted so that tests
# can use short readable keys. Anything else is Binance's -2014 "format invalid".
_API_KEY_RE: Final = re.compile(r"[A-Za-z0-9]+")
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,20}")
# recvWindow accepts up to three decimal places (microsecond precision), per rest-api.md.
_RECV_WINDOW_PATTERN: Final = r"^[0-9]{1,20}(\.[0-9]{1,3})?$"
_RECV_WINDOW_RE: Final = re.compile(_RECV_WINDOW_PATTERN)

_DEFAULT_RECV_WINDOW_MS: Final = 5000
_MAX_RECV_WINDOW_MS: Final = 60000
_FUTURE_TOLERANCE_MS: Final = 1000
# A timestamp with this many or more units cannot be milliseconds (that would be the year
# 5138), so it is read as microseconds, which Binance also accepts.
_MICROSECOND_THRESHOLD: Final = 10**14
_WINDOW_MS: Final = 60_000
_MAX_BAN_SECONDS: Final = 3 * 24 * 3600  # "from 2 minutes up to 3 days" (rest-api.md LIMITS)
_DAY_MS: Final = 86_400_000

# The trusted-IP list used when none is given: loopback only. With the guide-compliant default
# restrictions (ipRestrict true) this lets local tests and demos work out of the box while
# still refusing every other address. Pass an explicit list to change it.
_DEFAULT_IP_WHITELIST: Final = ("127.0.0.0/8", "::1")

_JSON_HEADERS: Final = {"Content-Type": "application/json;charset=UTF-8"}
_HTML_HEADERS: Final = {"Content-Type": "text/html"}

# Error texts from binance-spot-api-docs errors.md (exchange-apis.md section 1.9).
MSG_UNKNOWN: Final = "An unknown error occurred while processing the request."
MSG_DISCONNECTED: Final = "Internal error; unable to process your request. Please try again."
MSG_BAD_KEY_FORMAT: Final = "API-key format invalid."
MSG_REJECTED_KEY: Final = "Invalid API-key, IP, or permissions for action."
MSG_TS_AHEAD: Final = "Timestamp for this request was 1000ms ahead of the server's time."
MSG_TS_OUTSIDE: Final = "Timestamp for this request is outside of the recvWindow."
MSG_BAD_SIGNATURE: Final = "Signature for this request is not valid."
MSG_BAD_RECV_WINDOW: Final = "recvWindow must be less than 60000"

# Field order of the English doc example of apiRestrictions (section 1.4), so that responses
# look like the real thing; fields added by the caller are appended after these.
_RESTRICTION_FIELD_ORDER: Final = (
    "ipRestrict",
    "createTime",
    "enableReading",
    "enableWithdrawals",
    "enableInternalTransfer",
    "enableMargin",
    "enableFutures",
    "permitsUniversalTransfer",
    "enableVanillaOptions",
    "enableFixApiTrade",
    "enableFixReadOnly",
    "enableSpotAndMarginTrading",
    "enablePortfolioMarginTrading",
)
_TRADING_EXPIRY_FIELD: Final = "tradingAuthorityExpirationTime"

# apiTradingStatus ``data`` of a key nobody changed: the example of the documentation page
# https://developers.binance.com/docs/wallet/account/account-api-trading-status (no
# ``indicators``; ``updateTime`` is the key's creation in the simulator). The OpenAPI file
# https://github.com/binance/binance-api-swagger/blob/master/spot_api.yaml adds
# ``indicators``: {symbol: [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}, ...]}, which
# set_trading_status can add.
_TRADING_STATUS_DEFAULT: Final[Mapping[str, object]] = {
    "isLocked": False,
    "plannedRecoverTime": 0,
    "triggerCondition": {"GCR": 150, "IFER": 150, "UFR": 300},
}
_TRADING_ORDER: Final = (
    "isLocked",
    "plannedRecoverTime",
    "triggerCondition",
    "indicators",
    "updateTime",
)
_TRADING_STATUS_FIELDS: Final = frozenset(
    {"isLocked", "plannedRecoverTime", "triggerCondition", "indicators", "updateTime"}
)
# account/status when all is well (https://developers.binance.com/docs/wallet/account/account-status).
_ACCOUNT_STATUS_NORMAL: Final = "Normal"

KeyType = Literal["HMAC", "ED25519", "RSA"]
_CounterName = Literal["api", "sapi"]
_IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class LoggedRequest(NamedTuple):
    """One exchange request as the simulator saw it (admin requests are not logged)."""

    method: str
    path: str
    api_key: str | None
    status: int


# --------------------------------------------------------------------------------------------
# Signing helpers (module level so tests can check them against the official vectors).
# --------------------------------------------------------------------------------------------


def _strip_signature(data: bytes) -> bytes:
    """Drop every ``signature=...`` component, keeping all other bytes exactly as sent."""
    if not data:
        return data
    kept = [part for part in data.split(b"&") if part.split(b"=", 1)[0] != b"signature"]
    return b"&".join(kept)


def signed_payload(raw_query: str, body: bytes | str = b"") -> bytes:
    """Binance's "totalParams": raw query then raw body, no ``&`` between, minus ``signature``.

    The bytes are used exactly as sent (vector B2: percent-encoding is signed as is), and the
    two parts are concatenated directly (vector B3).
    """
    # surrogateescape: a raw query is ASCII in practice; if it is not, keep its bytes intact.
    query = raw_query.encode("utf-8", "surrogateescape")
    raw_body = body.encode("utf-8") if isinstance(body, str) else body
    return _strip_signature(query) + _strip_signature(raw_body)


def verify_hmac(secret: str, payload: bytes | str, signature: str) -> bool:
    """True if ``signature`` is the hex HMAC-SHA256 of ``payload`` under ``secret``.

    Binance documents HMAC signatures as not case-sensitive, so both sides are lowercased.
    """
    message = payload.encode("utf-8") if isinstance(payload, str) else payload
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8"))


def _verify_asymmetric(public_key: _PublicKey, payload: bytes, signature: str) -> bool:
    """Verify a base64 Ed25519 or RSA PKCS#1 v1.5 / SHA-256 signature (case-sensitive)."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(raw, payload)
        else:
            public_key.verify(raw, payload, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _load_public_key(pem: str | bytes) -> tuple[KeyType, _PublicKey]:
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("public_key_pem is not a PEM-encoded public key") from exc
    if isinstance(loaded, ed25519.Ed25519PublicKey):
        return "ED25519", loaded
    if isinstance(loaded, rsa.RSAPublicKey):
        return "RSA", loaded
    raise ValueError(
        f"unsupported public key type {type(loaded).__name__}: Binance takes Ed25519 or RSA"
    )


def _parse_networks(entries: Iterable[str]) -> tuple[_IpNetwork, ...]:
    networks: list[_IpNetwork] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(f"ip_whitelist entries must be strings, got {entry!r}")
        try:
            # strict=False: "10.0.0.7/24" means "the /24 holding 10.0.0.7", as a user means it.
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"invalid ip_whitelist entry {entry!r}") from exc
    return tuple(networks)


def _ip_in(client_ip: str, networks: Iterable[_IpNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; judge them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that also works on a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> SimResponse:
    merged = dict(_JSON_HEADERS)
    if headers:
        merged.update(headers)
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return SimResponse(status=status, headers=merged, body=body)


def _error(
    status: int, code: int, msg: str, headers: Mapping[str, str] | None = None
) -> SimResponse:
    return _json(status, {"code": code, "msg": msg}, headers)


def _check_json_value(name: str, value: object) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"restriction {name!r} is not JSON-serialisable") from exc


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class _Key:
    api_key: str
    key_type: KeyType
    # repr=False: secrets must never show up in a repr, a log line or an assertion message.
    hmac_secret: str | None = field(repr=False)
    public_key: _PublicKey | None = field(repr=False)
    restrictions: dict[str, object]
    ip_whitelist: tuple[str, ...]
    networks: tuple[_IpNetwork, ...]
    added_ms: int
    #: apiTradingStatus ``data`` (without ``updateTime`` unless set).
    trading_status: dict[str, object] = field(default_factory=dict)
    #: account/status ``data``.
    account_status: str = _ACCOUNT_STATUS_NORMAL


@dataclass
class _IpState:
    """Rate-limit state of one client IP; one state covers both the /api and /sapi counters."""

    window: int = -1
    used: dict[str, int] = field(default_factory=lambda: {"api": 0, "sapi": 0})
    limited_window: int | None = None  # the window in which this IP was last told 429
    rejected_while_limited: int = 0
    banned_until_ms: int = 0
    offences: int = 0


@dataclass(frozen=True)
class _Call:
    now_ms: int
    key: _Key | None
    headers: Mapping[str, str]


@dataclass(frozen=True)
class _Endpoint:
    method: str
    signed: bool  # USER_DATA (key + signature) rather than NONE
    weight: int
    render: Callable[[BinanceSimulator, _Call], object]


class _Rejected(Exception):
    """Internal: carries an error response out of the validation chain."""

    def __init__(self, response: SimResponse) -> None:
        super().__init__(response.status)
        self.response = response


class BinanceSimulator:
    """A thread-safe, in-memory Binance REST fake with an injectable clock.

    ``clock`` returns seconds since the epoch (default `time.time`); the simulator's server
    time is ``clock()`` plus `clock_skew_ms`. The weight limits are per client IP per minute.
    After an IP is told 429, more than ``ban_after_rejected`` further requests in the same
    window earn it a 418 ban of ``ban_seconds``, doubling with each repeat offence (capped at
    three days).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sapi_ip_weight_limit: int = 12000,
        api_ip_weight_limit: int = 6000,
        ban_after_rejected: int = 5,
        ban_seconds: int = 120,
    ) -> None:
        if sapi_ip_weight_limit < 1 or api_ip_weight_limit < 1:
            raise ValueError("weight limits must be at least 1")
        if ban_after_rejected < 0 or ban_seconds < 1:
            raise ValueError("ban_after_rejected must be >= 0 and ban_seconds >= 1")
        self._lock = threading.Lock()
        self._clock = clock
        self._limits: dict[str, int] = {"api": api_ip_weight_limit, "sapi": sapi_ip_weight_limit}
        self._ban_after_rejected = ban_after_rejected
        self._ban_seconds = ban_seconds
        self._keys: dict[str, _Key] = {}
        self._ips: dict[str, _IpState] = {}
        # Counts survive delete_key so tests can still ask how often a deleted key was used.
        self._per_key: Counter[str] = Counter()
        self._log: list[LoggedRequest] = []
        self._count_429 = 0
        self._count_418 = 0
        self._latency = 0.0
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_path: str | None = None
        self._truncate_remaining = 0
        self._clock_skew_ms = 0

    def __repr__(self) -> str:
        # Deliberately minimal: no key material, no secrets.
        with self._lock:
            return f"BinanceSimulator(keys={len(self._keys)}, requests={len(self._log)})"

    # ---------------------------------------------------------------- time and fault knobs

    def server_time_ms(self) -> int:
        """The simulator's current server time in ms (clock plus skew)."""
        with self._lock:
            return self._now_ms()

    def _now_ms(self) -> int:
        # round(), not int(): float seconds such as 1499827319.559 are 1499827319558.99... ms.
        return round(self._clock() * 1000) + self._clock_skew_ms

    @property
    def latency(self) -> float:
        """Seconds every exchange response is delayed by (reported as `SimResponse.delay`)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("latency must be a finite number >= 0")
        with self._lock:
            self._latency = float(seconds)

    @property
    def clock_skew_ms(self) -> int:
        """Milliseconds added to the clock to get server time (positive: server runs ahead)."""
        with self._lock:
            return self._clock_skew_ms

    @clock_skew_ms.setter
    def clock_skew_ms(self, skew: int) -> None:
        with self._lock:
            self._clock_skew_ms = int(skew)

    def fail_next(self, n: int, status: int = 503, path: str | None = None) -> None:
        """Answer the next ``n`` exchange requests with ``status`` (replaces any pending count);
        with ``path``, only the next ``n`` requests to that path (the others are answered).

        5xx answers carry Binance's -1001 JSON body; other statuses an HTML page, like a WAF
        or load balancer would send. Failed requests never reach validation or rate limiting,
        so they carry no weight header (they are still logged and counted per key).
        """
        if n < 0 or not 100 <= status <= 599:
            raise ValueError("fail_next needs n >= 0 and an HTTP status 100-599")
        with self._lock:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_path = path

    def truncate_next(self, n: int) -> None:
        """Cut the body of the next ``n`` exchange responses in half (status kept)."""
        if n < 0:
            raise ValueError("truncate_next needs n >= 0")
        with self._lock:
            self._truncate_remaining = n

    @property
    def count_429(self) -> int:
        """How many 429 answers have been sent."""
        with self._lock:
            return self._count_429

    @property
    def count_418(self) -> int:
        """How many 418 (IP banned) answers have been sent."""
        with self._lock:
            return self._count_418

    def reset_rate_limits(self) -> None:
        """Forget all weights, 429 states, bans and offence counts."""
        with self._lock:
            self._ips.clear()

    # ---------------------------------------------------------------------------- keys

    def add_key(
        self,
        api_key: str,
        *,
        hmac_secret: str | None = None,
        public_key_pem: str | bytes | None = None,
        restrictions: dict[str, object] | None = None,
        ip_whitelist: list[str] | None = None,
        trading_status: Mapping[str, object] | None = None,
        account_status: str | None = None,
    ) -> None:
        """Register a key: exactly one of an HMAC secret or an Ed25519/RSA public key (PEM).

        ``restrictions`` overrides the guide-compliant defaults (IP-restricted, reading and spot
        trading on, everything else off, created 30 days ago, no trading expiry). Extra fields
        are echoed by apiRestrictions; a value of None removes a field. ``ip_whitelist`` holds
        addresses or CIDRs; None means loopback only. ``trading_status`` and
        ``account_status`` are as in :meth:`set_trading_status` and :meth:`set_account_status`.
        """
        with self._lock:
            self._add_key_locked(api_key, hmac_secret, public_key_pem, restrictions, ip_whitelist)
            key = self._keys[api_key]
            try:
                _apply_trading_updates(key.trading_status, trading_status or {})
                if account_status is not None:
                    key.account_status = _account_status_value(account_status)
            except ValueError:
                del self._keys[api_key]
                raise

    def _add_key_locked(
        self,
        api_key: str,
        hmac_secret: str | None,
        public_key_pem: str | bytes | None,
        restrictions: Mapping[str, object] | None,
        ip_whitelist: list[str] | None,
    ) -> None:
        if not isinstance(api_key, str) or not _API_KEY_RE.fullmatch(api_key):
            raise ValueError("api_key must be a non-empty string of letters and digits")
        if api_key in self._keys:
            raise ValueError(f"api_key {api_key} already exists")
        if (hmac_secret is None) == (public_key_pem is None):
            raise ValueError("give exactly one of hmac_secret or public_key_pem")
        public_key: _PublicKey | None = None
        key_type: KeyType = "HMAC"
        if hmac_secret is not None:
            if not isinstance(hmac_secret, str) or not hmac_secret:
                raise ValueError("hmac_secret must be a non-empty string")
        else:
            assert public_key_pem is not None
            key_type, public_key = _load_public_key(public_key_pem)
        whitelist = tuple(_DEFAULT_IP_WHITELIST if ip_whitelist is None else ip_whitelist)
        networks = _parse_networks(whitelist)
        now_ms = self._now_ms()
        values: dict[str, object] = dict.fromkeys(_RESTRICTION_FIELD_ORDER, False)
        values.update(
            ipRestrict=True,
            createTime=now_ms - 30 * _DAY_MS,
            enableReading=True,
            enableSpotAndMarginTrading=True,
        )
        _apply_restriction_updates(values, restrictions or {})
        self._keys[api_key] = _Key(
            api_key=api_key,
            key_type=key_type,
            hmac_secret=hmac_secret,
            public_key=public_key,
            restrictions=values,
            ip_whitelist=whitelist,
            networks=networks,
            added_ms=now_ms,
            trading_status=dict(_TRADING_STATUS_DEFAULT),
        )

    def update_key(self, api_key: str, **restriction_fields: object) -> None:
        """Change apiRestrictions fields of a key; a value of None removes the field."""
        with self._lock:
            key = self._get_key(api_key)
            _apply_restriction_updates(key.restrictions, restriction_fields)

    def set_trading_status(self, api_key: str, **data_fields: object) -> None:
        """Change apiTradingStatus ``data`` fields of a key (``isLocked``,
        ``plannedRecoverTime`` in ms, ``triggerCondition``, ``indicators`` as in the OpenAPI
        file: ``{"BTCUSDT": [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}]}``, ``updateTime``);
        a value of None removes the field. A lock whose ``plannedRecoverTime`` has passed lifts
        itself."""
        with self._lock:
            key = self._get_key(api_key)
            _apply_trading_updates(key.trading_status, data_fields)

    def set_account_status(self, api_key: str, status: str) -> None:
        """Set what account/status answers for the key's account (``Normal`` when all is well)."""
        with self._lock:
            self._get_key(api_key).account_status = _account_status_value(status)

    def set_ip_whitelist(self, api_key: str, ip_whitelist: list[str] | None) -> None:
        """Replace a key's trusted-IP list (addresses or CIDRs); None means loopback only."""
        whitelist = tuple(_DEFAULT_IP_WHITELIST if ip_whitelist is None else ip_whitelist)
        networks = _parse_networks(whitelist)
        with self._lock:
            key = self._get_key(api_key)
            key.ip_whitelist = whitelist
            key.networks = networks

    def delete_key(self, api_key: str) -> None:
        """Delete a key; later requests with it get 401 -2015 (no IP suffix)."""
        with self._lock:
            self._get_key(api_key)
            del self._keys[api_key]

    def keys(self) -> list[dict[str, object]]:
        """All keys with their type, configured restrictions and whitelist; never secrets."""
        with self._lock:
            return [self._key_view(key) for key in self._keys.values()]

    def request_count(self, api_key: str) -> int:
        """How many exchange requests carried this key in X-MBX-APIKEY (any outcome)."""
        with self._lock:
            return self._per_key[api_key]

    @property
    def request_log(self) -> list[LoggedRequest]:
        """Every exchange request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def _get_key(self, api_key: str) -> _Key:
        try:
            return self._keys[api_key]
        except KeyError:
            raise KeyError(f"unknown api_key {api_key}") from None

    def _key_view(self, key: _Key) -> dict[str, object]:
        return {
            "api_key": key.api_key,
            "key_type": key.key_type,
            "restrictions": dict(key.restrictions),
            "ip_whitelist": list(key.ip_whitelist),
            "trading_status": dict(key.trading_status),
            "account_status": key.account_status,
            "request_count": self._per_key[key.api_key],
        }

    # ------------------------------------------------------------------------- serving

    def transport(self, client_ip: str = "127.0.0.1") -> httpx.AsyncBaseTransport:
        """An in-process httpx async transport; requests appear to come from ``client_ip``."""
        return SimulatorAsyncTransport(
            self.handle, client_ip=client_ip, admin_handler=self.handle_admin
        )

    def sync_transport(self, client_ip: str = "127.0.0.1") -> httpx.BaseTransport:
        """An in-process httpx sync transport; requests appear to come from ``client_ip``."""
        return SimulatorSyncTransport(
            self.handle, client_ip=client_ip, admin_handler=self.handle_admin
        )

    def server(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """A real HTTP server (not yet started) serving this simulator and its admin API."""
        return SimulatorServer(self.handle, host, port, admin_handler=self.handle_admin)

    def serve_in_thread(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> AbstractContextManager[str]:
        """Context manager: serve on a background thread, yielding the base URL."""
        return serve_in_thread(self.handle, host, port, admin_handler=self.handle_admin)

    # ---------------------------------------------------------------- request handling

    def handle(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """Answer one exchange request the way Binance would."""
        with self._lock:
            api_key = _header(headers, API_KEY_HEADER)
            if self._fail_remaining > 0 and self._fail_path in (None, path):
                self._fail_remaining -= 1
                response = _injected_failure(self._fail_status)
            else:
                response = self._dispatch(method.upper(), path, raw_query, body, headers, client_ip)
                if self._truncate_remaining > 0:
                    self._truncate_remaining -= 1
                    cut = max(1, len(response.body) // 2) if len(response.body) > 1 else 0
                    response = replace(response, body=response.body[:cut])
            self._log.append(LoggedRequest(method.upper(), path, api_key, response.status))
            if api_key is not None:
                self._per_key[api_key] += 1
            return replace(response, delay=self._latency)

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
        counter: _CounterName | None = None
        if path.startswith("/sapi/"):
            counter = "sapi"
        elif path.startswith("/api/"):
            counter = "api"
        endpoint = _ENDPOINTS.get(path)
        # Every request costs weight, including unknown paths and rejected ones.
        weight = endpoint.weight if endpoint is not None else 1
        state = self._ips.setdefault(client_ip, _IpState())
        try:
            self._admit(state, counter, weight, now_ms)
            response = self._answer(endpoint, method, raw_query, body, headers, client_ip, now_ms)
        except _Rejected as rejected:
            response = rejected.response
        if counter is not None:
            header = "X-MBX-USED-WEIGHT-1M" if counter == "api" else "X-SAPI-USED-IP-WEIGHT-1M"
            response.headers[header] = str(state.used[counter])
        return response

    def _answer(
        self,
        endpoint: _Endpoint | None,
        method: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now_ms: int,
    ) -> SimResponse:
        """Route an admitted request; raise _Rejected for any error answer."""
        if endpoint is None:
            raise _Rejected(_error(404, -1000, MSG_UNKNOWN))
        if method != endpoint.method:
            # Binance documents no answer for a wrong method. We send 405 with an Allow header
            # (what an HTTP front end does for unsupported methods) so that a client bug is
            # distinguishable from an unknown path.
            raise _Rejected(_error(405, -1000, MSG_UNKNOWN, {"Allow": endpoint.method}))
        key = None
        if endpoint.signed:
            key = self._authenticate(raw_query, body, headers, client_ip, now_ms)
        return _json(200, endpoint.render(self, _Call(now_ms, key, headers)))

    def _admit(
        self, state: _IpState, counter: _CounterName | None, weight: int, now_ms: int
    ) -> None:
        """Apply the per-IP weight window, 429 and 418 rules; raise _Rejected to refuse.

        One state covers both counters of an IP: once either counter is exceeded the IP is
        told 429 on /api and /sapi alike until the window ends, and a ban blocks both. The docs
        suggest /sapi may never escalate to 418; this simulator does, which is the stricter
        case for a client to handle.
        """
        window = now_ms // _WINDOW_MS
        if window != state.window:
            state.window = window
            state.used = {"api": 0, "sapi": 0}
        if state.banned_until_ms > now_ms:
            self._count_418 += 1
            raise _Rejected(_banned(state.banned_until_ms, now_ms))
        limit = self._limits[counter or "api"]
        retry_after = str(max(1, math.ceil(((window + 1) * _WINDOW_MS - now_ms) / 1000)))
        if state.limited_window == window:
            state.rejected_while_limited += 1
            if state.rejected_while_limited > self._ban_after_rejected:
                state.offences += 1
                doublings = min(state.offences - 1, 32)
                seconds = min(self._ban_seconds * 2**doublings, _MAX_BAN_SECONDS)
                state.banned_until_ms = now_ms + seconds * 1000
                state.limited_window = None
                state.rejected_while_limited = 0
                self._count_418 += 1
                raise _Rejected(_banned(state.banned_until_ms, now_ms))
            self._count_429 += 1
            raise _Rejected(_too_much_weight(limit, retry_after))
        if counter is None:
            return
        if state.used[counter] + weight > limit:
            state.limited_window = window
            state.rejected_while_limited = 0
            self._count_429 += 1
            raise _Rejected(_too_much_weight(limit, retry_after))
        state.used[counter] += weight

    def _authenticate(
        self,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now_ms: int,
    ) -> _Key:
        """Validate a signed request in Binance's order; raise _Rejected on the first failure."""
        api_key = _header(headers, API_KEY_HEADER)
        if api_key is None or not _API_KEY_RE.fullmatch(api_key):
            raise _Rejected(_error(401, -2014, MSG_BAD_KEY_FORMAT))
        key = self._keys.get(api_key)
        if key is None:
            raise _Rejected(_error(401, -2015, MSG_REJECTED_KEY))
        params = _parse_params(raw_query, body)
        timestamp_ms = _parse_timestamp(params.get("timestamp"))
        if timestamp_ms is None:
            raise _Rejected(_mandatory("timestamp"))
        signature = params.get("signature")
        if not signature:
            raise _Rejected(_mandatory("signature"))
        recv_window = float(_DEFAULT_RECV_WINDOW_MS)
        raw_window = params.get("recvWindow")
        if raw_window is not None:
            if not _RECV_WINDOW_RE.fullmatch(raw_window):
                raise _Rejected(
                    _error(
                        400,
                        -1100,
                        "Illegal characters found in parameter 'recvWindow'; "
                        f"legal range is '{_RECV_WINDOW_PATTERN}'.",
                    )
                )
            recv_window = float(raw_window)
            if recv_window > _MAX_RECV_WINDOW_MS:
                raise _Rejected(_error(400, -1131, MSG_BAD_RECV_WINDOW))
        if not timestamp_ms < now_ms + _FUTURE_TOLERANCE_MS:
            raise _Rejected(_error(400, -1021, MSG_TS_AHEAD))
        if now_ms - timestamp_ms > recv_window:
            raise _Rejected(_error(400, -1021, MSG_TS_OUTSIDE))
        payload = signed_payload(raw_query, body)
        if key.hmac_secret is not None:
            valid = verify_hmac(key.hmac_secret, payload, signature)
        else:
            assert key.public_key is not None
            valid = _verify_asymmetric(key.public_key, payload, signature)
        if not valid:
            raise _Rejected(_error(400, -1022, MSG_BAD_SIGNATURE))
        # Only JSON true enforces the whitelist, mirroring what apiRestrictions reports.
        if key.restrictions.get("ipRestrict") is True and not _ip_in(client_ip, key.networks):
            message = f"{MSG_REJECTED_KEY.removesuffix('.')}, request ip: {client_ip}"
            raise _Rejected(_error(401, -2015, message))
        return key

    # ------------------------------------------------------------------------- endpoints

    def _ep_ping(self, call: _Call) -> object:
        return {}

    def _ep_time(self, call: _Call) -> object:
        unit = _header(call.headers, "X-MBX-TIME-UNIT")
        if unit is not None and unit.upper() == "MICROSECOND":
            return {"serverTime": call.now_ms * 1000}
        return {"serverTime": call.now_ms}

    def _ep_system_status(self, call: _Call) -> object:
        return {"status": 0, "msg": "normal"}

    def _ep_api_restrictions(self, call: _Call) -> object:
        assert call.key is not None
        view = dict(call.key.restrictions)
        expiry = view.get(_TRADING_EXPIRY_FIELD)
        # Per the 2021-07-08 announcement the Spot & Margin Trading permission switches itself
        # off at tradingAuthorityExpirationTime (section 1.5, an inference the docs support).
        if (
            isinstance(expiry, int | float)
            and not isinstance(expiry, bool)
            and call.now_ms >= expiry
            and "enableSpotAndMarginTrading" in view
        ):
            view["enableSpotAndMarginTrading"] = False
        return view

    def _ep_api_trading_status(self, call: _Call) -> object:
        assert call.key is not None
        data = dict(call.key.trading_status)
        recover = data.get("plannedRecoverTime")
        if (
            data.get("isLocked") is True
            and _is_int(recover)
            and recover > 0
            and call.now_ms >= recover
        ):
            # The planned recovery time has come: the lock lifts (and stays lifted).
            call.key.trading_status.update(isLocked=False, plannedRecoverTime=0)
            data.update(isLocked=False, plannedRecoverTime=0)
        data.setdefault("updateTime", call.key.added_ms)
        ordered: dict[str, object] = {k: data[k] for k in _TRADING_ORDER if k in data}
        ordered.update((k, v) for k, v in data.items() if k not in ordered)
        return {"data": ordered}

    def _ep_account_status(self, call: _Call) -> object:
        assert call.key is not None
        return {"data": call.key.account_status}

    # ------------------------------------------------------------------------- admin API

    def handle_admin(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """Serve the test/demo admin API under ``/_simulator/`` (never rate limited or faulted).

        ``GET/POST /_simulator/keys``, ``GET/PATCH/DELETE /_simulator/keys/{api_key}``,
        ``GET/POST /_simulator/faults``, ``GET /_simulator/stats``. Secrets are never returned.
        """
        method = method.upper()
        if not path.startswith(ADMIN_PREFIX):
            return _admin_error(404, "not found")
        parts = [unquote(part) for part in path[len(ADMIN_PREFIX) :].split("/")]
        try:
            with self._lock:
                if parts == ["keys"]:
                    return self._admin_keys(method, body)
                if len(parts) == 2 and parts[0] == "keys":
                    return self._admin_key(method, parts[1], body)
                if parts == ["faults"]:
                    return self._admin_faults(method, body)
                if parts == ["stats"]:
                    _require_method(method, "GET")
                    return _json(200, self._stats_locked())
        except _Rejected as rejected:
            return rejected.response
        return _admin_error(404, "not found")

    def _admin_keys(self, method: str, body: bytes) -> SimResponse:
        _require_method(method, "GET", "POST")
        if method == "GET":
            return _json(200, [self._key_view(key) for key in self._keys.values()])
        data = _json_object(body)
        unknown = set(data) - {
            "api_key",
            "hmac_secret",
            "public_key_pem",
            "restrictions",
            "ip_whitelist",
            "trading_status",
            "account_status",
        }
        if unknown:
            return _admin_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
        api_key = data.get("api_key")
        trading = data.get("trading_status")
        account = data.get("account_status")
        if not isinstance(trading, dict | None) or not isinstance(account, str | None):
            return _admin_error(400, "malformed key definition")
        hmac_secret = data.get("hmac_secret")
        pem = data.get("public_key_pem")
        restrictions = data.get("restrictions")
        whitelist = data.get("ip_whitelist")
        if (
            not isinstance(api_key, str)
            or not isinstance(hmac_secret, str | None)
            or not isinstance(pem, str | None)
            or not isinstance(restrictions, dict | None)
            or not _is_str_list_or_none(whitelist)
        ):
            return _admin_error(400, "malformed key definition")
        if isinstance(api_key, str) and api_key in self._keys:
            return _admin_error(409, f"api_key {api_key} already exists")
        try:
            trading_fields: dict[str, object] = dict(_TRADING_STATUS_DEFAULT)
            _apply_trading_updates(trading_fields, trading or {})
            account_value = (
                _account_status_value(account) if account is not None else _ACCOUNT_STATUS_NORMAL
            )
            self._add_key_locked(api_key, hmac_secret, pem, restrictions, whitelist)
        except ValueError as exc:
            return _admin_error(409 if api_key in self._keys else 400, str(exc))
        self._keys[api_key].trading_status = trading_fields
        self._keys[api_key].account_status = account_value
        return _json(201, self._key_view(self._keys[api_key]))

    def _admin_key(self, method: str, api_key: str, body: bytes) -> SimResponse:
        _require_method(method, "GET", "PATCH", "DELETE")
        key = self._keys.get(api_key)
        if key is None:
            return _admin_error(404, "unknown api_key")
        if method == "DELETE":
            del self._keys[api_key]
            return _json(200, {"deleted": api_key})
        if method == "PATCH":
            updates = _json_object(body)
            whitelist_given = "ip_whitelist" in updates
            whitelist = updates.pop("ip_whitelist", None)
            if not _is_str_list_or_none(whitelist):
                return _admin_error(400, "ip_whitelist must be a list of strings or null")
            # Trading readiness: {"trading_status": {"isLocked": true, ...}} merges into the
            # apiTradingStatus data, {"account_status": "..."} replaces account/status.
            trading = updates.pop("trading_status", None)
            account_given = "account_status" in updates
            account = updates.pop("account_status", None)
            if not isinstance(trading, dict | None):
                return _admin_error(400, "trading_status must be an object")
            entries = tuple(_DEFAULT_IP_WHITELIST if whitelist is None else whitelist)
            try:
                networks = _parse_networks(entries)
                trading_fields = dict(key.trading_status)
                _apply_trading_updates(trading_fields, trading or {})
                account_value = (
                    _account_status_value(account) if account_given else key.account_status
                )
                _apply_restriction_updates(key.restrictions, updates)
            except ValueError as exc:
                return _admin_error(400, str(exc))
            # Only now, after everything validated, so that a bad PATCH changes nothing.
            if whitelist_given:
                key.ip_whitelist, key.networks = entries, networks
            key.trading_status, key.account_status = trading_fields, account_value
        return _json(200, self._key_view(key))

    def _admin_faults(self, method: str, body: bytes) -> SimResponse:
        _require_method(method, "GET", "POST")
        if method == "POST":
            data = _json_object(body)
            unknown = set(data) - {
                "latency",
                "fail_next",
                "fail_status",
                "truncate_next",
                "clock_skew_ms",
                "fail_path",
            }
            if unknown:
                return _admin_error(400, f"unknown fields: {', '.join(sorted(unknown))}")
            latency = data.get("latency", self._latency)
            fail_next = data.get("fail_next", self._fail_remaining)
            fail_status = data.get("fail_status", self._fail_status)
            truncate_next = data.get("truncate_next", self._truncate_remaining)
            skew = data.get("clock_skew_ms", self._clock_skew_ms)
            fail_path = data.get("fail_path", self._fail_path)
            if not isinstance(fail_path, str | None):
                return _admin_error(400, "invalid fault settings")
            if not (
                _is_number(latency)
                and math.isfinite(latency)
                and latency >= 0
                and _is_int(fail_next)
                and fail_next >= 0
                and _is_int(fail_status)
                and 100 <= fail_status <= 599
                and _is_int(truncate_next)
                and truncate_next >= 0
                and _is_int(skew)
            ):
                return _admin_error(400, "invalid fault settings")
            self._latency = float(latency)
            self._fail_remaining = fail_next
            self._fail_status = fail_status
            self._truncate_remaining = truncate_next
            self._clock_skew_ms = skew
            self._fail_path = fail_path
        return _json(
            200,
            {
                "latency": self._latency,
                "fail_next": self._fail_remaining,
                "fail_status": self._fail_status,
                "fail_path": self._fail_path,
                "truncate_next": self._truncate_remaining,
                "clock_skew_ms": self._clock_skew_ms,
            },
        )

    def _stats_locked(self) -> dict[str, object]:
        return {
            "count_429": self._count_429,
            "count_418": self._count_418,
            "request_counts": dict(self._per_key),
            "requests": [entry._asdict() for entry in self._log],
        }


_ENDPOINTS: Final[dict[str, _Endpoint]] = {
    "/api/v3/ping": _Endpoint("GET", False, 1, BinanceSimulator._ep_ping),
    "/api/v3/time": _Endpoint("GET", False, 1, BinanceSimulator._ep_time),
    "/sapi/v1/system/status": _Endpoint("GET", False, 1, BinanceSimulator._ep_system_status),
    "/sapi/v1/account/apiRestrictions": _Endpoint(
        "GET", True, 1, BinanceSimulator._ep_api_restrictions
    ),
    "/sapi/v1/account/apiTradingStatus": _Endpoint(
        "GET", True, 1, BinanceSimulator._ep_api_trading_status
    ),
    "/sapi/v1/account/status": _Endpoint("GET", True, 1, BinanceSimulator._ep_account_status),
}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _apply_restriction_updates(target: dict[str, object], updates: Mapping[str, object]) -> None:
    for name, value in updates.items():
        _check_json_value(name, value)
    for name, value in updates.items():
        if value is None:
            target.pop(name, None)  # None means "the exchange omits this field"
        else:
            target[name] = value


def _apply_trading_updates(target: dict[str, object], updates: Mapping[str, object]) -> None:
    unknown = set(updates) - _TRADING_STATUS_FIELDS
    if unknown:
        raise ValueError(f"unknown trading_status fields: {', '.join(sorted(unknown))}")
    for name, value in updates.items():
        _check_json_value(name, value)
    for name, value in updates.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def _account_status_value(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("account_status must be a non-empty string")
    return value


def _parse_params(raw_query: str, body: bytes) -> dict[str, str]:
    """Query-string parameters, then body parameters; the query-string value wins a clash."""
    params: dict[str, str] = {}
    body_text = body.decode("utf-8", "replace")
    for source in (raw_query, body_text):
        for name, value in parse_qsl(source, keep_blank_values=True, errors="replace"):
            params.setdefault(name, value)
    return params


def _parse_timestamp(value: str | None) -> float | None:
    if value is None or not _TIMESTAMP_RE.fullmatch(value):
        return None
    number = int(value)
    return number / 1000 if number >= _MICROSECOND_THRESHOLD else float(number)


def _mandatory(name: str) -> SimResponse:
    return _error(
        400,
        -1102,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def _too_much_weight(limit: int, retry_after: str) -> SimResponse:
    return _error(
        429,
        -1003,
        f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API.",
        {"Retry-After": retry_after},
    )


def _banned(until_ms: int, now_ms: int) -> SimResponse:
    retry_after = str(max(1, math.ceil((until_ms - now_ms) / 1000)))
    return _error(
        418,
        -1003,
        f"Way too much request weight used; IP banned until {until_ms}. "
        "Please use WebSocket Streams for live updates to avoid bans.",
        {"Retry-After": retry_after},
    )


def _injected_failure(status: int) -> SimResponse:
    if status >= 500:
        return _error(status, -1001, MSG_DISCONNECTED)
    # Non-5xx failures look like what a WAF or load balancer sends: an HTML page, not JSON.
    page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
    return SimResponse(status=status, headers=dict(_HTML_HEADERS), body=page.encode("ascii"))


def _admin_error(status: int, message: str) -> SimResponse:
    return _json(status, {"error": message})


def _require_method(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _Rejected(_json(405, {"error": "method not allowed"}, {"Allow": ", ".join(allowed)}))


def _json_object(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise _Rejected(_admin_error(400, "body must be a JSON object")) from None
    if not isinstance(data, dict):
        raise _Rejected(_admin_error(400, "body must be a JSON object"))
    return data


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list_or_none(value: object) -> TypeGuard[list[str] | None]:
    return value is None or (
        isinstance(value, list) and all(isinstance(entry, str) for entry in value)
    )


def _register_demo_key(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, hmac_secret=key.secret, **key.state)


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    _register_demo_key,
    lambda now: [
        DemoKey("acme-binance-main", "acme", "binance", "healthy: read + spot trading, IP-bound"),
        DemoKey(
            "bravo-binance",
            "bravo",
            "binance",
            "withdrawals switched on",
            {"restrictions": {"enableWithdrawals": True}},
        ),
        DemoKey(
            "charlie-binance",
            "charlie",
            "binance",
            "no IP restriction; trading authority expires in 2 days",
            {
                "restrictions": {
                    "ipRestrict": False,
                    "tradingAuthorityExpirationTime": int((now + 2 * DAY) * 1000),
                },
                "ip_whitelist": ["0.0.0.0/0", "::/0"],
            },
        ),
        DemoKey("delta-binance", "delta", "binance", "deleted at the exchange", deleted=True),
        DemoKey(
            "echo-binance",
            "echo",
            "binance",
            "futures trading switched on",
            {"restrictions": {"enableFutures": True}},
        ),
        DemoKey(
            "victor-binance",
            "victor",
            "binance",
            "API trading locked by Binance (UFR tripped on BTCUSDT); recovers in 2 hours",
            {
                "trading_status": {
                    "isLocked": True,
                    "plannedRecoverTime": int((now + 2 * 3600) * 1000),
                    "indicators": {"BTCUSDT": [{"i": "UFR", "c": 320, "v": 0.995, "t": 0.99}]},
                }
            },
        ),
        DemoKey(
            "whiskey-binance",
            "whiskey",
            "binance",
            "IOC/FOK expiration ratio at 85 % of its trigger on ETHUSDT",
            {
                "trading_status": {
                    "indicators": {
                        "BTCUSDT": [{"i": "IFER", "c": 180, "v": 0.3, "t": 0.99}],
                        "ETHUSDT": [
                            {"i": "UFR", "c": 200, "v": 0.1, "t": 0.99},
                            {"i": "IFER", "c": 160, "v": 0.8415, "t": 0.99},
                        ],
                    }
                }
            },
        ),
    ],
)
