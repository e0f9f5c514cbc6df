"""A fake Biconomy open API v1, written from BiconomyOfficial/apidocs ``README.md`` and its
``v1/fullsample_v1.py`` (not from keymon's adapter).

Serves the signed ``POST /api/v1/private/user`` ("Get User Assets"). Every request must carry
the header ``X-SITE-ID: 127`` (otherwise code ``10005`` "Record Not Found", the docs' "X-SITE-ID
setting error"). The parameters come as a form (the docs) or in the query string (the official
Python sample sends them there); ``sign`` is the uppercase hex MD5 of every other parameter,
sorted by name and joined as ``k=v&...``, followed by ``&secret_key=<secret>``. No timestamp is
signed, so there is no clock window.

Answers are ``{"code": ..., "message": ..., "result": ...}`` at HTTP 200. The docs give **no
code for an unknown key, a bad signature, a refused IP or an unusable key**; this fake answers
all of them with the documented code ``1`` "Invalid parameter" (an assumption, stated in the
adapter's docstring too) and a rate limit with a bare HTTP 429.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import ClassVar, Final
from urllib.parse import parse_qsl

from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_liveness
from keymon.simulator.liveness import (
    Answer,
    LivenessSimulator,
    Refusal,
    Request,
    json_response,
)
from keymon.simulator.server import SimResponse

__all__ = ["BiconomySimulator", "sign"]

USER_PATH: Final = "/api/v1/private/user"
SITE_ID: Final = "127"


def sign(params: dict[str, str], secret: str) -> str:
    """Uppercase hex MD5 of the sorted ``k=v`` pairs followed by ``&secret_key=<secret>``."""
    text = "&".join(f"{k}={params[k]}" for k in sorted(params)) + "&secret_key=" + secret
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


class BiconomySimulator(LivenessSimulator):
    """A thread-safe, in-memory Biconomy fake (the clock only drives the rate window)."""

    probe: ClassVar[tuple[str, str]] = ("POST", USER_PATH)
    time_path: ClassVar[str | None] = None
    #: The docs' "Frequency limit: 20 times / s" for Get User Assets.
    rate_limit: ClassVar[tuple[int, float]] = (20, 1.0)

    def authenticate(self, request: Request, now_ms: int) -> str:
        if request.header("X-SITE-ID") != SITE_ID:
            raise Answer(json_response(200, {"code": 10005, "message": "Record Not Found"}))
        params = dict(parse_qsl(request.raw_query, keep_blank_values=True))
        params |= dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        api_key = params.get("api_key")
        signature = params.pop("sign", None)
        if not api_key or not signature:
            raise self.refuse(Refusal.MISSING_AUTH, request)
        key = self.key_for(api_key, request)
        if not hmac.compare_digest(sign(params, key.secret), signature):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        if why is Refusal.RATE_LIMITED:
            return SimResponse(429, {"Content-Type": "text/plain"}, b"Too Many Requests")
        return json_response(200, {"code": 1, "message": "Invalid parameter", "result": None})

    def success(self, request: Request, api_key: str) -> SimResponse:
        return json_response(
            200,
            {
                "code": 0,
                "message": "successful",
                "result": {
                    "USDT": {
                        "available": "1000.00",
                        "freeze": "0",
                        "other_freeze": "0",
                        "recharge_status": 1,
                        "trade_status": 1,
                        "withdraw_fee": "0.1",
                        "withdraw_max": "1000",
                        "withdraw_min": "0.001",
                        "withdraw_status": 1,
                    }
                },
            },
        )

    def not_found(self, request: Request) -> SimResponse:
        return json_response(200, {"code": 4, "message": "Method Not Found", "result": None})


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_liveness,
    lambda now: [DemoKey("uniform-biconomy", "uniform", "biconomy", "liveness only: accepted")],
)
