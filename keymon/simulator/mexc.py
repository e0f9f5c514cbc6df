"""A fake MEXC spot API v3, written from exchange-apis.md §2.6 (not from keymon's adapter).

Serves ``GET /api/v3/time`` (``serverTime``, ms) and the signed ``GET /api/v3/account``.
Signed requests carry ``X-MEXC-APIKEY`` and, in the query string (or the body), ``timestamp``
(ms), an optional ``recvWindow`` (default 5000, at most 60000) and ``signature``: lowercase hex
HMAC-SHA256 of totalParams, the query string directly followed by the body, exactly as sent.

Refusals are ``{"code": ..., "msg": ...}`` with the documented codes: ``700001`` (key format
invalid or unknown), ``700002`` (signature), ``700003`` (timestamp outside recvWindow),
``700006`` (IP not on the whitelist, naming it), and HTTP 429 with code 429 past the rate
limit. MEXC documents no code for a frozen or expired key: such keys answer as unknown ones.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import ClassVar, Final

from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_liveness
from keymon.simulator.liveness import (
    LivenessSimulator,
    Refusal,
    Request,
    json_response,
)
from keymon.simulator.server import SimResponse

__all__ = ["MexcSimulator", "sign"]

TIME_PATH: Final = "/api/v3/time"
ACCOUNT_PATH: Final = "/api/v3/account"
DEFAULT_RECV_WINDOW_MS: Final = 5000
MAX_RECV_WINDOW_MS: Final = 60000


def sign(secret: str, total_params: str) -> str:
    """Lowercase hex HMAC-SHA256 of totalParams."""
    return hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()


class MexcSimulator(LivenessSimulator):
    """A thread-safe, in-memory MEXC spot v3 fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("GET", ACCOUNT_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: A generous per-key limit; tests lower it with set_rate_limit.
    rate_limit: ClassVar[tuple[int, float]] = (50, 10.0)

    def time_body(self, now_ms: int) -> SimResponse:
        return json_response(200, {"serverTime": now_ms})

    def authenticate(self, request: Request, now_ms: int) -> str:
        api_key = request.header("X-MEXC-APIKEY")
        if not api_key:
            raise self.refuse(Refusal.MISSING_AUTH, request)
        total = request.raw_query + request.body.decode("utf-8", "replace")
        params = _params(request.raw_query) | _params(request.body.decode("utf-8", "replace"))
        signature = params.get("signature")
        timestamp = params.get("timestamp")
        if signature is None or timestamp is None or not timestamp.isdigit():
            raise self.refuse(Refusal.MISSING_AUTH, request)
        window = params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS))
        if not window.isdigit() or not 0 < int(window) <= MAX_RECV_WINDOW_MS:
            raise self.refuse(Refusal.TIMESTAMP, request)
        # Binance's rule, which MEXC copies: not more than 1 s ahead, not older than recvWindow.
        if int(timestamp) > now_ms + 1000 or now_ms - int(timestamp) > int(window):
            raise self.refuse(Refusal.TIMESTAMP, request)
        key = self.key_for(api_key, request)
        # The signature is over totalParams without the signature parameter itself.
        signed = total.replace(f"&signature={signature}", "").replace(f"signature={signature}&", "")
        if not hmac.compare_digest(sign(key.secret, signed), signature):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        if why is Refusal.RATE_LIMITED:
            return json_response(
                429, {"code": 429, "msg": "Too Many Requests"}, {"Retry-After": "10"}
            )
        if why is Refusal.IP_REFUSED:
            ip = request.client_ip if request else "unknown"
            return json_response(
                400, {"code": 700006, "msg": f"IP [{ip}] not in the ip white list"}
            )
        if why is Refusal.TIMESTAMP:
            return json_response(
                400,
                {"code": 700003, "msg": "Timestamp for this request is outside of the recvWindow."},
            )
        if why is Refusal.BAD_SIGNATURE:
            return json_response(
                400, {"code": 700002, "msg": "Signature for this request is not valid."}
            )
        # Unknown, frozen, expired or disabled keys and missing credentials: MEXC documents
        # one code for an API key it cannot use.
        return json_response(400, {"code": 700001, "msg": "Api key info invalid"})

    def success(self, request: Request, api_key: str) -> SimResponse:
        return json_response(
            200,
            {  # the shape of MEXC's "Account Information" example answer
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "updateTime": None,
                "accountType": "SPOT",
                "balances": [{"asset": "USDT", "free": "1000.00", "locked": "0"}],
                "permissions": ["SPOT"],
            },
        )


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split("&"):
        if "=" in part:
            name, value = part.split("=", 1)
            out[name] = value
    return out


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_liveness,
    lambda now: [DemoKey("oscar-mexc", "oscar", "mexc", "liveness only: accepted from this IP")],
)
