"""A fake Bitrue spot API v1, written from exchange-apis.md §2.9 and Bitrue's official docs
(Bitrue-exchange/Spot-official-api-docs ``README.md``), not from keymon's adapter.

Serves ``GET /api/v1/time`` (``{"serverTime": ms}``) and the signed ``GET /api/v1/account``
(weight 5). A signed request carries ``X-MBX-APIKEY`` and, in the query string or the body,
``timestamp`` (ms), an optional ``recvWindow`` (default 5000, at most 60000 as at Binance) and
``signature``: hex HMAC-SHA256 (case-insensitive) of totalParams, the query string directly
followed by the body, exactly as sent without the signature itself. The timing rule is the
docs': accepted if ``timestamp < serverTime + 1000`` and ``serverTime - timestamp <=
recvWindow``.

Refusals are ``{"code": ..., "msg": ...}``. Bitrue documents ``-1022`` (HTTP 401) for an
invalid signature, timestamp or authorization, so a wrong secret, a stale stamp, a missing or
unknown key and a frozen, expired or disabled key all answer ``-1022`` (Bitrue documents no
separate code for them); ``966000`` "Ip limit" refuses an IP off the key's list (the message
names no IP); past the rate limit the answer is HTTP 429, as the docs' LIMITS section says.
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

__all__ = ["BitrueSimulator", "sign"]

TIME_PATH: Final = "/api/v1/time"
ACCOUNT_PATH: Final = "/api/v1/account"
DEFAULT_RECV_WINDOW_MS: Final = 5000
MAX_RECV_WINDOW_MS: Final = 60000


def sign(secret: str, total_params: str) -> str:
    """Lowercase hex HMAC-SHA256 of totalParams."""
    return hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()


class BitrueSimulator(LivenessSimulator):
    """A thread-safe, in-memory Bitrue spot v1 fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("GET", ACCOUNT_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: A generous per-key limit; tests lower it with set_rate_limit.
    rate_limit: ClassVar[tuple[int, float]] = (50, 10.0)

    def time_body(self, now_ms: int) -> SimResponse:
        return json_response(200, {"serverTime": now_ms})

    def authenticate(self, request: Request, now_ms: int) -> str:
        api_key = request.header("X-MBX-APIKEY")
        body = request.body.decode("utf-8", "replace")
        params = _params(body) | _params(request.raw_query)  # the query string wins
        signature = params.get("signature")
        timestamp = params.get("timestamp")
        if not api_key or signature is None or timestamp is None or not timestamp.isdigit():
            raise self.refuse(Refusal.MISSING_AUTH, request)
        window = params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS))
        if not window.isdigit() or not 0 < int(window) <= MAX_RECV_WINDOW_MS:
            raise self.refuse(Refusal.TIMESTAMP, request)
        if not (int(timestamp) < now_ms + 1000 and now_ms - int(timestamp) <= int(window)):
            raise self.refuse(Refusal.TIMESTAMP, request)
        key = self.key_for(api_key, request)
        signed = _without_signature(request.raw_query) + _without_signature(body)
        if not hmac.compare_digest(sign(key.secret, signed), signature.lower()):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        if why is Refusal.RATE_LIMITED:
            return json_response(429, {"code": -1003, "msg": "Too many requests."})
        if why is Refusal.IP_REFUSED:
            return json_response(400, {"code": 966000, "msg": "Ip limit"})
        # Signature, timestamp, missing or unknown key, frozen, expired, disabled: Bitrue's
        # one documented code for a request it will not authorize.
        return json_response(
            401, {"code": -1022, "msg": "Invalid signature, timestamp or authorization."}
        )

    def success(self, request: Request, api_key: str) -> SimResponse:
        return json_response(
            200,
            {
                "makerCommission": 15,
                "takerCommission": 15,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "updateTime": 123456789,
                "balances": [{"asset": "USDT", "free": "1000.00", "locked": "0.00000000"}],
            },
        )


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split("&"):
        if "=" in part:
            name, value = part.split("=", 1)
            out[name] = value
    return out


def _without_signature(text: str) -> str:
    """``text`` (a query string or form body) with its ``signature=...`` pair removed."""
    return "&".join(p for p in text.split("&") if p and not p.startswith("signature="))


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_liveness,
    lambda now: [
        DemoKey("quebec-bitrue", "quebec", "bitrue", "liveness only: accepted from this IP")
    ],
)
