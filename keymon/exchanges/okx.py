"""OKX: the key's own facts from ``GET /api/v5/account/config`` (exchange-apis.md §2.2).

Signing (docs "REST Authentication"): ``base64(HMAC-SHA256(secret, timestamp + METHOD +
requestPath + body))``, where ``requestPath`` includes ``?query`` and the body of a GET is
empty. The timestamp is ISO 8601 UTC with milliseconds (``2020-12-08T09:08:57.715Z``). The
headers ``OK-ACCESS-KEY``, ``OK-ACCESS-SIGN``, ``OK-ACCESS-TIMESTAMP`` and
``OK-ACCESS-PASSPHRASE`` (the passphrase in plain text) are added by :class:`OkxAuth` inside
httpx's auth flow, i.e. when the request is sent, so a request that waited for the budget still
carries a fresh timestamp.

OKX refuses a request whose timestamp is more than 30 s from its server time (``50102``). The
timestamp is the local clock plus the offset measured on ``GET /api/v5/public/time``, refreshed
every ``time_sync_interval``; a ``50102`` answer forces one re-sync and one retry before the
audit fails with ``clock_skew``.

What OKX shows a key about itself: ``perm`` (``read_only``, ``trade``, ``withdraw``) and ``ip``
(comma-separated, ``""`` when no IP is bound). ``trade`` covers every product (spot, margin,
derivatives), so keymon maps it to ``spot_trade`` and leaves futures, options and margin *not
visible* when it is set (they are known to be off only when ``trade`` is absent). There is no
creation time and no expiry field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from keymon.config_base import ExchangeSettingsBase, KeyBase, Secret, SecretRef, WeightPerMinute
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts

# ----------------------------------------------------------------------------- configuration

OKX_BASE_URL = "https://www.okx.com"
#: OKX counts requests: ``GET /api/v5/account/config`` allows 5 requests per 2 s (150/min) per
#: UID (exchange-apis.md §2.2). keymon takes a fifth of that, 30 requests/min, and leaves the
#: rest to the bots of the same account.
OKX_MAX_WEIGHT_PER_MINUTE = 30


class OkxSettings(ExchangeSettingsBase):
    """``exchanges.okx:``. OKX has no recv_window: a request expires 30 s from server time."""

    base_url: str = OKX_BASE_URL
    max_weight_per_minute: WeightPerMinute = OKX_MAX_WEIGHT_PER_MINUTE


class OkxKey(KeyBase):
    """An OKX key. OKX keys have a passphrase, chosen at key creation and sent with every
    signed request (``OK-ACCESS-PASSPHRASE``); it is a secret like the API secret."""

    exchange: Literal["okx"]
    passphrase: SecretRef


log = structlog.get_logger(__name__)

NAME: Final = "okx"
TIME_PATH: Final = "/api/v5/public/time"
CONFIG_PATH: Final = "/api/v5/account/config"

#: ``perm`` value -> keymon permission (exchange-apis.md §2.2 and §4).
PERMISSION_VALUES: Final[Mapping[str, str]] = {
    "read_only": "read",
    "trade": "spot_trade",
    "withdraw": "withdraw",
}
#: Trading permissions that ``trade`` covers but does not show apart: False without ``trade``,
#: not visible with it.
TRADE_COVERS: Final = ("margin_trade", "futures_trade", "options_trade")

# exchange-apis.md §2.2, "Errors".
KEY_REJECTED_CODES: Final = frozenset(
    {"50100", "50101", "50105", "50110", "50111", "50113", "50114", "50119", "50120", "50121"}
)
#: 50035: the endpoint requires an IP-bound key. Not for account/config, but a refusal of the key.
KEY_REJECTED_CODES_EXTRA: Final = frozenset({"50035"})
HEADER_MISSING_CODES: Final = frozenset({"50103", "50104", "50106", "50107"})
IP_REFUSED: Final = "50110"
TIMESTAMP_EXPIRED: Final = "50102"
#: 50112 "invalid timestamp": the header is malformed, which is keymon's bug, not the clock.
TIMESTAMP_INVALID: Final = "50112"
RATE_LIMIT_CODES: Final = frozenset({"50011", "50013"})
UNAVAILABLE_CODES: Final = frozenset({"50001"})
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]+:[0-9A-Fa-f]*)\b")

_unknown_perms_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def sign(secret: str, prehash: str) -> str:
    """Base64 HMAC-SHA256 of the pre-hash string (OKX ``OK-ACCESS-SIGN``)."""
    digest = hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def iso_timestamp(ms: int) -> str:
    """``2020-12-08T09:08:57.715Z``: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class OkxAuth(httpx.Auth):
    """Adds ``OK-ACCESS-KEY``, ``-SIGN``, ``-TIMESTAMP`` and ``-PASSPHRASE`` when sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, passphrase: Secret, now_ms: Callable[[], int]
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._passphrase = passphrase
        self._now_ms = now_ms

    def __repr__(self) -> str:
        return "OkxAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = iso_timestamp(self._now_ms())
        # requestPath: the path and ``?query`` exactly as sent; the body exactly as sent.
        path = request.url.raw_path.decode("ascii")
        body = "" if request.method == "GET" else request.content.decode()
        request.headers["OK-ACCESS-KEY"] = self._api_key.get()
        request.headers["OK-ACCESS-TIMESTAMP"] = timestamp
        request.headers["OK-ACCESS-PASSPHRASE"] = self._passphrase.get()
        request.headers["OK-ACCESS-SIGN"] = sign(
            self._secret.get(), timestamp + request.method + path + body
        )
        yield request


# ----------------------------------------------------------------------------- responses


class Envelope(BaseModel):
    """Every v5 answer: ``{"code": "0", "msg": "", "data": [...]}``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    code: StrictStr
    msg: str = ""
    data: Any = None


class AccountConfig(BaseModel):
    """``data[0]`` of ``GET /api/v5/account/config``. ``perm`` is required: a body without it
    says nothing the security rules can stand on."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    perm: StrictStr
    ip: StrictStr | None = None
    #: OKX docs: "The current request account is main account if uid = mainUid. The current
    #: request account is sub-account if uid != mainUid."
    uid: StrictStr | None = None
    mainUid: StrictStr | None = None


class ServerTime(BaseModel):
    """``data[0]`` of ``GET /api/v5/public/time``: ``{"ts": "1597026383085"}``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    ts: StrictStr


# ----------------------------------------------------------------------------- adapter


class OkxAdapter(AdapterBase, settings_model=OkxSettings, key_model=OkxKey):
    """Audits OKX keys. One instance per process, shared by every OKX key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", CONFIG_PATH)}
    )
    #: Empty on purpose: OKX documents no rate-limit headers at all (limits are per endpoint
    #: and UID or IP, answered with ``50011``), so the budget has nothing to learn.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: OKX counts requests: every call costs 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, CONFIG_PATH: 1}
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a time"

    _settings: OkxSettings

    async def audit(self, key: OkxKey) -> KeyFacts:
        """The key's permissions and IP list, mapped onto keymon's vocabulary."""
        auth = OkxAuth(key.api_key, key.api_secret, key.passphrase, self.now_ms)
        data = await self._get_synced(CONFIG_PATH, auth=auth)
        return self._facts(data)

    def parse_server_time(self, body: Any) -> float | None:
        try:
            server = ServerTime.model_validate(body[0] if isinstance(body, list) else None)
            return int(server.ts)
        except (ValidationError, ValueError, IndexError):
            return None

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        response = await self._send("GET", path, auth=auth)
        try:
            envelope = Envelope.model_validate(json.loads(response.content))
        except (ValueError, UnicodeDecodeError, ValidationError):
            raise self._http_error(response, path) from None
        if envelope.code != "0":
            raise self._code_error(envelope, response)
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response, path)
        return envelope.data

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer without a readable envelope (or a non-200 with code "0")."""
        status = response.status_code
        if status == 429:
            return ExchangeRateLimited("okx: HTTP 429, rate limit", exchange=NAME)
        if status == 401:
            return ExchangeAuthError(
                "okx rejects the request: HTTP 401, the auth headers are missing or invalid",
                exchange=NAME,
            )
        if status >= 500:
            return ExchangeUnavailable(f"okx: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "a v5 envelope")
        return ExchangeBadResponse(f"okx: {path} answered HTTP {status}", exchange=NAME)

    def _code_error(self, envelope: Envelope, response: httpx.Response) -> ExchangeError:
        code = envelope.code
        msg = envelope.msg[:300]
        detail = f"okx {code}: {msg or 'no message'}"
        if code in RATE_LIMIT_CODES:
            return ExchangeRateLimited(f"{detail} (rate limited)", exchange=NAME, code=code)
        if code == TIMESTAMP_EXPIRED:
            return self._clock_error(detail, code)
        if code in KEY_REJECTED_CODES or code in KEY_REJECTED_CODES_EXTRA:
            match = _IP.search(msg) if code == IP_REFUSED else None
            refused_ip = match.group(1) if match else None
            return ExchangeAuthError(
                _rejection_message(code, detail, refused_ip),
                exchange=NAME,
                code=code,
                refused_ip=refused_ip,
            )
        if code in UNAVAILABLE_CODES or response.status_code >= 500:
            return ExchangeUnavailable(detail, exchange=NAME, code=code)
        if code in HEADER_MISSING_CODES or code == TIMESTAMP_INVALID:
            return ExchangeBadResponse(
                f"{detail} (keymon sent a malformed or incomplete signed request)",
                exchange=NAME,
                code=code,
            )
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=code
        )

    def _facts(self, data: Any) -> KeyFacts:
        first = data[0] if isinstance(data, list) and data else None
        try:
            info = AccountConfig.model_validate(first)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"okx: {CONFIG_PATH} answered an unexpected shape ({fields or 'data'})",
                exchange=NAME,
            ) from None
        ips = _ip_list(info.ip)
        assert isinstance(first, dict)
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=_permissions(info.perm),
            ip_restricted=None if ips is None else bool(ips),
            ip_list=ips,
            created_at=None,  # OKX shows no creation time
            deadlines=(),  # nor an expiry
            account_kind=(
                None
                if not info.uid or not info.mainUid
                else "master"
                if info.uid == info.mainUid
                else "sub"
            ),
        )


def _permissions(perm: str) -> dict[str, bool]:
    values = [v.strip() for v in perm.split(",") if v.strip()]
    # Every key can read account/config (it answered); read_only is the Read permission.
    permissions: dict[str, bool] = {"read": True, "spot_trade": False, "withdraw": False}
    for value in values:
        mapped = PERMISSION_VALUES.get(value)
        if mapped is not None:
            permissions[mapped] = True
        else:
            permissions[value] = True
            if value not in _unknown_perms_logged:
                _unknown_perms_logged.add(value)
                log.info("unmapped_permission", exchange=NAME, permission=value)
    if "trade" not in values:
        for name in TRADE_COVERS:
            permissions[name] = False  # no trading at all: none of the products either
    return permissions


def _ip_list(ip: str | None) -> tuple[str, ...] | None:
    """``ip`` is comma-separated, ``""`` when no IP is bound; absent means not visible."""
    if ip is None:
        return None
    return tuple(entry.strip() for entry in ip.split(",") if entry.strip())


def _rejection_message(code: str, detail: str, refused_ip: str | None) -> str:
    causes = {
        "50100": "the key is frozen",
        "50101": "the key belongs to the other environment (live vs demo)",
        "50105": "the passphrase is wrong",
        "50110": "this egress IP is not in the key's IP whitelist",
        "50111": "the key is unknown to OKX (deleted?)",
        "50113": "the signature is not valid: wrong secret",
        "50114": "OKX refuses the authorization",
        "50119": "the key does not exist (deleted?)",
        "50120": "the key lacks the permission for this request (Read)",
        "50121": "this IP may not access the API",
        "50035": "the endpoint requires an IP-bound key",
    }
    text = f"okx rejects the key ({detail}): {causes[code]}"
    if refused_ip:
        text += f"; OKX refused egress IP {refused_ip}"
    return text
