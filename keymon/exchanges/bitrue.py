"""Bitrue (spot API v1): liveness only (exchange-apis.md §2.9).

Bitrue has no endpoint that shows the calling key its own permissions, IP list, creation or
expiry (no ``apiRestrictions`` equivalent). keymon makes one signed read,
``GET /api/v1/account`` (weight 5; Bitrue-exchange/Spot-official-api-docs "Account information
(USER_DATA)"), which proves that the key exists, that its secret is right and that this egress
IP is allowed (or that the key has no IP restriction). The account-level ``canTrade``,
``canWithdraw`` and ``canDeposit`` flags describe the account, not the key, so keymon does not
read them as the key's permissions; the balances are never kept.

Signing is Binance's older v1 scheme, which Bitrue copies: ``recvWindow`` and ``timestamp``
(ms, the local clock corrected by ``GET /api/v1/time``, ``{"serverTime": ...}``) are added to
the query string, ``signature`` is lowercase hex HMAC-SHA256 of the query string followed by
the body, and the key goes in ``X-MBX-APIKEY``. Bitrue accepts a stamp less than 1000 ms ahead
of its clock and at most ``recvWindow`` (default 5000) behind it.

Uncertainty: Bitrue documents one code, ``-1022`` (HTTP 401), for an invalid signature *or*
timestamp *or* authorization. keymon cannot tell a wrong secret from a skewed clock from the
answer alone, so on ``-1022`` it re-syncs with ``/api/v1/time`` and retries once; a second
``-1022`` reads as the key's refusal when that sync's round trip bounds keymon's stamp within
the 1000 ms Bitrue allows ahead, and as clock skew when it does not (keymon cannot vouch for
its own stamp). Bitrue documents no distinct answer for a deleted, frozen or expired key; the
desk's simulator (written from the same docs) answers ``-1022`` for them. ``966000`` (IP
limit) and ``966001`` (no privileges) come from the withdraw section of the docs; whether the
account endpoint uses them for a refused IP is not stated, and Bitrue's message does not name
the IP. A 429 is Bitrue's documented rate-limit answer, 418 its ban.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote

import httpx

from keymon.config_base import (
    LIVENESS_MAX_WEIGHT_PER_MINUTE,
    Duration,
    KeyBase,
    RecvWindowSettings,
    Secret,
    WeightPerMinute,
)
from keymon.exchanges.base import with_query
from keymon.exchanges.liveness import Kind, LivenessAdapter

# ----------------------------------------------------------------------------- configuration

BITRUE_BASE_URL = "https://openapi.bitrue.com"
BITRUE_RECV_WINDOW = timedelta(seconds=5)
BITRUE_MAX_RECV_WINDOW = timedelta(seconds=60)


class BitrueSettings(RecvWindowSettings):
    """``exchanges.bitrue:`` (liveness only)."""

    base_url: str = BITRUE_BASE_URL
    recv_window: Duration = BITRUE_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class BitrueKey(KeyBase):
    """A Bitrue key (liveness only): API key and HMAC secret."""

    exchange: Literal["bitrue"]


NAME: Final = "bitrue"
TIME_PATH: Final = "/api/v1/time"
ACCOUNT_PATH: Final = "/api/v1/account"
API_KEY_HEADER: Final = "X-MBX-APIKEY"


def sign(secret: str, total_params: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``total_params`` (query string, then body) under ``secret``."""
    return hmac.new(secret.encode(), total_params, hashlib.sha256).hexdigest()


class BitrueAuth(httpx.Auth):
    """Adds ``X-MBX-APIKEY``, ``recvWindow``, ``timestamp`` and ``signature`` when sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, now_ms: Callable[[], int], recv_window_ms: int
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms
        self._recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return "BitrueAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        existing = request.url.query.decode("ascii")
        query = f"recvWindow={self._recv_window_ms}&timestamp={self._now_ms()}"
        if existing:
            query = f"{existing}&{query}"
        signature = sign(self._secret.get(), query.encode("ascii") + request.content)
        query += "&signature=" + quote(signature, safe="")
        request.url = with_query(request.url, query)
        request.headers[API_KEY_HEADER] = self._api_key.get()
        yield request


class BitrueAdapter(LivenessAdapter, settings_model=BitrueSettings, key_model=BitrueKey):
    """Audits Bitrue keys for liveness: ``GET /api/v1/account`` is accepted, or why not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("GET", ACCOUNT_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: Request weights (Bitrue spot v1): account 5, time 1.
    weights: ClassVar[Mapping[str, int]] = {ACCOUNT_PATH: 5, TIME_PATH: 1}
    #: Bitrue refuses a stamp 1000 ms or more ahead of its clock ("timing security").
    stamp_tolerance_ms: ClassVar[float] = 1000.0
    #: Bitrue's error tables (Bitrue-exchange/Spot-official-api-docs ``README.md``: "Error
    #: Codes" with their HTTP statuses, the withdraw section's table, the user-data stream's
    #: table). ``-1102`` (a mandatory parameter missing or malformed) is keymon's own
    #: malformed request; the order and withdraw codes are answers keymon does not know (both
    #: bad_response).
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        -1022: (
            Kind.KEY_OR_CLOCK,
            "Bitrue refused the signature, the timestamp or the key's authorization (one code "
            "for all three): a wrong secret, a deleted or unusable key, or clock skew",
        ),
        966000: (Kind.IP_REFUSED, "this egress IP is not allowed for the key (IP limit)"),
        966001: (
            Kind.REJECTED,
            "the key has no privilege for the account read the client guide's Read-Only "
            "permission grants",
        ),
        32: (Kind.REJECTED, "Bitrue reports a user authentication error"),
        -1016: (Kind.UNAVAILABLE, "service unavailable"),
        -1102: (Kind.MALFORMED, "a mandatory parameter is missing or illegal"),
        503: (Kind.UNAVAILABLE, "service unavailable"),
    }
    #: Bitrue's table pairs HTTP 401 with -1022 only: an HTTP 401 whose code keymon does not
    #: know is read like -1022.
    statuses: ClassVar[Mapping[int, tuple[Kind, str]]] = {
        401: (
            Kind.KEY_OR_CLOCK,
            "HTTP 401: Bitrue refused the signature, the timestamp or the key's authorization",
        ),
    }

    _settings: BitrueSettings

    def auth(self, key: BitrueKey) -> httpx.Auth:
        recv_window_ms = int(self._settings.recv_window.total_seconds() * 1000)
        return BitrueAuth(key.api_key, key.api_secret, self.now_ms, recv_window_ms)

    def parse_server_time(self, body: Any) -> float | None:
        server = body.get("serverTime") if isinstance(body, dict) else None
        if isinstance(server, bool) or not isinstance(server, int | float):
            return None
        return float(server)

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """Bitrue errors are ``{"code": -1022, "msg": "..."}``; the account answer has no
        ``code``, and a ``code`` of 0 or 200 (Bitrue's wallet endpoints) means success."""
        if not isinstance(body, dict):
            return None
        code = body.get("code")
        if isinstance(code, bool) or not isinstance(code, int) or code in (0, 200):
            return None
        msg = body.get("msg")
        return code, msg if isinstance(msg, str) else ""
