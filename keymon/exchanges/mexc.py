"""MEXC (spot API v3): liveness only (exchange-apis.md §2.6).

MEXC has no endpoint that shows the calling key its own permissions, IP list, creation or
expiry. keymon makes one signed read, ``GET /api/v3/account`` (weight 10), which proves that the
key exists, that its secret is right and that this egress IP is on its whitelist (or that it
has none). The account-level ``canTrade``/``canWithdraw`` flags that call returns describe the
account, not the key, so keymon does not read them as the key's permissions; the balances are
never kept.

Signing (MEXC "Signed"): the query string directly followed by the body is signed with
HMAC-SHA256, lowercase hex, as at Binance; ``recvWindow`` and ``timestamp`` (ms, the local clock
corrected by ``GET /api/v3/time``) are added, and the key goes in ``X-MEXC-APIKEY``. A
``700003`` (timestamp outside recvWindow) or ``10073`` (invalid Request-Time) forces one re-sync
and one retry.

Errors are read from MEXC's own table (mexcdevelop/apidocs, branch ``spot_v3_en``, "Error
Code" and "HTTP Return Codes"; :attr:`MexcAdapter.codes`): the ``7000xx`` codes, and the
``10072`` (invalid access key), ``602`` (signature), ``401`` (no authority) and ``10073``
(Request-Time) codes of its older gateway. An HTTP 401 whose code the table does not list is a
refusal of the key too; an HTTP 403 is MEXC's firewall limit (rate_limited). MEXC's FAQ: a key
without a linked IP expires after 90 days, with no date keymon could read beforehand.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote

import httpx

from keymon.config_base import Duration, KeyBase, RecvWindowSettings, Secret, WeightPerMinute
from keymon.exchanges.base import with_query
from keymon.exchanges.liveness import Kind, LivenessAdapter

# ----------------------------------------------------------------------------- configuration

MEXC_BASE_URL = "https://api.mexc.com"
#: ``GET /api/v3/account`` has weight 10: 600 weight/min is 60 audits a minute.
MEXC_MAX_WEIGHT_PER_MINUTE = 600
#: MEXC's recvWindow: 5000 ms by default, 60000 at most (exchange-apis.md §2.6).
MEXC_RECV_WINDOW = timedelta(seconds=5)
MEXC_MAX_RECV_WINDOW = timedelta(seconds=60)


class MexcSettings(RecvWindowSettings):
    """``exchanges.mexc:`` (liveness only)."""

    base_url: str = MEXC_BASE_URL
    recv_window: Duration = MEXC_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = MEXC_MAX_WEIGHT_PER_MINUTE


class MexcKey(KeyBase):
    """A MEXC key (liveness only): API key and HMAC secret."""

    exchange: Literal["mexc"]


NAME: Final = "mexc"
TIME_PATH: Final = "/api/v3/time"
ACCOUNT_PATH: Final = "/api/v3/account"


def sign(secret: str, total_params: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``total_params`` (query string, then body) under ``secret``."""
    return hmac.new(secret.encode(), total_params, hashlib.sha256).hexdigest()


class MexcAuth(httpx.Auth):
    """Adds ``X-MEXC-APIKEY``, ``recvWindow``, ``timestamp`` and ``signature`` when sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, now_ms: Callable[[], int], recv_window_ms: int
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms
        self._recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return "MexcAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        existing = request.url.query.decode("ascii")
        query = f"recvWindow={self._recv_window_ms}&timestamp={self._now_ms()}"
        if existing:
            query = f"{existing}&{query}"
        signature = sign(self._secret.get(), query.encode("ascii") + request.content)
        query += "&signature=" + quote(signature, safe="")
        request.url = with_query(request.url, query)
        request.headers["X-MEXC-APIKEY"] = self._api_key.get()
        yield request


class MexcAdapter(LivenessAdapter, settings_model=MexcSettings, key_model=MexcKey):
    """Audits MEXC keys for liveness: ``GET /api/v3/account`` is accepted, or why not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("GET", ACCOUNT_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: Request weights (MEXC spot v3): account 10, time 1.
    weights: ClassVar[Mapping[str, int]] = {ACCOUNT_PATH: 10, TIME_PATH: 1}
    #: MEXC's own error table (mexcdevelop/apidocs, spot_v3_en ``source/index.html.md``,
    #: "Error Code"): every entry that concerns the key, its signature, its timestamp, its
    #: permissions, its IP or a rate limit. ``700005`` ("recvWindow must less than 60000") is
    #: keymon's own malformed request (bad_response); codes the table gives no key-related
    #: meaning are answers keymon does not know (bad_response).
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        400: (Kind.REJECTED, "MEXC saw no API key in the request ('api key required')"),
        401: (Kind.REJECTED, "MEXC refuses the key ('No authority')"),
        403: (
            Kind.RATE_LIMITED,
            "'Access Denied': MEXC uses 403 when its web application firewall limit is violated",
        ),
        429: (Kind.RATE_LIMITED, "too many requests"),
        500: (Kind.UNAVAILABLE, "internal error"),
        503: (Kind.UNAVAILABLE, "service not available"),
        504: (Kind.UNAVAILABLE, "gateway time-out"),
        602: (Kind.REJECTED, "the signature verification failed: wrong secret"),
        10001: (Kind.REJECTED, "the user the key belongs to does not exist"),
        10072: (
            Kind.REJECTED,
            "the access key is invalid (deleted, or expired: MEXC expires a key "
            "without a linked IP after 90 days)",
        ),
        10073: (Kind.CLOCK, "the Request-Time is invalid"),
        60005: (Kind.REJECTED, "MEXC says the account is abnormal"),
        700001: (Kind.REJECTED, "the API key is malformed or unknown to MEXC (deleted?)"),
        700002: (Kind.REJECTED, "the signature is not valid: wrong secret"),
        700003: (Kind.CLOCK, "the timestamp is outside recvWindow"),
        700006: (Kind.IP_REFUSED, "this egress IP is not in the key's IP whitelist"),
        700007: (
            Kind.REJECTED,
            "the key may not read the account: it lacks the View Account Details permission "
            "(SPOT_ACCOUNT_READ) the client guide asks for",
        ),
        700005: (Kind.MALFORMED, "recvWindow must be less than 60000"),
    }
    #: MEXC "HTTP Return Codes": 403 is its web application firewall limit; 401 (not in that
    #: list, but "No authority" in its code table) refuses the key.
    statuses: ClassVar[Mapping[int, tuple[Kind, str]]] = {
        401: (Kind.REJECTED, "HTTP 401: MEXC refuses the key ('No authority')"),
        403: (
            Kind.RATE_LIMITED,
            "HTTP 403: MEXC's web application firewall limit was violated",
        ),
    }

    _settings: MexcSettings

    def auth(self, key: MexcKey) -> httpx.Auth:
        recv_window_ms = int(self._settings.recv_window.total_seconds() * 1000)
        return MexcAuth(key.api_key, key.api_secret, self.now_ms, recv_window_ms)

    def parse_server_time(self, body: Any) -> float | None:
        server = body.get("serverTime") if isinstance(body, dict) else None
        if isinstance(server, bool) or not isinstance(server, int | float):
            return None
        return float(server)

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """MEXC errors are ``{"code": 700002, "msg": "..."}`` with a 4xx status."""
        if response.status_code == httpx.codes.OK or not isinstance(body, dict):
            return None
        code = body.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            return None
        msg = body.get("msg")
        return code, msg if isinstance(msg, str) else ""
