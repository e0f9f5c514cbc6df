"""Bybit: the key's own facts from ``GET /v5/user/query-api`` (exchange-apis.md §2.1).

Signing (docs ``guide.mdx``, "Authentication"): ``hex(HMAC-SHA256(secret, timestamp + apiKey +
recvWindow + payload))``, where the payload of a GET is its raw query string (empty here). The
headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW`` and ``X-BAPI-SIGN`` are
added by :class:`BybitAuth` inside httpx's auth flow, i.e. when the request is sent, so a
request that waited for the budget still carries a fresh timestamp. ``X-BAPI-SIGN-TYPE`` is
left out: ``2`` (HMAC) is the default. Only system-generated (HMAC) keys are supported.

Bybit accepts ``server_time - recv_window <= timestamp < server_time + 1000``. The timestamp is
the local clock plus the offset measured on ``GET /v5/market/time`` (the envelope's ``time``),
refreshed every ``time_sync_interval``; a ``10002`` answer forces one re-sync and one retry
before the audit fails with ``clock_skew``.

Unlike Binance, Bybit shows a key its own IP list (``ips``; ``["*"]`` means not bound), so
``untrusted_ip`` is evaluated for Bybit keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from keymon.config_base import Duration, KeyBase, RecvWindowSettings, Secret, WeightPerMinute
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import (
    utc_from_ms,
)
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, Deadline, KeyFacts, Reason

# ----------------------------------------------------------------------------- configuration

BYBIT_BASE_URL = "https://api.bybit.com"
#: Bybit counts requests, not weights: ``GET /v5/user/query-api`` allows 10 requests/s (600/min)
#: per UID and the whole IP allows 600 requests per 5 s (exchange-apis.md §2.1). keymon takes a
#: tenth of the endpoint's limit, 60 requests/min, and leaves the rest to the bots on the IP.
BYBIT_MAX_WEIGHT_PER_MINUTE = 60
BYBIT_RECV_WINDOW = timedelta(seconds=5)
#: Bybit does not document a maximum recv_window; keymon keeps Binance's 60 s bound.
BYBIT_MAX_RECV_WINDOW = timedelta(seconds=60)


class BybitSettings(RecvWindowSettings):
    """``exchanges.bybit:``."""

    base_url: str = BYBIT_BASE_URL
    max_recv_window: ClassVar[timedelta] = BYBIT_MAX_RECV_WINDOW
    recv_window: Duration = BYBIT_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = BYBIT_MAX_WEIGHT_PER_MINUTE


class BybitKey(KeyBase):
    """A Bybit key. Only system-generated (HMAC) keys are supported: an RSA key's secret is
    its private key, which this release does not sign with."""

    exchange: Literal["bybit"]


log = structlog.get_logger(__name__)

NAME: Final = "bybit"
TIME_PATH: Final = "/v5/market/time"
QUERY_API_PATH: Final = "/v5/user/query-api"

#: (group, value) in ``permissions`` -> keymon permission (exchange-apis.md §4's table).
#: ``ContractTrade`` maps as a whole group: any entry in it is derivatives trading.
PERMISSION_ENTRIES: Final[Mapping[tuple[str, str], str]] = {
    ("Spot", "SpotTrade"): "spot_trade",
    ("Derivatives", "DerivativesTrade"): "futures_trade",
    ("Options", "OptionsTrade"): "options_trade",
    ("Wallet", "Withdraw"): "withdraw",
    ("Wallet", "AccountTransfer"): "universal_transfer",
    ("Wallet", "SubMemberTransfer"): "internal_transfer",
    ("Wallet", "SubMemberTransferList"): "internal_transfer",
}
#: keymon permission -> the groups whose presence makes it observable.
_PERMISSION_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "spot_trade": ("Spot",),
    "futures_trade": ("ContractTrade", "Derivatives"),
    "options_trade": ("Options",),
    "withdraw": ("Wallet",),
    "universal_transfer": ("Wallet",),
    "internal_transfer": ("Wallet",),
}

# Official error table: bybit-exchange/docs docs/v5/error.mdx ("UTA"), recorded in
# tests/conformance/test_bybit.py. 33004 and -2015 are "Your api key has expired"; 10008
# "Common banned, please check your account mode"; 10009 "Service Restricted: Access is
# currently unavailable for your region" (this egress IP's region is refused).
KEY_REJECTED_CODES: Final = frozenset(
    {10003, 10004, 10005, 10007, 10008, 10009, 10010, 33004, -2015}
)
IP_REFUSED: Final = 10010
INVALID_TIMESTAMP: Final = 10002
#: ``10002`` "The request time exceeds the time window range" and ``-1`` "request expired".
TIMESTAMP_CODES: Final = frozenset({INVALID_TIMESTAMP, -1})
#: 10006 "too many visits" is documented in §2.1; 10018 ("exceeded the IP rate limit") is from
#: Bybit's v5 error list, not from exchange-apis.md.
RATE_LIMIT_CODES: Final = frozenset({10006, 10018})
#: 10000 "server timeout" and 10016 "server error": Bybit's v5 error list, not exchange-apis.md.
UNAVAILABLE_CODES: Final = frozenset({10000, 10016})
#: HTTP 403: "access too frequent" (600 requests per 5 s per IP), wait at least 10 minutes.
IP_BAN_SECONDS: Final = 600.0
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]+:[0-9A-Fa-f]*)\b")

_unknown_entries_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def sign(secret: str, prehash: str) -> str:
    """Lowercase hex HMAC-SHA256 of the pre-hash string (Bybit HMAC keys)."""
    return hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).hexdigest()


class BybitAuth(httpx.Auth):
    """Adds ``X-BAPI-API-KEY``, ``-TIMESTAMP``, ``-RECV-WINDOW`` and ``-SIGN`` when sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, now_ms: Callable[[], int], recv_window_ms: int
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms
        self._recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return "BybitAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(self._now_ms())
        window = str(self._recv_window_ms)
        api_key = self._api_key.get()
        # GET: the raw query string as sent; POST: the body exactly as sent.
        payload = (
            request.url.query.decode("ascii")
            if request.method == "GET"
            else request.content.decode()
        )
        request.headers["X-BAPI-API-KEY"] = api_key
        request.headers["X-BAPI-TIMESTAMP"] = timestamp
        request.headers["X-BAPI-RECV-WINDOW"] = window
        request.headers["X-BAPI-SIGN"] = sign(
            self._secret.get(), timestamp + api_key + window + payload
        )
        yield request


# ----------------------------------------------------------------------------- responses


class Envelope(BaseModel):
    """Every v5 answer: ``{retCode, retMsg, result, retExtInfo, time}``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    retCode: StrictInt
    retMsg: str = ""
    result: Any = None
    time: StrictInt | None = None


class ApiKeyInfo(BaseModel):
    """``result`` of ``GET /v5/user/query-api``. ``permissions`` is required: a body without
    it says nothing the security rules can stand on."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    apiKey: StrictStr
    readOnly: StrictInt = 0
    permissions: dict[str, list[StrictStr]]
    ips: list[StrictStr] | None = None
    deadlineDay: StrictInt | None = None
    expiredAt: StrictStr | None = None
    createdAt: StrictStr | None = None
    #: ``1`` personal, ``2`` connected to a third-party app.
    type: StrictInt | None = None
    #: Whether the key belongs to the master account; ``parentUid`` is ``"0"`` for a master.
    isMaster: bool | None = None
    parentUid: StrictStr | None = None


# ----------------------------------------------------------------------------- adapter


class BybitAdapter(AdapterBase, settings_model=BybitSettings, key_model=BybitKey):
    """Audits Bybit keys. One instance per process, shared by every Bybit key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", QUERY_API_PATH)}
    )
    #: Empty on purpose: Bybit's ``X-Bapi-Limit``/``-Limit-Status``/``-Limit-Reset-Timestamp``
    #: report the *remaining* requests of one endpoint for one UID, not a per-IP used weight,
    #: so the budget (which reads used-weight-per-IP headers) has nothing to learn from them.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: Bybit counts requests: every call costs 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, QUERY_API_PATH: 1}
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a time"

    _settings: BybitSettings
    #: Monotonic end of a 403 IP ban. The budget knows only Binance's 418, so the adapter
    #: itself sends nothing to Bybit until Bybit's documented 10-minute pause has passed.
    _banned_until: float = 0.0

    async def audit(self, key: BybitKey) -> KeyFacts:
        """The key's permissions, IP list and expiry, mapped onto keymon's vocabulary."""
        auth = BybitAuth(
            key.api_key,
            key.api_secret,
            self.now_ms,
            int(self._settings.recv_window.total_seconds() * 1000),
        )
        result = await self._get_synced(QUERY_API_PATH, auth=auth)
        return self._facts(result, key.api_key.get())

    async def _time_answer(self, stamp: httpx.Auth) -> Any:
        return await self._envelope(TIME_PATH, auth=stamp)

    def parse_server_time(self, body: Any) -> float | None:
        time: int | None = body.time
        return time

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        return (await self._envelope(path, auth=auth)).result

    async def _envelope(self, path: str, *, auth: httpx.Auth) -> Envelope:
        left = self._banned_until - self._monotonic()
        if left > 0:
            raise ExchangeRateLimited(
                f"bybit: this IP is paused after HTTP 403 (too many requests); {left:.0f} s left",
                exchange=NAME,
                reason=Reason.BANNED,
                retry_after=left,
            )
        response = await self._send("GET", path, auth=auth)
        try:
            body = json.loads(response.content)
            envelope = Envelope.model_validate(body)
        except (ValueError, UnicodeDecodeError, ValidationError):
            raise self._http_error(response, path) from None
        if envelope.retCode != 0:
            raise self._code_error(envelope, response)
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response, path)
        return envelope

    def _retry_after(self, response: httpx.Response) -> float | None:
        reset = response.headers.get("X-Bapi-Limit-Reset-Timestamp")
        if reset is None or not reset.isdigit():
            return None
        return max(0.0, int(reset) / 1000 - self._clock())

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer without a readable envelope (or a non-200 with retCode 0)."""
        status = response.status_code
        if status == 403:
            self._banned_until = self._monotonic() + IP_BAN_SECONDS
            return ExchangeRateLimited(
                "bybit: HTTP 403, this IP sent too many requests (600 per 5 s; Bybit asks for"
                " a 10-minute pause) or is in a blocked region",
                exchange=NAME,
                reason=Reason.BANNED,
                retry_after=IP_BAN_SECONDS,
            )
        if status == 429:
            retry_after = self._retry_after(response)
            return ExchangeRateLimited(
                f"bybit: HTTP 429, system rate limit (retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                retry_after=retry_after,
            )
        if status == 401:
            return ExchangeAuthError(
                "bybit rejects the request: HTTP 401, the auth headers are missing or invalid",
                exchange=NAME,
            )
        if status >= 500:
            return ExchangeUnavailable(f"bybit: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "a v5 envelope")
        return ExchangeBadResponse(f"bybit: {path} answered HTTP {status}", exchange=NAME)

    def _code_error(self, envelope: Envelope, response: httpx.Response) -> ExchangeError:
        code = envelope.retCode
        msg = envelope.retMsg[:300]
        detail = f"bybit {code}: {msg or 'no message'}"
        if code in RATE_LIMIT_CODES:
            retry_after = self._retry_after(response)
            return ExchangeRateLimited(
                f"{detail} (rate limited; retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                code=code,
                retry_after=retry_after,
            )
        if code in TIMESTAMP_CODES:
            return self._clock_error(detail, code)
        if code in KEY_REJECTED_CODES:
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
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=code
        )

    def _facts(self, result: Any, api_key: str) -> KeyFacts:
        try:
            info = ApiKeyInfo.model_validate(result)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "result" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"bybit: {QUERY_API_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        if info.apiKey != api_key:
            raise ExchangeBadResponse(
                f"bybit: {QUERY_API_PATH} describes another key than the one that signed",
                exchange=NAME,
            )
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=_permissions(info),
            ip_restricted=_ip_restricted(info.ips),
            ip_list=tuple(ip for ip in info.ips or () if ip != "*"),
            created_at=_parse_time(info.createdAt),
            deadlines=self._deadlines(info),
            account_kind=_account_kind(info),
            third_party_app=None if info.type not in (1, 2) else info.type == 2,
        )

    def _deadlines(self, info: ApiKeyInfo) -> tuple[Deadline, ...]:
        expires = _parse_time(info.expiredAt)
        if expires is not None and expires.year > 1970:
            return (Deadline("key_expiry", expires),)
        if info.expiredAt is None and info.deadlineDay is not None and info.deadlineDay > 0:
            # No datetime but a day count: the day count, counted from now.
            now = utc_from_ms(self.now_ms())
            return (Deadline("key_expiry", now + timedelta(days=info.deadlineDay)),)
        return ()  # absent, or the epoch: IP-bound keys do not expire


def _permissions(info: ApiKeyInfo) -> dict[str, bool]:
    groups = info.permissions
    permissions: dict[str, bool] = {"read": True}  # any key can read (docs: "read always")
    for permission, sources in _PERMISSION_GROUPS.items():
        if any(group in groups for group in sources):
            permissions[permission] = False  # the group is shown: absence is observed
    for group, values in groups.items():
        if group == "ContractTrade" and values:
            permissions["futures_trade"] = True
            continue
        for value in values:
            mapped = PERMISSION_ENTRIES.get((group, value))
            if mapped is not None:
                permissions[mapped] = True
            elif group != "ContractTrade":
                raw = f"{group}:{value}"
                permissions[raw] = True
                if raw not in _unknown_entries_logged:
                    _unknown_entries_logged.add(raw)
                    log.info("unmapped_permission", exchange=NAME, permission=raw)
    if info.readOnly == 1:
        # A read-only key can trade or move nothing, whatever the groups list.
        permissions = {name: name == "read" for name in permissions}
    return permissions


def _account_kind(info: ApiKeyInfo) -> str | None:
    """``isMaster`` (official: "If this api key belongs to master account or not"), else
    ``parentUid`` (``"0"`` when called by the main account)."""
    if info.isMaster is not None:
        return "master" if info.isMaster else "sub"
    if info.parentUid is not None and info.parentUid.isdigit():
        return "master" if int(info.parentUid) == 0 else "sub"
    return None


def _ip_restricted(ips: list[str] | None) -> bool:
    return bool(ips) and "*" not in (ips or ())


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rejection_message(code: int, detail: str, refused_ip: str | None) -> str:
    causes = {
        10003: "the key is unknown to Bybit (deleted?) or belongs to the other environment",
        10004: "the signature is not valid: wrong secret",
        10005: "the key lacks the permission for this request",
        10007: "Bybit could not authenticate the user",
        10008: "Bybit has banned the account ('common banned'; check the account mode)",
        10009: "Bybit refuses access from this egress IP's region",
        10010: "this egress IP is not bound to the key",
        33004: "the key has expired",
        -2015: "the key has expired",
    }
    text = f"bybit rejects the key ({detail}): {causes[code]}"
    if refused_ip:
        text += f"; Bybit refused egress IP {refused_ip}"
    return text
