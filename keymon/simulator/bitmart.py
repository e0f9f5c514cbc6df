"""A fake BitMart spot API, written from exchange-apis.md §2.8 and BitMart's own pages (not
from keymon's adapter).

Serves ``GET /system/time`` (``data.server_time``, ms) and the SIGNED
``POST /spot/v4/query/open-orders`` (BitMart lists it among the read-only permissions; every
read-only GET is KEYED, i.e. unsigned). A signed request carries ``X-BM-KEY``,
``X-BM-TIMESTAMP`` (ms) and ``X-BM-SIGN``: lowercase hex HMAC-SHA256, under the secret, of
``timestamp#memo#body`` with the JSON body exactly as sent. The memo is the third credential,
chosen when the key was created.

Answers use BitMart's envelope ``{"code", "message", "trace", "data"}`` (1000 = OK) and the
documented authentication codes and HTTP statuses: ``30001``/``30004``/``30006`` (a header is
empty, 401), ``30008`` (timestamp format, 401), ``30002`` (key not found, 401), ``30003``
(frozen, 401), ``30005`` (signature wrong, 401), ``30007`` (timestamp not within a minute,
401), ``30010`` (IP forbidden, 403), ``30011`` (key past its expiry time, 403), ``30012``
(key forbidden, 403), ``30013`` (too many requests, 429). A ``recvWindow`` in the body (BitMart
range (0, 60000], default 5000) also bounds the timestamp's age; BitMart does not say which
code a stale request within a minute gets, so this fake answers ``30007`` there too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any, ClassVar, Final

from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_liveness
from keymon.simulator.liveness import (
    Answer,
    LivenessSimulator,
    Refusal,
    Request,
    SimKey,
    _checked_ips,
    json_response,
)
from keymon.simulator.server import SimResponse

__all__ = ["BitmartSimulator", "sign"]

TIME_PATH: Final = "/system/time"
OPEN_ORDERS_PATH: Final = "/spot/v4/query/open-orders"
#: "Header X-BM-TIMESTAMP range. Within a minute".
TIMESTAMP_RANGE_MS: Final = 60_000
DEFAULT_RECV_WINDOW_MS: Final = 5000
MAX_RECV_WINDOW_MS: Final = 60_000

#: BitMart's documented answers: Refusal -> (HTTP status, code, message).
_REFUSALS: Final[dict[Refusal, tuple[int, int, str]]] = {
    Refusal.MISSING_AUTH: (401, 30001, "Header X-BM-KEY is empty"),
    Refusal.UNKNOWN_KEY: (401, 30002, "Header X-BM-KEY not found"),
    Refusal.FROZEN: (401, 30003, "Header X-BM-KEY has frozen"),
    Refusal.BAD_SIGNATURE: (401, 30005, "Header X-BM-SIGN is wrong"),
    Refusal.TIMESTAMP: (401, 30007, "Header X-BM-TIMESTAMP range. Within a minute"),
    Refusal.IP_REFUSED: (
        403,
        30010,
        "IP is forbidden. We recommend enabling IP whitelist for API trading. "
        "After that reauth your account",
    ),
    Refusal.EXPIRED: (403, 30011, "Header X-BM-KEY over expire time"),
    Refusal.DISABLED: (403, 30012, "Header X-BM-KEY is forbidden to request it"),
    Refusal.RATE_LIMITED: (429, 30013, "Request too many requests"),
}


def sign(secret: str, timestamp: str, memo: str, body: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``timestamp#memo#body``."""
    return hmac.new(
        secret.encode(), f"{timestamp}#{memo}#{body}".encode(), hashlib.sha256
    ).hexdigest()


def _envelope(status: int, code: int, message: str, data: Any) -> SimResponse:
    return json_response(
        status, {"code": code, "message": message, "trace": str(uuid.uuid4()), "data": data}
    )


class BitmartSimulator(LivenessSimulator):
    """A thread-safe, in-memory BitMart spot fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("POST", OPEN_ORDERS_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: "Current open orders (v4)": 12 requests per 2 s per key.
    rate_limit: ClassVar[tuple[int, float]] = (12, 2.0)

    def add_key(  # type: ignore[override]
        self, api_key: str, secret: str, memo: str, *, ips: list[str] | None = None
    ) -> None:
        """Create an active key with its memo; ``ips`` defaults to loopback, ``[]`` = none."""
        self._add(api_key, SimKey(secret, _checked_ips(ips), extra={"memo": memo}))

    def time_body(self, now_ms: int) -> SimResponse:
        return _envelope(200, 1000, "OK", {"server_time": now_ms})

    def authenticate(self, request: Request, now_ms: int) -> str:
        api_key = request.header("X-BM-KEY")
        timestamp = request.header("X-BM-TIMESTAMP")
        signature = request.header("X-BM-SIGN")
        if not api_key:
            raise self.refuse(Refusal.MISSING_AUTH, request)
        if not signature:
            raise Answer(_envelope(401, 30004, "Header X-BM-SIGN is empty", {}))
        if not timestamp:
            raise Answer(_envelope(401, 30006, "Header X-BM-TIMESTAMP is empty", {}))
        if not timestamp.isdigit():
            raise Answer(_envelope(401, 30008, "Header X-BM-TIMESTAMP invalid format", {}))
        key = self.key_for(api_key, request)
        body = request.body.decode("utf-8", "replace")
        window = _recv_window(body)
        age = now_ms - int(timestamp)
        if abs(age) > TIMESTAMP_RANGE_MS or age > window:
            raise self.refuse(Refusal.TIMESTAMP, request)
        expected = sign(key.secret, timestamp, key.extra.get("memo", ""), body)
        if not hmac.compare_digest(expected, signature):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        status, code, message = _REFUSALS[why]
        return _envelope(status, code, message, {})

    def success(self, request: Request, api_key: str) -> SimResponse:
        return _envelope(
            200,
            1000,
            "success",
            [
                {
                    "orderId": "118100034543076010",
                    "clientOrderId": "",
                    "symbol": "BTC_USDT",
                    "side": "buy",
                    "orderMode": "spot",
                    "type": "limit",
                    "state": "new",
                    "price": "48800.00",
                    "size": "0.00100",
                    "filledSize": "0.00000",
                    "createTime": 1681701557927,
                    "updateTime": 1681701557927,
                }
            ],
        )

    def not_found(self, request: Request) -> SimResponse:
        return _envelope(404, 30000, "Not found", {})


def _recv_window(body: str) -> int:
    """The body's ``recvWindow``, BitMart's default if absent; an invalid one counts as 0."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return DEFAULT_RECV_WINDOW_MS
    value = data.get("recvWindow", DEFAULT_RECV_WINDOW_MS) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_RECV_WINDOW_MS
    return int(value) if 0 < value <= MAX_RECV_WINDOW_MS else 0


def _register_demo_key(simulator: Any, key: DemoKey) -> None:
    register_liveness(simulator, key, key.memo)


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    _register_demo_key,
    lambda now: [
        DemoKey(
            "papa-bitmart",
            "papa",
            "bitmart",
            "liveness only: past its expiry at BitMart (code 30011)",
            {"key_state": "expired"},
        ),
    ],
    extra=("memo",),
)
