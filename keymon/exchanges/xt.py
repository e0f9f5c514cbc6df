"""XT.com (spot API v4): liveness only (exchange-apis.md §2.11).

XT has no endpoint that shows the calling key its own permissions, IP list, creation or
expiry. keymon makes one signed read, ``GET /v4/balances`` (weight 1 in ccxt's table), which
proves that the key exists and is active, that its secret is right and that this egress IP is
bound to it (or that it has no binding). The balances it answers are never kept.

Signing (XT docs, spot "Signature generation"): the signature is the lowercase hex
HMAC-SHA256, under the secret, of ``X + Y``. ``X`` is the ``validate-*`` headers in natural
ascending order joined as ``name=value`` with ``&``:
``validate-algorithms=HmacSHA256&validate-appkey=<key>&validate-recvwindow=<ms>&validate-timestamp=<ms>``;
``Y`` is ``#<METHOD>#<path>``, then ``#<query>`` (its ``key=value`` pairs sorted by key) if
there is a query and ``#<body>`` (the raw JSON) if there is a body. The probe has neither. The
five headers carry the same values plus ``validate-signature``. The timestamp is the local
clock corrected by ``GET /v4/public/time`` (``result.serverTime``; the path and field are
ccxt's, not confirmed on XT's own pages); XT refuses a timestamp older than the recvwindow
(``exchanges.xt.recv_window``, default 5 s, at most 60 s) or more than 1 s ahead, and an
``AUTH_105`` forces one re-sync and one retry.

Answers are ``{"rc": 0, "mc": "SUCCESS", "ma": [], "result": ...}``; an error has ``rc`` 1 and
its code in ``mc`` (e.g. ``{"rc":1,"mc":"AUTH_103","ma":[],"result":null}``). The codes are
**third-party** (ccxt's ``xt`` error map; XT's own error page was not found): ``AUTH_101``
key does not exist, ``AUTH_102`` key not activated, ``AUTH_103`` signature error,
``AUTH_104`` unbound IP (the message does not name the IP), ``AUTH_105`` outdated request,
``AUTH_106`` beyond the key's permissions. XT documents no code of its own for a frozen or an
expired key. ``AUTH_001`` to ``AUTH_007`` (a missing or malformed header) cannot follow from
a key's state, so keymon reads them as an answer it does not know (bad response).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, urlencode

import httpx

from keymon.config import Secret, XtKey, XtSettings
from keymon.exchanges.liveness import Kind, LivenessAdapter

NAME: Final = "xt"
TIME_PATH: Final = "/v4/public/time"
BALANCES_PATH: Final = "/v4/balances"
ALGORITHM: Final = "HmacSHA256"


def pre_hash(
    api_key: str,
    recv_window_ms: int,
    timestamp: str,
    method: str,
    path: str,
    query: str = "",
    body: str = "",
) -> str:
    """``X + Y`` as XT's signature generation describes it."""
    x = (
        f"validate-algorithms={ALGORITHM}&validate-appkey={api_key}"
        f"&validate-recvwindow={recv_window_ms}&validate-timestamp={timestamp}"
    )
    y = f"#{method.upper()}#{path}"
    if query:
        y += "#" + urlencode(sorted(parse_qsl(query, keep_blank_values=True)))
    if body:
        y += "#" + body
    return x + y


def sign(secret: str, message: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` under ``secret``."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class XtAuth(httpx.Auth):
    """Adds the five ``validate-*`` headers when the request is sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, now_ms: Callable[[], int], recv_window_ms: int
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms
        self._recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return "XtAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(self._now_ms())
        api_key = self._api_key.get()
        message = pre_hash(
            api_key,
            self._recv_window_ms,
            timestamp,
            request.method,
            request.url.path,
            request.url.query.decode(),
            request.content.decode(),
        )
        request.headers["validate-algorithms"] = ALGORITHM
        request.headers["validate-appkey"] = api_key
        request.headers["validate-recvwindow"] = str(self._recv_window_ms)
        request.headers["validate-timestamp"] = timestamp
        request.headers["validate-signature"] = sign(self._secret.get(), message)
        yield request


class XtAdapter(LivenessAdapter):
    """Audits XT.com keys for liveness: ``GET /v4/balances`` is accepted, or why not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("GET", BALANCES_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    weights: ClassVar[Mapping[str, int]] = {BALANCES_PATH: 1, TIME_PATH: 1}
    #: ccxt's xt error map (third-party; exchange-apis.md §2.11 "Errors").
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        "AUTH_101": (Kind.REJECTED, "XT does not know this API key (deleted?)"),
        "AUTH_102": (
            Kind.REJECTED,
            "the key is not activated (disabled, frozen or expired: XT does not say which)",
        ),
        "AUTH_103": (Kind.REJECTED, "the signature is not valid: wrong secret"),
        "AUTH_104": (Kind.IP_REFUSED, "this egress IP is not bound to the key"),
        "AUTH_105": (Kind.CLOCK, "the request is outdated: its timestamp is outside recvwindow"),
        "AUTH_106": (
            Kind.REJECTED,
            "the key may not read balances: it lacks the Read permission the client guide asks for",
        ),
        "429": (Kind.RATE_LIMITED, "too many requests"),
        "500": (Kind.UNAVAILABLE, "service exception"),
        "502": (Kind.UNAVAILABLE, "gateway exception"),
        "503": (Kind.UNAVAILABLE, "service unavailable"),
    }

    _settings: XtSettings

    def auth(self, key: XtKey) -> httpx.Auth:
        recv_window_ms = int(self._settings.recv_window.total_seconds() * 1000)
        return XtAuth(key.api_key, key.api_secret, self.now_ms, recv_window_ms)

    def parse_server_time(self, body: Any) -> float | None:
        result = body.get("result") if isinstance(body, dict) else None
        server = result.get("serverTime") if isinstance(result, dict) else None
        if isinstance(server, bool) or not isinstance(server, int | float):
            return None
        return float(server)

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """XT errors are ``{"rc": 1, "mc": "AUTH_103", "ma": [...], "result": null}``."""
        if not isinstance(body, dict) or "rc" not in body or body.get("rc") == 0:
            return None
        code = body.get("mc")
        if not isinstance(code, str) or not code:
            return None
        details = body.get("ma")
        message = ""
        if isinstance(details, list):
            message = "; ".join(str(d) for d in details if isinstance(d, str | int | float))
        return code, message
