"""LBank (spot REST v2): liveness only (exchange-apis.md §2.12).

LBank's official connectors (LBank-exchange/lbank-connector-java ``Wallet.apiRestrictions``,
and the Go and Python ones) call ``POST /v2/supplement/api_Restrictions.do``, whose name
promises a Binance-style summary of the key's permissions. Its response fields are **not**
confirmed by LBank's docs: the only field list found (``enableReading``,
``enableSpotTrading``, ``enableWithdrawals``, ``ipRestrict``, ``createTime``) is a third-party
project's guess, not LBank's. So keymon makes that signed call as its liveness probe only: an
accepted answer proves that the key exists, that its secret is right and that this egress IP
is bound to it (or that it has none), and nothing more. Every fact stays "not visible" and
nothing of the answer is kept.

Signing (exchange-apis.md §2.12, the official connectors): the parameters ``api_key``,
``echostr`` (30 to 40 random alphanumerics), ``signature_method=HmacSHA256`` and ``timestamp``
(ms, the local clock corrected by ``GET /v2/timestamp.do``, ``{"data": ms}``), with any
business parameters, are sorted by name and joined as ``k=v&...``; ``sign`` is lowercase hex
HMAC-SHA256, under the secret, of the **uppercase hex MD5** of that string. As in LBank's
official Java connector, ``api_key`` and ``sign`` are sent in the query string of the POST
(empty body), and ``timestamp``, ``signature_method`` and ``echostr`` only in headers (the
official Python and Node connectors send the same two parameters in the body instead; none
sends the three header values as parameters, as keymon did before). Only HmacSHA256 keys are
supported (the client guide asks for them).

Answers are HTTP 200 with ``{"result": "true"|"false", "error_code": ..., "ts": ...}``. Codes
from LBank's own tables (LBank-exchange/lbank-official-api-docs ``API-For-Spot-EN/Error
Code.md`` and the Chinese one; support article 21534616606105): ``10004`` requests too
frequent, ``10005`` secret key (API key) does not exist, ``10006`` user does not exist,
``10007`` invalid signature, ``10022`` access denied / insufficient API key permissions,
``10002`` validation failed, ``10001`` required parameters empty and ``10003`` invalid
parameter (keymon's own request), ``10000``/``10017`` server errors. ``10600`` ("intercepted
by replay attacks filter, check timestamp") is from third-party code (ccxt) only. LBank
documents neither a code for a refused IP nor its timestamp window; keymon reads ``10022`` as
possibly an unbound IP too, and names no IP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Callable, Generator, Mapping
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, urlencode

import httpx

from keymon.config_base import KeyBase, LivenessSettings, Secret
from keymon.exchanges.base import with_query
from keymon.exchanges.liveness import Kind, LivenessAdapter

# ----------------------------------------------------------------------------- configuration

LBANK_BASE_URL = "https://api.lbkex.com"


class LbankSettings(LivenessSettings):
    """``exchanges.lbank:`` (liveness only)."""

    base_url: str = LBANK_BASE_URL


class LbankKey(KeyBase):
    """An LBank key (liveness only). Only HmacSHA256 keys, as the client guide asks; an RSA
    key's secret is its private key, which this release does not sign with."""

    exchange: Literal["lbank"]


NAME: Final = "lbank"
TIME_PATH: Final = "/v2/timestamp.do"
RESTRICTIONS_PATH: Final = "/v2/supplement/api_Restrictions.do"
SIGNATURE_METHOD: Final = "HmacSHA256"
_ECHOSTR_ALPHABET: Final = string.ascii_letters + string.digits
ECHOSTR_LENGTH: Final = 35


def presign(params: Mapping[str, str]) -> str:
    """The parameters sorted by name and joined as ``k=v&...`` (values as they are)."""
    return "&".join(f"{name}={params[name]}" for name in sorted(params))


def sign(secret: str, params: Mapping[str, str]) -> tuple[str, str]:
    """(uppercase hex MD5 of the sorted parameters, hex HMAC-SHA256 of it under ``secret``)."""
    digest = hashlib.md5(presign(params).encode()).hexdigest().upper()  # noqa: S324 - LBank's scheme
    return digest, hmac.new(secret.encode(), digest.encode(), hashlib.sha256).hexdigest()


def make_echostr() -> str:
    """A fresh random ``echostr`` (LBank wants 30 to 40 characters)."""
    return "".join(secrets.choice(_ECHOSTR_ALPHABET) for _ in range(ECHOSTR_LENGTH))


class LbankAuth(httpx.Auth):
    """Signs the request when it is sent, as LBank's official Java connector does
    (LBank-exchange/lbank-connector-java ``RequestHandler.sendSignedRequest`` and
    ``RequestBuilder.buildApiKeyRequest``): ``api_key``, ``echostr``, ``signature_method`` and
    ``timestamp`` (with any business parameters) are signed; ``api_key`` and ``sign`` (with the
    business parameters) go in the **query string** and the body stays empty; ``timestamp``,
    ``signature_method`` and ``echostr`` go **only** in headers, never among the parameters."""

    requires_request_body = True

    def __init__(
        self,
        api_key: Secret,
        secret: Secret,
        now_ms: Callable[[], int],
        echostr: Callable[[], str] = make_echostr,
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms
        self._echostr = echostr

    def __repr__(self) -> str:
        return "LbankAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        params = dict(parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True))
        params |= dict(parse_qsl(request.content.decode("utf-8"), keep_blank_values=True))
        params["api_key"] = self._api_key.get()
        timestamp = str(self._now_ms())
        echostr = self._echostr()
        signed = params | {
            "echostr": echostr,
            "signature_method": SIGNATURE_METHOD,
            "timestamp": timestamp,
        }
        _, signature = sign(self._secret.get(), signed)
        query = urlencode([(name, params[name]) for name in sorted(params)] + [("sign", signature)])
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        headers |= {
            "Content-Type": "application/x-www-form-urlencoded",
            "timestamp": timestamp,
            "signature_method": SIGNATURE_METHOD,
            "echostr": echostr,
        }
        yield httpx.Request(
            request.method,
            with_query(request.url, query),
            headers=headers,
            content=b"",
            extensions=request.extensions,
        )


class LbankAdapter(LivenessAdapter, settings_model=LbankSettings, key_model=LbankKey):
    """Audits LBank keys for liveness: ``api_Restrictions.do`` is accepted, or why not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("POST", RESTRICTIONS_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: LBank counts requests per second, not weights: each call is one.
    weights: ClassVar[Mapping[str, int]] = {RESTRICTIONS_PATH: 1, TIME_PATH: 1}
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        10001: (Kind.MALFORMED, "the required parameters can not be empty"),
        10002: (Kind.REJECTED, "LBank's validation of the request failed"),
        10003: (Kind.MALFORMED, "invalid parameter"),
        10005: (Kind.REJECTED, "the API key does not exist (deleted, or expired?)"),
        10006: (Kind.REJECTED, "the user the key belongs to does not exist"),
        10007: (Kind.REJECTED, "the signature is not valid: wrong secret (or an RSA key)"),
        10022: (
            Kind.REJECTED,
            "insufficient API key permissions; LBank documents no separate code for an "
            "unbound IP, so this egress IP may not be bound to the key",
        ),
        10600: (Kind.CLOCK, "the timestamp was refused as a replay"),
        10004: (Kind.RATE_LIMITED, "requests too frequent"),
        10000: (Kind.UNAVAILABLE, "LBank internal error"),
        10017: (Kind.UNAVAILABLE, "LBank server exception"),
    }

    _settings: LbankSettings

    def auth(self, key: LbankKey) -> httpx.Auth:
        return LbankAuth(key.api_key, key.api_secret, self.now_ms)

    def parse_server_time(self, body: Any) -> float | None:
        server = body.get("data") if isinstance(body, dict) else None
        if isinstance(server, bool) or not isinstance(server, int | float):
            return None
        return float(server)

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """``{"result": "false", "error_code": 10007, ...}``, whatever the HTTP status."""
        if not isinstance(body, dict) or str(body.get("result")).lower() != "false":
            return None
        code = body.get("error_code")
        if isinstance(code, str) and code.lstrip("-").isdigit():
            code = int(code)
        if isinstance(code, bool) or not isinstance(code, int):
            code = "result=false"
        msg = body.get("msg")
        return code, msg if isinstance(msg, str) else ""
