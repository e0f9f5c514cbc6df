"""Binance: the key's own restrictions from ``GET /sapi/v1/account/apiRestrictions``.

Signing (exchange-apis.md §1.2): the query string, directly followed by the body, is signed
with HMAC-SHA256 (hex, "system generated" keys), Ed25519 or RSA PKCS#1 v1.5/SHA-256 (base64,
"self-generated" keys). :class:`BinanceAuth` adds ``recvWindow`` and ``timestamp`` and signs
inside httpx's auth flow, i.e. when the request is sent, never when it is queued: a request
that waited for the weight budget still carries a fresh timestamp.

The timestamp is the local clock plus the offset measured on ``GET /api/v3/time``, refreshed
every ``time_sync_interval``; a ``-1021`` answer forces one re-sync and one retry before the
audit fails with ``clock_skew``.

Binance does not show a key its own IP list (§1.6), so ``ip_list`` is "not visible" and
``untrusted_ip`` is never evaluated for Binance keys; ``ipRestrict`` still is.

Trading readiness (``exchanges.binance.trading_status``, on by default): after
``apiRestrictions`` each audit reads two more USER_DATA endpoints of IP weight 1, signed the
same way and spent from the same budget:

* ``GET /sapi/v1/account/apiTradingStatus``
  (https://developers.binance.com/docs/wallet/account/account-api-trading-status; the OpenAPI
  file https://github.com/binance/binance-api-swagger/blob/master/spot_api.yaml, path
  ``/sapi/v1/account/apiTradingStatus``): ``data.isLocked`` -> ``trading_locked``,
  ``data.plannedRecoverTime`` (ms; 0: none) -> ``trading_recover_at``,
  ``data.triggerCondition`` {``GCR``, ``IFER``, ``UFR``} -> ``trading_trigger``, and
  ``data.indicators`` {symbol: [{``i`` indicator, ``c`` order count, ``v`` current value,
  ``t`` trigger value}]} -> ``trading_indicators``, the worst symbol per indicator kind. The
  documentation page's example has no ``indicators`` (then: not shown), the OpenAPI file's has
  them; both are read.
* ``GET /sapi/v1/account/status``
  (https://developers.binance.com/docs/wallet/account/account-status; same OpenAPI file):
  ``data`` -> ``account_status`` (``"Normal"`` when all is well).

These two reads are the audit's *extras*: the key's restrictions are its security-critical
part and always come first. In the daemon they are sent only when the weight budget grants
their weight at once while leaving room for the first round and for headroom
(:meth:`~keymon.budget.WeightBudget.extras`); otherwise they are skipped for this audit (log
event ``trading_status_skipped``, ``reason=budget``): not an error, the last known trading
facts stay (stale, never "lifted"). ``keymon check`` always reads them.

A failure of either call never fails the audit and never hides the key's restriction facts:
the facts of ``apiRestrictions`` stand, the trading facts are "not read", and
``trading_status_error`` carries the reason (log event ``trading_status_failed``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, Self
from urllib.parse import quote

import httpx
import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from keymon.config_base import (
    Boolean,
    Duration,
    KeyBase,
    RecvWindowSettings,
    Secret,
    WeightPerMinute,
)
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import (
    parse_retry_after,
    utc_from_ms,
    with_query,
)
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import (
    TRADING_INDICATORS,
    AuditError,
    Coverage,
    Deadline,
    KeyFacts,
    Reason,
    TradingIndicator,
)

# ----------------------------------------------------------------------------- configuration

BINANCE_BASE_URL = "https://api.binance.com"
#: A tenth of Binance's 12,000/min SAPI IP limit: the bots share the IP and come first.
BINANCE_MAX_WEIGHT_PER_MINUTE = 1200
BINANCE_RECV_WINDOW = timedelta(seconds=5)
BINANCE_MAX_RECV_WINDOW = timedelta(seconds=60)


class BinanceSettings(RecvWindowSettings):
    """``exchanges.binance:``."""

    base_url: str = BINANCE_BASE_URL
    max_recv_window: ClassVar[timedelta] = BINANCE_MAX_RECV_WINDOW
    recv_window: Duration = BINANCE_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = BINANCE_MAX_WEIGHT_PER_MINUTE
    #: Read the account's API trading lock and status with every audit (two more calls of
    #: weight 1: ``apiTradingStatus`` and ``account/status``).
    trading_status: Boolean = True


BinanceKeyType = Literal["hmac", "ed25519", "rsa"]


class BinanceKey(KeyBase):
    """A Binance key. ``key_type`` defaults to what the secret is: a PEM private key is
    Ed25519 or RSA ("self-generated"), anything else is an HMAC secret ("system generated")."""

    exchange: Literal["binance"]
    key_type: BinanceKeyType | None = None

    @field_validator("api_secret")
    @classmethod
    def _readable_key_material(cls, value: Secret) -> Secret:
        if value.resolved:  # validate-config --no-secrets: no key material to read
            detect_binance_key_type(value.get())  # a PEM that is no usable key fails here
        return value

    @model_validator(mode="after")
    def _key_type_matches(self) -> Self:
        if not self.api_secret.resolved:
            return self
        detected = detect_binance_key_type(self.api_secret.get())
        if self.key_type is None:
            object.__setattr__(self, "key_type", detected)
        elif self.key_type != detected:
            raise PydanticCustomError(
                "key_type",
                "api_secret is {detected} key material but key_type is {key_type}",
                {"detected": detected, "key_type": self.key_type},
            )
        return self

    @property
    def resolved_key_type(self) -> BinanceKeyType:
        assert self.key_type is not None  # set by the validator
        return self.key_type


def detect_binance_key_type(secret: str) -> BinanceKeyType:
    """``hmac`` for a plain secret; ``ed25519``/``rsa`` for a PEM private key."""
    if "-----BEGIN" not in secret:
        return "hmac"
    try:
        # Imported here: only self-generated (PEM) keys need cryptography, and its import
        # costs every short-lived `keymon check` start-up time and memory.
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(secret.encode(), password=None)
    except (ValueError, TypeError):
        # Never echo the material: the exception text may quote it.
        raise PydanticCustomError(
            "secret", "looks like PEM but is not an unencrypted private key"
        ) from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    raise PydanticCustomError("secret", "is a PEM private key of a type Binance does not use")


log = structlog.get_logger(__name__)

NAME: Final = "binance"
TIME_PATH: Final = "/api/v3/time"
RESTRICTIONS_PATH: Final = "/sapi/v1/account/apiRestrictions"
TRADING_STATUS_PATH: Final = "/sapi/v1/account/apiTradingStatus"
ACCOUNT_STATUS_PATH: Final = "/sapi/v1/account/status"

#: apiRestrictions flag -> keymon permission (PRODUCT.md "Permissions").
PERMISSION_FLAGS: Final[Mapping[str, str]] = {
    "enableReading": "read",
    "enableSpotAndMarginTrading": "spot_trade",
    "enableMargin": "margin_loan",
    "enableFutures": "futures_trade",
    "enableVanillaOptions": "options_trade",
    "enablePortfolioMarginTrading": "portfolio_margin",
    "enableWithdrawals": "withdraw",
    "enableInternalTransfer": "internal_transfer",
    "permitsUniversalTransfer": "universal_transfer",
    "enableFixApiTrade": "fix_trade",
    "enableFixReadOnly": "fix_read",
}

# errors.md, §1.9 of exchange-apis.md.
KEY_REJECTED_CODES: Final = frozenset({-1002, -1022, -2008, -2014, -2015})
UNAVAILABLE_CODES: Final = frozenset({-1000, -1001, -1006, -1007, -1008, -1016})
INVALID_TIMESTAMP: Final = -1021
TOO_MANY_REQUESTS: Final = -1003
_REQUEST_IP = re.compile(r"request ip:\s*([0-9A-Fa-f:.]+)")

_unknown_flags_logged: set[str] = set()
_unknown_indicators_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing

Signer = Callable[[bytes], str]


def hmac_signer(secret: str) -> Signer:
    """HMAC-SHA256 over the payload, lowercase hex (Binance "system generated" keys)."""
    key = secret.encode()

    def sign(payload: bytes) -> str:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()

    return sign


def pem_signer(pem: str) -> Signer:
    """Ed25519 or RSA (PKCS#1 v1.5, SHA-256) over the payload, base64 (self-generated keys)."""
    # Imported here, as in config: HMAC keys never pay for cryptography.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(pem.encode(), password=None)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        ed_key = private

        def sign_ed25519(payload: bytes) -> str:
            return base64.b64encode(ed_key.sign(payload)).decode()

        return sign_ed25519
    if isinstance(private, rsa.RSAPrivateKey):
        rsa_key = private

        def sign_rsa(payload: bytes) -> str:
            signature = rsa_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
            return base64.b64encode(signature).decode()

        return sign_rsa
    raise TypeError("unsupported private key type")  # config validation excludes this


def signer_for(key: BinanceKey) -> Signer:
    """The signer that matches the key's type."""
    if key.resolved_key_type == "hmac":
        return hmac_signer(key.api_secret.get())
    return pem_signer(key.api_secret.get())


class BinanceAuth(httpx.Auth):
    """Adds ``X-MBX-APIKEY``, ``recvWindow``, ``timestamp`` and ``signature`` when sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, signer: Signer, now_ms: Callable[[], int], recv_window_ms: int
    ) -> None:
        self._api_key = api_key
        self._sign = signer
        self._now_ms = now_ms
        self._recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return "BinanceAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        existing = request.url.query.decode("ascii")
        query = f"recvWindow={self._recv_window_ms}&timestamp={self._now_ms()}"
        if existing:
            query = f"{existing}&{query}"
        # totalParams is the query string directly followed by the body (no '&'), signed
        # exactly as sent (exchange-apis.md §1.2, vector B3).
        signature = self._sign(query.encode("ascii") + request.content)
        query += "&signature=" + quote(signature, safe="")
        request.url = with_query(request.url, query)
        request.headers["X-MBX-APIKEY"] = self._api_key.get()
        yield request


# ----------------------------------------------------------------------------- responses


class ServerTime(BaseModel):
    """``GET /api/v3/time``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    serverTime: StrictInt


class ApiRestrictions(BaseModel):
    """``GET /sapi/v1/account/apiRestrictions`` (exchange-apis.md §1.4).

    ``ipRestrict`` and ``enableWithdrawals`` are required: a body without the two facts the
    security rules stand on is a bad response, not a key with nothing to report. The other
    flags are optional (Binance added some over the years): absent means "not visible".
    """

    model_config = ConfigDict(extra="allow", defer_build=True)

    ipRestrict: StrictBool
    enableWithdrawals: StrictBool
    createTime: StrictInt | None = None
    tradingAuthorityExpirationTime: StrictInt | None = None


class TradingIndicatorEntry(BaseModel):
    """One entry of ``apiTradingStatus`` ``data.indicators.<symbol>`` (OpenAPI file:
    ``i`` indicator, ``c`` count of orders, ``v`` current value, ``t`` trigger value)."""

    model_config = ConfigDict(extra="allow")

    i: str
    c: StrictInt | None = None
    v: float
    t: float


class TradingStatusData(BaseModel):
    """``GET /sapi/v1/account/apiTradingStatus`` ``data`` (see the module docstring)."""

    model_config = ConfigDict(extra="allow")

    isLocked: StrictBool
    plannedRecoverTime: StrictInt | None = None
    triggerCondition: dict[str, float] | None = None
    indicators: dict[str, list[TradingIndicatorEntry]] | None = None
    updateTime: StrictInt | None = None


class TradingStatus(BaseModel):
    """``GET /sapi/v1/account/apiTradingStatus``."""

    model_config = ConfigDict(extra="allow")
    data: TradingStatusData


class AccountStatus(BaseModel):
    """``GET /sapi/v1/account/status``: ``{"data": "Normal"}``."""

    model_config = ConfigDict(extra="allow")
    data: str


# ----------------------------------------------------------------------------- adapter


class BinanceAdapter(AdapterBase, settings_model=BinanceSettings, key_model=BinanceKey):
    """Audits Binance keys. One instance per process, shared by every Binance key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("GET", TIME_PATH),
            ("GET", RESTRICTIONS_PATH),
            ("GET", TRADING_STATUS_PATH),
            ("GET", ACCOUNT_STATUS_PATH),
        }
    )
    #: Binance's used-weight headers and the per-IP limits behind them (§1.8).
    ip_limit_headers: ClassVar[Mapping[str, int]] = {
        "X-SAPI-USED-IP-WEIGHT-1M": 12_000,
        "X-MBX-USED-WEIGHT-1M": 6_000,
    }
    #: Request weight per endpoint (§1.7; the trading-status pages): all are IP weight 1.
    weights: ClassVar[Mapping[str, int]] = {
        TIME_PATH: 1,
        RESTRICTIONS_PATH: 1,
        TRADING_STATUS_PATH: 1,
        ACCOUNT_STATUS_PATH: 1,
    }
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a serverTime"

    _settings: BinanceSettings
    _weight_used: int | None = None

    extras_paths: ClassVar[frozenset[str]] = frozenset({TRADING_STATUS_PATH, ACCOUNT_STATUS_PATH})

    @property
    def weight_used(self) -> int | None:
        return self._weight_used

    async def audit(self, key: BinanceKey) -> KeyFacts:
        """The key's restrictions, mapped onto keymon's vocabulary."""
        auth = BinanceAuth(
            key.api_key,
            signer_for(key),
            self.now_ms,
            int(self._settings.recv_window.total_seconds() * 1000),
        )
        body = await self._get_synced(RESTRICTIONS_PATH, auth=auth)
        facts = self._facts(body)
        if not self._settings.trading_status:
            return facts
        return await self._with_extras(
            key.name, facts, lambda facts: self._trading_readiness(facts, auth)
        )

    async def _trading_readiness(self, facts: KeyFacts, auth: httpx.Auth) -> KeyFacts:
        """The facts with the account's trading lock and status; a failure of either call is
        kept beside the facts (``trading_status_error``), never raised."""
        error: AuditError | None = None
        read: dict[str, Any] = {}
        try:
            body = await self._get_synced(TRADING_STATUS_PATH, auth=auth)
            read.update(_trading_facts(body))
        except ExchangeError as exc:
            error = exc.to_audit_error()
        # After a 429 or a 418 the second read is not sent: keymon does not press on into a
        # limit the bots share (it would wait out the Retry-After, or earn a ban).
        if error is None or error.reason not in (Reason.RATE_LIMITED, Reason.BANNED):
            try:
                body = await self._get_synced(ACCOUNT_STATUS_PATH, auth=auth)
                read["account_status"] = _account_status(body)
            except ExchangeError as exc:
                error = error or exc.to_audit_error()
        facts = replace(facts, **read) if read else facts
        return facts if error is None else self._trading_status_failed(facts, error)

    def parse_server_time(self, body: Any) -> float | None:
        try:
            return ServerTime.model_validate(body).serverTime
        except ValidationError:
            return None

    async def _get(self, path: str, *, auth: httpx.Auth | None = None) -> Any:
        response = await self._send("GET", path, auth=auth)
        if response.status_code != httpx.codes.OK:
            raise self._error_for(response)
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise self._unreadable(path, response) from None

    def _note_response(self, response: httpx.Response) -> None:
        """Keep the used weight Binance reports (before the gate reads the response)."""
        for header in ("X-SAPI-USED-IP-WEIGHT-1M", "X-MBX-USED-WEIGHT-1M"):
            value = response.headers.get(header)
            if value is not None and value.isdigit():
                self._weight_used = int(value)
                return

    def _error_for(self, response: httpx.Response) -> ExchangeError:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
        code, msg = _error_body(response)
        detail = f"binance {code}: {msg}" if code is not None else f"binance: HTTP {status}"
        if status == 418:
            return ExchangeRateLimited(
                f"{detail} (IP banned; retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                reason=Reason.BANNED,
                code=code,
                retry_after=retry_after,
            )
        if status == 429 or code == TOO_MANY_REQUESTS:
            return ExchangeRateLimited(
                f"{detail} (rate limited; retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                code=code,
                retry_after=retry_after,
            )
        if code in KEY_REJECTED_CODES:
            match = _REQUEST_IP.search(msg or "")
            refused_ip = match.group(1) if match else None
            return ExchangeAuthError(
                _rejection_message(code, msg, refused_ip),
                exchange=NAME,
                code=code,
                refused_ip=refused_ip,
            )
        if code == INVALID_TIMESTAMP:
            return self._clock_error(detail, code)
        if status >= 500 or code in UNAVAILABLE_CODES:
            return ExchangeUnavailable(detail, exchange=NAME, code=code)
        if status == 403 and code is None:
            return ExchangeUnavailable(
                "binance: HTTP 403, the request was blocked by Binance's web application firewall",
                exchange=NAME,
            )
        return ExchangeBadResponse(f"{detail} (HTTP {status})", exchange=NAME, code=code)

    def _facts(self, body: Any) -> KeyFacts:
        try:
            restrictions = ApiRestrictions.model_validate(body)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "body" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"binance: {RESTRICTIONS_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        permissions: dict[str, bool] = {}
        for flag, value in body.items():
            if flag in PERMISSION_FLAGS:
                if isinstance(value, bool):
                    permissions[PERMISSION_FLAGS[flag]] = value
            elif isinstance(value, bool) and flag != "ipRestrict":
                # A flag Binance added after this adapter was written: keep it, under its raw
                # name, and say so once.
                permissions[flag] = value
                if flag not in _unknown_flags_logged:
                    _unknown_flags_logged.add(flag)
                    log.warning("unknown_permission_flag", exchange=NAME, flag=flag)
        deadlines: tuple[Deadline, ...] = ()
        expires = restrictions.tradingAuthorityExpirationTime
        if expires:  # absent, null or 0: no deadline known
            deadlines = (Deadline("trading_authority", utc_from_ms(expires)),)
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=permissions,
            ip_restricted=restrictions.ipRestrict,
            ip_list=None,  # Binance does not show a key its own IP list
            created_at=utc_from_ms(restrictions.createTime) if restrictions.createTime else None,
            deadlines=deadlines,
        )


def _trading_facts(body: Any) -> dict[str, Any]:
    """``apiTradingStatus`` as KeyFacts fields (see the module docstring)."""
    try:
        data = TradingStatus.model_validate(body).data
    except ValidationError as exc:
        raise _shape_error(TRADING_STATUS_PATH, exc) from None
    recover = data.plannedRecoverTime
    indicators: tuple[TradingIndicator, ...] | None = None
    if data.indicators is not None:
        worst: dict[str, TradingIndicator] = {}
        for symbol, entries in data.indicators.items():
            for entry in entries:
                kind = entry.i.upper()
                if kind not in TRADING_INDICATORS:
                    if kind not in _unknown_indicators_logged:
                        _unknown_indicators_logged.add(kind)
                        log.warning("unknown_trading_indicator", exchange=NAME, indicator=kind)
                    continue
                found = TradingIndicator(kind, symbol, entry.v, entry.t)
                held = worst.get(kind)
                if held is None or (found.ratio or 0.0) > (held.ratio or 0.0):
                    worst[kind] = found
        indicators = tuple(worst[k] for k in TRADING_INDICATORS if k in worst)
    return {
        "trading_locked": data.isLocked,
        # 0 (the documented "not locked" value) or absent: no recovery time.
        "trading_recover_at": utc_from_ms(recover) if recover else None,
        "trading_trigger": dict(data.triggerCondition)
        if data.triggerCondition is not None
        else None,
        "trading_indicators": indicators,
    }


def _account_status(body: Any) -> str:
    """``account/status`` ``data``, e.g. ``Normal``."""
    try:
        return AccountStatus.model_validate(body).data[:200]
    except ValidationError as exc:
        raise _shape_error(ACCOUNT_STATUS_PATH, exc) from None


def _shape_error(path: str, exc: ValidationError) -> ExchangeBadResponse:
    fields = ", ".join(sorted({".".join(map(str, e["loc"])) or "body" for e in exc.errors()}))
    return ExchangeBadResponse(
        f"binance: {path} answered an unexpected shape ({fields})", exchange=NAME
    )


def _error_body(response: httpx.Response) -> tuple[int | None, str | None]:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    msg = body.get("msg")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        msg[:300] if isinstance(msg, str) else None,
    )


def _rejection_message(code: int, msg: str | None, refused_ip: str | None) -> str:
    causes = {
        -2015: "the key was deleted, this IP is not on its whitelist, or it lacks the permission",
        -2014: "the API key is malformed (check the configured value)",
        -2008: "the key is unknown to Binance (deleted?)",
        -1022: "the signature is not valid: wrong secret, or the wrong key type",
        -1002: "the key is not authorized for this request",
    }
    text = f"binance rejects the key ({code}: {msg or 'no message'}): {causes[code]}"
    if refused_ip:
        text += f"; Binance refused egress IP {refused_ip}"
    return text
