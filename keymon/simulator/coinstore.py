"""A fake Coinstore spot open API, written from exchange-apis.md §2.13 and the official Python
example that third-party connectors quote (not from keymon's adapter).

Serves the signed ``POST /api/spot/accountList`` (JSON body). A signed request carries
``X-CS-APIKEY``, ``X-CS-EXPIRES`` (ms) and ``X-CS-SIGN``: lowercase hex HMAC-SHA256 of the
payload (the query string followed by the body, exactly as sent) under the text of
``hex(HMAC-SHA256(secret, floor(expires / 30000)))``.

Answers are ``{"code": ..., "message": ...}``: ``0`` with ``data`` on success; ``1401``
"Unauthorized" (HTTP 401) for a missing, unknown, refused-IP or unusable key (third-party
reports show one code for all of them: Coinstore documents no code for a frozen or expired
key); ``401`` "signature-failed" (HTTP 401) for a bad signature; HTTP 429 "Too many visits"
past the rate limit. Coinstore documents neither a window for ``X-CS-EXPIRES`` nor an answer
to a stale one, so this fake enforces none: it signs with the stamp the request carries, as
the documented scheme allows (the clock only drives the rate window).
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

__all__ = ["CoinstoreSimulator", "sign"]

ACCOUNT_PATH: Final = "/api/spot/accountList"


def sign(secret: str, expires: str, payload: bytes) -> str:
    """The documented two-step HMAC: a key per 30 s bucket, then the payload under it."""
    bucket = str(int(expires) // 30000)
    key = hmac.new(secret.encode("utf-8"), bucket.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.new(key.encode("utf-8"), payload, hashlib.sha256).hexdigest()


class CoinstoreSimulator(LivenessSimulator):
    """A thread-safe, in-memory Coinstore fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("POST", ACCOUNT_PATH)
    time_path: ClassVar[str | None] = None
    rate_limit: ClassVar[tuple[int, float]] = (50, 10.0)

    def authenticate(self, request: Request, now_ms: int) -> str:
        api_key = request.header("X-CS-APIKEY")
        expires = request.header("X-CS-EXPIRES")
        signature = request.header("X-CS-SIGN")
        if not api_key or not signature or not expires or not expires.isdigit():
            raise self.refuse(Refusal.MISSING_AUTH, request)
        key = self.key_for(api_key, request)
        payload = request.raw_query.encode("utf-8") + request.body
        if not hmac.compare_digest(sign(key.secret, expires, payload), signature):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        if why is Refusal.RATE_LIMITED:
            return json_response(429, {"code": 429, "message": "Too many visits"})
        if why is Refusal.BAD_SIGNATURE:
            return json_response(401, {"code": 401, "message": "signature-failed"})
        return json_response(401, {"code": 1401, "message": "Unauthorized"})

    def success(self, request: Request, api_key: str) -> SimResponse:
        return json_response(
            200,
            {
                "code": 0,
                "data": [
                    {
                        "uid": 315,
                        "accountId": 1134971,
                        "currency": "USDT",
                        "balance": "1000.00",
                        "type": 1,
                        "typeName": "AVAILABLE",
                    },
                    {
                        "uid": 315,
                        "accountId": 1134971,
                        "currency": "USDT",
                        "balance": "0",
                        "type": 4,
                        "typeName": "FROZEN",
                    },
                ],
            },
        )

    def not_found(self, request: Request) -> SimResponse:
        return json_response(404, {"code": 404, "message": "Service not found"})


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_liveness,
    lambda now: [
        DemoKey(
            "tango-coinstore",
            "tango",
            "coinstore",
            "liveness only: bound to another IP than keymon's",
            {"ips": ["10.9.9.9"]},
        ),
    ],
)
