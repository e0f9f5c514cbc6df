"""BitMart (spot API): liveness only (exchange-apis.md §2.8).

BitMart has no endpoint that shows the calling key its own permissions, IP list, creation or
expiry. keymon makes one signed read, ``POST /spot/v4/query/open-orders`` with the JSON body
``{"limit":1,"recvWindow":60000}``, which proves that the key exists and is neither frozen,
expired nor disabled, that its secret *and memo* are right and that this egress IP is on its
whitelist (or that it has none). The one open order it may answer is never kept.

Why this call: BitMart's permission table (developer-pro.bitmart.com, "API Key Permission
Settings", read-only permissions) lists every read-only GET it has (``/account/v1/wallet``,
``/spot/v1/wallet``, ``/spot/v1/user_fee``, ...) as **KEYED**: BitMart checks the key but not
the signature there, so a wrong secret or memo would pass. The cheapest **SIGNED** read-only
call in the same table is "Current open orders (v4)". ``recvWindow`` (BitMart's range
(0, 60000], default 5000) is set to the 60 s that ``30007`` documents, so that one rule decides
whether a timestamp is in time.

Signing (BitMart "SIGNED"): ``X-BM-SIGN`` is the lowercase hex HMAC-SHA256, under the secret,
of ``timestamp + "#" + memo + "#" + body`` where body is the JSON exactly as sent;
``X-BM-KEY`` carries the key and ``X-BM-TIMESTAMP`` the ms timestamp (the local clock
corrected by ``GET /system/time``, whose answer holds ``data.server_time``; the path is the
official SDKs', the field is the one BitMart's Node SDK reads). A ``30007`` forces one re-sync
and one retry.

Answers are ``{"code": 1000, "message": "OK", "trace": ..., "data": ...}`` for success; an
error has its own ``code`` (BitMart's error page, "Authentication Error Code"): ``30002`` key
not found, ``30003`` frozen, ``30005`` wrong signature (secret or memo), ``30007`` timestamp
outside a minute, ``30010`` IP forbidden (HTTP 403; the message does not name the IP),
``30011`` key past its expiry time (HTTP 403), ``30012`` key forbidden (HTTP 403), ``30013``
too many requests (HTTP 429), ``30014`` service unavailable (503). ``30001``, ``30004``,
``30006`` and ``30008`` (a missing or malformed header) cannot follow from a key's state, so
keymon reads them as its own malformed request (bad response), never as a rejected key. An
error status whose code keymon does not know is read by BitMart's table of HTTP statuses: 401
(authentication failed) and 403 (no permission, or an IP restriction) refuse the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Generator, Mapping
from typing import Any, ClassVar, Final, Literal

import httpx

from keymon.config_base import KeyBase, LivenessSettings, Secret, SecretRef
from keymon.exchanges.liveness import Kind, LivenessAdapter

# ----------------------------------------------------------------------------- configuration

BITMART_BASE_URL = "https://api-cloud.bitmart.com"


class BitmartSettings(LivenessSettings):
    """``exchanges.bitmart:`` (liveness only). A BitMart timestamp must lie within a minute
    of the server's time."""

    base_url: str = BITMART_BASE_URL


class BitmartKey(KeyBase):
    """A BitMart key (liveness only). The memo chosen when the key was created is part of
    every signature, so it is required, and kept secret like the API secret."""

    exchange: Literal["bitmart"]
    memo: SecretRef


NAME: Final = "bitmart"
TIME_PATH: Final = "/system/time"
OPEN_ORDERS_PATH: Final = "/spot/v4/query/open-orders"
#: BitMart's success code.
OK_CODE: Final = 1000
#: The probe's body: one order at most, and the 60 s window that 30007 documents.
PROBE_BODY: Final = json.dumps({"limit": 1, "recvWindow": 60000}, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, memo: str, body: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``timestamp#memo#body`` under ``secret``."""
    message = f"{timestamp}#{memo}#{body}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class BitmartAuth(httpx.Auth):
    """Adds ``X-BM-KEY``, ``X-BM-TIMESTAMP`` and ``X-BM-SIGN`` when the request is sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, memo: Secret, now_ms: Callable[[], int]
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._memo = memo
        self._now_ms = now_ms

    def __repr__(self) -> str:
        return "BitmartAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(self._now_ms())
        # GET signs its query string, POST its body (BitMart "Signature"); the probe is a POST.
        payload = request.content.decode() if request.content else request.url.query.decode()
        request.headers["X-BM-KEY"] = self._api_key.get()
        request.headers["X-BM-TIMESTAMP"] = timestamp
        request.headers["X-BM-SIGN"] = sign(
            self._secret.get(), timestamp, self._memo.get(), payload
        )
        yield request


class BitmartAdapter(LivenessAdapter, settings_model=BitmartSettings, key_model=BitmartKey):
    """Audits BitMart keys for liveness: the signed open-orders query is accepted, or why not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("POST", OPEN_ORDERS_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: BitMart limits private calls per key per endpoint, not by weight: one unit each.
    weights: ClassVar[Mapping[str, int]] = {OPEN_ORDERS_PATH: 1, TIME_PATH: 1}
    #: BitMart error page, "Authentication Error Code" (exchange-apis.md §2.8).
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        30002: (Kind.REJECTED, "BitMart does not know this API key (deleted?)"),
        30003: (Kind.REJECTED, "the key is frozen at BitMart"),
        30005: (Kind.REJECTED, "the signature is not valid: wrong secret or wrong memo"),
        30007: (Kind.CLOCK, "the timestamp is not within a minute of BitMart's clock"),
        30010: (Kind.IP_REFUSED, "this egress IP is not on the key's IP whitelist"),
        30011: (
            Kind.REJECTED,
            "the key has expired (it is past its expiry time; BitMart shows no expiry date "
            "to read beforehand)",
        ),
        30012: (Kind.REJECTED, "the key is forbidden (disabled) at BitMart"),
        30013: (Kind.RATE_LIMITED, "too many requests"),
        30014: (Kind.UNAVAILABLE, "service unavailable"),
        # A header keymon always sends was empty, missing or malformed: keymon's request.
        30001: (Kind.MALFORMED, "Header X-BM-KEY is empty"),
        30004: (Kind.MALFORMED, "Header X-BM-SIGN is empty"),
        30006: (Kind.MALFORMED, "Header X-BM-TIMESTAMP is empty"),
        30008: (Kind.MALFORMED, "Header X-BM-TIMESTAMP invalid format"),
    }

    #: BitMart's "List of global HTTP return codes" (developer-pro.bitmart.com/en/error): an
    #: error status whose code keymon does not know is read as BitMart says.
    statuses: ClassVar[Mapping[int, tuple[Kind, str]]] = {
        401: (
            Kind.REJECTED,
            "HTTP 401: BitMart's authentication failed (a problem with the X-BM-KEY, X-BM-SIGN "
            "or X-BM-TIMESTAMP header)",
        ),
        403: (
            Kind.REJECTED,
            "HTTP 403: BitMart forbids the key this resource (it may lack the permission, or an "
            "IP restriction refuses this egress IP)",
        ),
    }

    _settings: BitmartSettings

    def auth(self, key: BitmartKey) -> httpx.Auth:
        return BitmartAuth(key.api_key, key.api_secret, key.memo, self.now_ms)

    def probe_body(self, key: BitmartKey) -> bytes:
        return PROBE_BODY

    def parse_server_time(self, body: Any) -> float | None:
        data = body.get("data") if isinstance(body, dict) else None
        server = data.get("server_time") if isinstance(data, dict) else None
        if isinstance(server, str) and server.isdigit():
            return float(server)
        if isinstance(server, bool) or not isinstance(server, int | float):
            return None
        return float(server)

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """BitMart errors are ``{"code": 30005, "message": "...", ...}``; 1000 is success."""
        if not isinstance(body, dict):
            return None
        code = body.get("code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if isinstance(code, bool) or not isinstance(code, int) or code == OK_CODE:
            return None
        message = body.get("message")
        return code, message if isinstance(message, str) else ""
