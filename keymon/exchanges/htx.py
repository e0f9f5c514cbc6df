"""HTX (formerly Huobi): the key's own facts from ``GET /v2/user/api-key`` (exchange-apis.md §2.15).

The endpoint needs the account's ``uid`` (``HtxKey.uid``) and is called with
``accessKey=<own key>``, so HTX answers the calling key only.

Signing (signature version 2): the query carries ``AccessKeyId``, ``SignatureMethod=HmacSHA256``,
``SignatureVersion=2`` and ``Timestamp`` (``YYYY-MM-DDThh:mm:ss``, UTC) besides the request's own
parameters; the pre-sign text is ``METHOD + "\\n" + host + "\\n" + path + "\\n" +
sorted_urlencoded_params`` (host lowercase) and ``Signature = base64(HMAC-SHA256(secret,
pre-sign))`` is appended URL-encoded. :class:`HtxAuth` signs inside httpx's auth flow, i.e. when
the request is sent, so a request that waited for the budget still carries a fresh timestamp.

Fields: ``permission`` (comma string: ``readOnly`` -> read, ``trade`` -> spot_trade,
``withdraw`` -> withdraw), ``ipAddresses`` (comma string; empty means no binding) and
``createTime`` (ms). ``validDays`` ("days of validity left") is kept in ``raw`` only and is
**not** a deadline: its sentinel for "permanent" is unconfirmed, and for an unbound key every
use (keymon's polling included) extends the validity by 90 days, so a date computed from it
would move with every audit.

Errors: v2 answers ``{"code": <int>, "message": ...}`` (``200`` is success) and v1-style
answers ``{"status": "error", "err-code": ...}``. ``api-signature-not-valid``,
``api-signature-check-failed`` and HTTP 401/403 reject the key;
``base-request-exceed-frequency-limit`` is rate limited; ``system-maintenance`` is unavailable;
anything else is a bad response quoting HTX's code and message.

The entry's ``status`` is the key's own state: ``normal`` reads ``key_locked`` off, any other
value on (the key cannot be used as it is); absent, not visible.

Trading readiness (``exchanges.htx.trading_status``, on by default): after the key's own
details each audit reads ``GET /v1/account/accounts`` ("Get all Accounts of the Current User",
https://huobiapi.github.io/docs/spot/v1/en/#get-all-accounts-of-the-current-user and
https://www.htx.com/en-us/opend/newApiPages/?id=7ec4b291-7773-11ed-9966-0242ac110003: permission
Read, no parameters, rate limit 100 times/2s), signed the same way and spent from the same
budget. It answers ``{"status": "ok", "data": [{"id", "type", "subtype", "state"}]}`` with
``state`` ``working`` or ``lock`` and ``type`` ``spot``, ``margin`` (isolated margin;
``subtype`` is its symbol), ``super-margin`` (cross margin), ``point``, ``otc``, ``grid-trading``,
``otc-options``, ``trust-credit``, ... The ``spot`` account's ``state`` is ``account_status``,
quoted (``working``: normal). Locked ``margin`` and ``super-margin`` accounts, traded with the
same key and order API, are named after it (``working; also locked: margin account 10000002
(btcusdt)``), which makes the status not normal; the other account types do not trade through
the key's orders and are left out. No spot account: ``account_status`` is not shown.
A failure of this call never fails the audit and never hides the key's facts: they stand, and
``trading_status_error`` carries the reason (log event ``trading_status_failed``). The HTX error
table (https://huobiapi.github.io/docs/spot/v1/en/#error-code) names
``account-get-accounts-inexistent-error`` ("The account doesn't exist in current user") for
account calls: a bad response quoting it, like any code not listed above.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, quote

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from keymon.config_base import Boolean, ExchangeSettingsBase, KeyBase, Secret, WeightPerMinute
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import (
    parse_retry_after,
    with_query,
)
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts

# ----------------------------------------------------------------------------- configuration

#: HTX (formerly Huobi); the signature v2 pre-sign text includes this host, lowercase.
HTX_BASE_URL = "https://api.huobi.pro"
#: HTX documents no per-minute figure for ``/v2/user/api-key``; a conservative default.
HTX_MAX_WEIGHT_PER_MINUTE = 60


class HtxSettings(ExchangeSettingsBase):
    """``exchanges.htx:``. No recv_window: signature v2 carries only a ``Timestamp``."""

    base_url: str = HTX_BASE_URL
    max_weight_per_minute: WeightPerMinute = HTX_MAX_WEIGHT_PER_MINUTE
    #: Read the account's state (``GET /v1/account/accounts``, one more call) with every audit.
    trading_status: Boolean = True


class HtxKey(KeyBase):
    """An HTX key. ``GET /v2/user/api-key`` needs the account's ``uid`` (the numeric user id
    shown in the HTX account settings, or answered by ``GET /v2/user/uid``), so it is
    required. It is not a secret."""

    exchange: Literal["htx"]
    uid: str = Field(pattern=r"^[0-9]{1,20}$")


log = structlog.get_logger(__name__)

NAME: Final = "htx"
API_KEY_PATH: Final = "/v2/user/api-key"
ACCOUNTS_PATH: Final = "/v1/account/accounts"
#: The account the market makers' spot orders trade from, and the margin accounts the same key
#: and order API trade (``margin``: isolated, ``super-margin``: cross); see the docstring.
SPOT_ACCOUNT: Final = "spot"
MARGIN_ACCOUNTS: Final = ("margin", "super-margin")
LOCKED_STATE: Final = "lock"
SUCCESS: Final = 200

#: ``permission`` value -> keymon permission (exchange-apis.md §4's table).
PERMISSION_VALUES: Final[Mapping[str, str]] = {
    "readOnly": "read",
    "trade": "spot_trade",
    "withdraw": "withdraw",
}
#: Products HTX's ``trade`` covers besides spot: off when ``trade`` is absent.
TRADE_COVERS: Final = ("margin_trade", "futures_trade")
#: Signature refusals (v1 text codes). exchange-apis.md §2.15 named only the first; its "Known
#: corrections" list ``api-signature-check-failed``, ``base-request-exceed-frequency-limit`` and
#: ``system-maintenance`` as documented by HTX (tests/conformance/test_htx.py).
KEY_REJECTED_CODES: Final = frozenset({"api-signature-not-valid", "api-signature-check-failed"})
RATE_LIMIT_CODES: Final = frozenset({"base-request-exceed-frequency-limit"})
UNAVAILABLE_CODES: Final = frozenset({"system-maintenance"})

_unknown_perms_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def encode(value: str) -> str:
    """Percent-encoding as in HTX's pre-sign text (``:`` becomes ``%3A``)."""
    return quote(value, safe="-_.~")


def presign(method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nhost\\npath\\nsorted_urlencoded_params`` (host lowercase)."""
    query = "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))
    return f"{method.upper()}\n{host.lower()}\n{path}\n{query}"


def sign(secret: str, text: str) -> str:
    """Base64 of the HMAC-SHA256 digest of ``text`` under ``secret``."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def timestamp(now: float) -> str:
    """``YYYY-MM-DDThh:mm:ss`` in UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class HtxAuth(httpx.Auth):
    """Adds the signature v2 parameters and ``Signature`` to the query when sent."""

    def __init__(self, api_key: Secret, secret: Secret, now: Callable[[], float]) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now = now

    def __repr__(self) -> str:
        return "HtxAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        params = dict(parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True))
        params.update(
            {
                "AccessKeyId": self._api_key.get(),
                "SignatureMethod": "HmacSHA256",
                "SignatureVersion": "2",
                "Timestamp": timestamp(self._now()),
            }
        )
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        signature = sign(
            self._secret.get(), presign(request.method, request.url.host, path, params)
        )
        query = "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))
        request.url = with_query(request.url, f"{query}&Signature={encode(signature)}")
        yield request


# ----------------------------------------------------------------------------- responses


class KeyInfo(BaseModel):
    """One entry of ``data``. ``permission`` is required: without it the security rules have
    nothing to stand on."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    accessKey: StrictStr
    permission: StrictStr
    ipAddresses: StrictStr | None = None
    createTime: StrictInt | None = None
    validDays: Any = None
    #: The key's own status; ``normal`` is the one documented working value.
    status: StrictStr | None = None


# ----------------------------------------------------------------------------- adapter


class HtxAdapter(AdapterBase, settings_model=HtxSettings, key_model=HtxKey):
    """Audits HTX keys. One instance per process, shared by every HTX key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", API_KEY_PATH), ("GET", ACCOUNTS_PATH)}
    )
    #: Empty: exchange-apis.md documents no HTX header reporting a per-IP used weight.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: Counted as requests: every call costs 1 (``/v1/account/accounts``: 100 times/2s).
    weights: ClassVar[Mapping[str, int]] = {API_KEY_PATH: 1, ACCOUNTS_PATH: 1}

    _settings: HtxSettings

    #: The accounts call is the audit's *extras*: the key's details come first, and the daemon
    #: reads the accounts only from spare budget (keymon check reads them always).
    extras_paths: ClassVar[frozenset[str]] = frozenset({ACCOUNTS_PATH})

    async def audit(self, key: HtxKey) -> KeyFacts:
        """The key's permissions, IP binding and creation time, in keymon's vocabulary, and
        the spot account's state."""
        api_key = key.api_key.get()
        auth = HtxAuth(key.api_key, key.api_secret, self._clock)
        data = await self._query(API_KEY_PATH, {"uid": key.uid, "accessKey": api_key}, auth)
        facts = self._facts(data, api_key)
        if not self._settings.trading_status:
            return facts
        return await self._with_extras(
            key.name, facts, lambda facts: self._trading_readiness(facts, auth)
        )

    async def _trading_readiness(self, facts: KeyFacts, auth: httpx.Auth) -> KeyFacts:
        """The facts with the account's state; a failure of the call is kept beside the facts
        (``trading_status_error``), never raised."""
        try:
            data = await self._query(ACCOUNTS_PATH, {}, auth)
            return replace(facts, account_status=account_status(data))
        except ExchangeError as exc:
            return self._trading_status_failed(facts, exc.to_audit_error())

    async def _query(self, path: str, params: dict[str, str], auth: httpx.Auth) -> Any:
        response = await self._send("GET", path, params=params, auth=auth)
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise ExchangeRateLimited(
                "htx: HTTP 429, too many requests", exchange=NAME, retry_after=retry_after
            )
        if status >= 500:
            raise ExchangeUnavailable(f"htx: HTTP {status}", exchange=NAME)
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            if status in (401, 403):
                raise ExchangeAuthError(f"htx: HTTP {status}: the key is rejected", exchange=NAME)
            raise self._unreadable(path, response)
        body_error = _body_error(body, status)
        if body_error is not None:
            raise body_error
        if status != httpx.codes.OK:
            raise ExchangeBadResponse(f"htx: {path} answered HTTP {status}", exchange=NAME)
        return body.get("data")

    def _facts(self, data: Any, api_key: str) -> KeyFacts:
        if not isinstance(data, list):
            raise ExchangeBadResponse(
                f"htx: {API_KEY_PATH} answered without a list of keys", exchange=NAME
            )
        entry = next(
            (e for e in data if isinstance(e, dict) and e.get("accessKey") == api_key), None
        )
        if entry is None:
            raise ExchangeBadResponse(
                f"htx: {API_KEY_PATH} did not list the calling key ({len(data)} entries)",
                exchange=NAME,
            )
        try:
            info = KeyInfo.model_validate(entry)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"htx: {API_KEY_PATH} answered an unexpected shape ({fields})", exchange=NAME
            ) from None
        ip_list = parse_ips(info.ipAddresses)
        created = (
            datetime.fromtimestamp(info.createTime / 1000, UTC)
            if info.createTime is not None and info.createTime > 0
            else None
        )
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=permissions(info.permission),
            ip_restricted=bool(ip_list),
            ip_list=ip_list,
            created_at=created,
            deadlines=(),  # validDays is kept raw: see the module docstring
            key_locked=None if info.status is None else info.status.lower() != "normal",
        )


def _body_error(body: Mapping[str, Any], status: int) -> ExchangeError | None:
    """The error a v2 (``code``/``message``) or v1 (``status``/``err-code``) body carries."""
    if body.get("status") == "error":
        code = str(body.get("err-code", ""))
        msg = str(body.get("err-msg", ""))[:300]
    elif "code" in body and body.get("code") != SUCCESS:
        code = str(body.get("code"))
        msg = str(body.get("message", ""))[:300]
    else:
        return None
    detail = f"htx {code}: {msg or 'no message'}"
    if code in RATE_LIMIT_CODES:
        return ExchangeRateLimited(f"{detail} (rate limited)", exchange=NAME, code=code)
    if code in UNAVAILABLE_CODES:
        return ExchangeUnavailable(f"{detail} (HTX is under maintenance)", exchange=NAME, code=code)
    if code in KEY_REJECTED_CODES:
        return ExchangeAuthError(
            f"htx rejects the key ({detail}): the signature is not valid (wrong secret?)",
            exchange=NAME,
            code=code,
        )
    if status in (401, 403):
        return ExchangeAuthError(f"htx rejects the key ({detail})", exchange=NAME, code=code)
    return ExchangeBadResponse(f"{detail} (HTTP {status})", exchange=NAME, code=code)


class Account(BaseModel):
    """One entry of ``/v1/account/accounts`` ``data`` (see the module docstring)."""

    model_config = ConfigDict(extra="allow")

    id: StrictInt | None = None
    type: StrictStr
    subtype: StrictStr | None = None
    state: StrictStr


def account_status(data: Any) -> str | None:
    """The spot account's ``state``, quoted, followed by the locked margin accounts (module
    docstring); None when the list has no spot account."""
    if not isinstance(data, list):
        raise ExchangeBadResponse(
            f"htx: {ACCOUNTS_PATH} answered without a list of accounts", exchange=NAME
        )
    try:
        accounts = [Account.model_validate(entry) for entry in data]
    except ValidationError as exc:
        fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()}))
        raise ExchangeBadResponse(
            f"htx: {ACCOUNTS_PATH} answered an unexpected shape ({fields})", exchange=NAME
        ) from None
    spot = next((a for a in accounts if a.type == SPOT_ACCOUNT), None)
    if spot is None:
        return None
    status = spot.state[:50]
    locked = [
        f"{a.type} account {a.id if a.id is not None else '?'}"
        + (f" ({a.subtype[:30]})" if a.subtype else "")
        for a in accounts
        if a.type in MARGIN_ACCOUNTS and a.state.strip().lower() == LOCKED_STATE
    ]
    if locked:
        shown = ", ".join(locked[:5]) + (f" and {len(locked) - 5} more" if len(locked) > 5 else "")
        status += f"; also locked: {shown}"
    return status


def permissions(value: str) -> dict[str, bool]:
    """``permission`` (comma string) -> keymon permissions; unknown values are kept raw (True).

    The string is the key's whole set, so a mapped permission that is absent is observed off.
    ``read`` is on whatever the string says: the key has just read its own details.
    """
    values = [v.strip() for v in value.split(",") if v.strip()]
    result: dict[str, bool] = {"read": True, "spot_trade": False, "withdraw": False}
    for item in values:
        mapped = PERMISSION_VALUES.get(item)
        if mapped is not None:
            result[mapped] = True
        else:
            result[item] = True
            if item not in _unknown_perms_logged:
                _unknown_perms_logged.add(item)
                log.info("unmapped_permission", exchange=NAME, permission=item)
    if "trade" not in values:
        for name in TRADE_COVERS:
            result[name] = False
    return result


def parse_ips(value: str | None) -> tuple[str, ...]:
    """``ipAddresses`` is a comma string; empty or absent means no IP binding."""
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())
