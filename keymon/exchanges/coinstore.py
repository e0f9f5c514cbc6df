"""Coinstore (spot open API): liveness only (exchange-apis.md §2.13).

Coinstore has no endpoint that shows the calling key its own permissions, IP binding, creation
or expiry. keymon makes one signed read, ``POST /api/spot/accountList`` with the JSON body
``{}`` (the asset balances, the call of the official Python example quoted by third-party
connectors, Adamant-im/adamant-tradebot ``trade/api/coinstore_api.js`` "Assets balance"), which
proves that the key exists, that its secret is right and that this egress IP is bound to it (or
that it has no binding). The balances are never kept.

Signing (exchange-apis.md §2.13, **from third-party code, unconfirmed against Coinstore's own
docs**; the same scheme appears in every connector found): ``X-CS-EXPIRES`` is the time in ms
(the local clock); ``expires_key = floor(expires / 30000)`` as a decimal string;
``key = hex(HMAC-SHA256(secret, expires_key))``; ``X-CS-SIGN = hex(HMAC-SHA256(key as hex text,
payload))`` where the payload is the query string followed by the body (here ``{}``). The key
goes in ``X-CS-APIKEY``. The base URL is ``https://api.coinstore.com`` and the paths carry the
``/api`` prefix (keymon's base_url takes no path).

What keymon cannot tell apart (errors, third-party only): Coinstore's documented HTTP statuses
are 400 (bad request), 401 (invalid API key), 404, 429 (too many visits) and 500; the bodies
are ``{"code": ..., "message": ...}``. Observed in the wild: ``1401`` "Unauthorized", given
alike for an unknown key, an egress IP that is not bound and a missing permission, and ``401``
"signature-failed" for a bad signature. No code for an expired or frozen key, and none for a
stale ``X-CS-EXPIRES``, was found: a far-off clock would most likely read as "signature-failed"
(key_rejected), so keymon cannot report clock skew here. There is no documented server-time
endpoint, so keymon does not sync. If every Coinstore key is rejected with "signature-failed",
suspect the signing scheme (or the host clock) before the keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Generator, Mapping
from typing import Any, ClassVar, Final, Literal

import httpx

from keymon.config_base import KeyBase, LivenessSettings, Secret
from keymon.exchanges.liveness import Kind, LivenessAdapter

# ----------------------------------------------------------------------------- configuration

COINSTORE_BASE_URL = "https://api.coinstore.com"


class CoinstoreSettings(LivenessSettings):
    """``exchanges.coinstore:`` (liveness only)."""

    base_url: str = COINSTORE_BASE_URL


class CoinstoreKey(KeyBase):
    """A Coinstore key (liveness only): API key and HMAC secret."""

    exchange: Literal["coinstore"]


NAME: Final = "coinstore"
ACCOUNT_PATH: Final = "/api/spot/accountList"
#: The width of the time bucket the signing key is derived from (ms).
BUCKET_MS: Final = 30_000


def derived_key(secret: str, expires_ms: int) -> str:
    """``hex(HMAC-SHA256(secret, floor(expires / 30000)))``: the per-bucket signing key."""
    bucket = str(expires_ms // BUCKET_MS).encode()
    return hmac.new(secret.encode(), bucket, hashlib.sha256).hexdigest()


def sign(secret: str, expires_ms: int, payload: bytes) -> str:
    """``X-CS-SIGN``: lowercase hex HMAC-SHA256 of ``payload`` under the derived key's text."""
    key = derived_key(secret, expires_ms).encode()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


class CoinstoreAuth(httpx.Auth):
    """Adds ``X-CS-APIKEY``, ``X-CS-EXPIRES`` and ``X-CS-SIGN`` when the request is sent."""

    requires_request_body = True

    def __init__(self, api_key: Secret, secret: Secret, now_ms: Callable[[], int]) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms

    def __repr__(self) -> str:
        return "CoinstoreAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        expires = self._now_ms()
        payload = request.url.query + request.content
        request.headers["X-CS-APIKEY"] = self._api_key.get()
        request.headers["X-CS-EXPIRES"] = str(expires)
        request.headers["X-CS-SIGN"] = sign(self._secret.get(), expires, payload)
        yield request


class CoinstoreAdapter(LivenessAdapter, settings_model=CoinstoreSettings, key_model=CoinstoreKey):
    """Audits Coinstore keys for liveness: ``POST /api/spot/accountList`` is accepted, or why
    not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("POST", ACCOUNT_PATH)
    time_path: ClassVar[str | None] = None
    weights: ClassVar[Mapping[str, int]] = {ACCOUNT_PATH: 1}
    #: Third-party reports (see the module docstring); none of them from Coinstore's own docs.
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        1401: (
            Kind.REJECTED,
            "Coinstore does not accept the key: it is unknown (deleted?), this egress IP is not "
            "bound to it, or it lacks a permission; Coinstore does not say which",
        ),
        401: (
            Kind.REJECTED,
            "the signature is not valid: wrong secret (or, unconfirmed, a clock far off; "
            "if every Coinstore key says this, suspect keymon's signing scheme)",
        ),
        429: (Kind.RATE_LIMITED, "too many visits"),
    }

    def probe_body(self, key: CoinstoreKey) -> bytes:
        """``spot/accountList`` takes an empty JSON object, signed as sent."""
        return b"{}"

    def auth(self, key: CoinstoreKey) -> httpx.Auth:
        return CoinstoreAuth(key.api_key, key.api_secret, self.now_ms)

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """Coinstore answers ``{"code": 0, "data": [...]}``; anything else is an error."""
        if not isinstance(body, dict):
            if response.status_code != httpx.codes.OK:
                return None
            return "missing", "an answer that is not a JSON object"
        code = _int_code(body.get("code"))
        if code == 0 and response.status_code == httpx.codes.OK:
            return None
        message = body.get("message", body.get("msg"))
        text = message if isinstance(message, str) else ""
        if code is None:
            if response.status_code != httpx.codes.OK:
                return None
            return "missing", "an answer without a result code"
        return code, text


def _int_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None
