"""Bitget: the key's own facts from ``GET /api/v2/spot/account/info`` (exchange-apis.md §2.5).

Signing (Bitget docs "Signature"): ``base64(HMAC-SHA256(secret, timestamp + METHOD +
requestPath + ("?" + queryString if any) + body))``, sent with ``ACCESS-KEY``, ``ACCESS-SIGN``,
``ACCESS-TIMESTAMP`` (ms) and ``ACCESS-PASSPHRASE`` (the key's passphrase, in plain text).
:class:`BitgetAuth` adds them inside httpx's auth flow, i.e. when the request is sent, so a
request that waited for the budget still carries a fresh timestamp.

The timestamp is the local clock plus the offset measured on ``GET /api/v2/public/time``
(``data.serverTime``), refreshed every ``time_sync_interval``; a ``40008`` (timestamp expired)
answer forces one re-sync and one retry before the audit fails with ``clock_skew``.

Bitget shows a key its IP whitelist (``ips``, one string) and its permission codes
(``authorities``). It shows no creation time or expiry for the key: ``regisTime`` is the
*account's* registration time, so ``created_at`` stays unknown and there are no deadlines.

Checked against the official page https://www.bitget.com/api-doc/spot/account/Get-Account-Info
(tests/conformance/test_bitget.py). Its example answer carries ``"authorities": ["trade",
"readonly"]``, codes its own field table does not list (the table lists ``stow``, ``coow``,
``wwow``, ...). The docs do not say which products ``trade`` covers, nor whether a key shown in
that vocabulary would show its withdrawal right at all. So a code outside the documented table
makes every mapped permission that is not positively shown *not visible* (absent), never off:
``trade`` is kept raw (on), and spot, margin, futures, withdraw and transfer stay unknown.
exchange-apis.md §2.5 mapped the example as "nothing enabled", which made a trading key read as
unable to trade and let a forbidden-futures rule pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

import httpx
import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from keymon.config_base import ExchangeSettingsBase, KeyBase, Secret, SecretRef, whole_number
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import (
    parse_retry_after,
)
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts

# ----------------------------------------------------------------------------- configuration

BITGET_BASE_URL = "https://api.bitget.com"
#: Bitget counts requests: ``GET /api/v2/spot/account/info`` allows 1 request/s per UID
#: (exchange-apis.md §2.5). The budget counts weight per minute, so 60 is the most keymon may
#: ever spend there; keymon keeps that ceiling as its default (one audit per second at most).
BITGET_MAX_WEIGHT_PER_MINUTE = 60


class BitgetSettings(ExchangeSettingsBase):
    """``exchanges.bitget:``. No recv_window: Bitget's signature has none."""

    base_url: str = BITGET_BASE_URL
    max_weight_per_minute: Annotated[int, BeforeValidator(whole_number), Field(gt=0, le=60)] = (
        BITGET_MAX_WEIGHT_PER_MINUTE
    )


class BitgetKey(KeyBase):
    """A Bitget key: the passphrase chosen when the key was created is sent with every
    request (``ACCESS-PASSPHRASE``), so it is required."""

    exchange: Literal["bitget"]
    passphrase: SecretRef


log = structlog.get_logger(__name__)

NAME: Final = "bitget"
TIME_PATH: Final = "/api/v2/public/time"
ACCOUNT_INFO_PATH: Final = "/api/v2/spot/account/info"
SUCCESS: Final = "00000"

#: ``authorities`` code -> keymon permission (exchange-apis.md §4's table).
AUTHORITY_CODES: Final[Mapping[str, str]] = {
    "stow": "spot_trade",
    "smow": "margin_trade",
    "coow": "futures_trade",
    "cpow": "futures_trade",
    "wwow": "withdraw",
    "wtow": "universal_transfer",
}
#: Read-only codes of the official field table (English and Chinese pages), and the official
#: example's ``readonly``.
READ_CODES: Final = frozenset(
    {"coor", "cpor", "stor", "smor", "ttor", "wtor", "taxr", "chor", "p2pr", "pllr", "readonly"}
)
#: Documented write codes with no keymon permission (copy trading, sub-account management,
#: P2P, pledge loans, tax): kept under their raw name, and they hide nothing.
OTHER_DOCUMENTED_CODES: Final = frozenset({"ttow", "chow", "p2pw", "p2p", "pllw", "taxw"})

# Error codes. Bitget's own error page (api-doc/common/error-code/restapi) was not in the
# stored copies we could read; the meanings below are those of ccxt's bitget map (third-party),
# which quotes Bitget's messages: 40004 "Request timestamp expired", 40005 "Invalid
# ACCESS_TIMESTAMP", 40008 "Request timestamp expired", 40006 "Invalid ACCESS_KEY", 40009/40010
# "sign signature error", 40012 "apikey/password is incorrect", 40013 "User status is
# abnormal", 40014 "Incorrect permissions", 40018 "Invalid IP", 40037 "Apikey does not exist".
KEY_REJECTED_CODES: Final = frozenset(
    {"40006", "40009", "40010", "40012", "40013", "40014", "40018", "40037"}
)
IP_REFUSED: Final = "40018"
TIMESTAMP_EXPIRED: Final = "40008"
#: Timestamp refusals: expired (40004, 40008) or not accepted (40005).
TIMESTAMP_CODES: Final = frozenset({"40004", "40005", "40008"})
#: Bitget answers a rate-limited request with HTTP 429 and code ``429``.
RATE_LIMIT_CODES: Final = frozenset({"429"})
#: Third-party report: a Unified Trading Account is sent to the v3 API with ``40085``.
UTA_CODE: Final = "40085"
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]+:[0-9A-Fa-f]*)\b")

_unknown_codes_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def prehash(timestamp: str, method: str, request_path: str, query: str, body: str) -> str:
    """Bitget's pre-hash: ``timestamp + METHOD + requestPath + ("?" + query if any) + body``."""
    return timestamp + method.upper() + request_path + (f"?{query}" if query else "") + body


def sign(secret: str, text: str) -> str:
    """Base64 of the HMAC-SHA256 digest of ``text`` under ``secret``."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class BitgetAuth(httpx.Auth):
    """Adds ``ACCESS-KEY``, ``-SIGN``, ``-TIMESTAMP`` and ``-PASSPHRASE`` when sent."""

    requires_request_body = True

    def __init__(
        self, api_key: Secret, secret: Secret, passphrase: Secret, now_ms: Callable[[], int]
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._passphrase = passphrase
        self._now_ms = now_ms

    def __repr__(self) -> str:
        return "BitgetAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(self._now_ms())
        text = prehash(
            timestamp,
            request.method,
            request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
            request.url.query.decode("ascii"),
            request.content.decode(),
        )
        request.headers["ACCESS-KEY"] = self._api_key.get()
        request.headers["ACCESS-SIGN"] = sign(self._secret.get(), text)
        request.headers["ACCESS-TIMESTAMP"] = timestamp
        request.headers["ACCESS-PASSPHRASE"] = self._passphrase.get()
        request.headers["locale"] = "en-US"
        yield request


# ----------------------------------------------------------------------------- responses


class Envelope(BaseModel):
    """Every v2 answer: ``{code, msg, requestTime, data}``; ``code`` is ``"00000"`` on success."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    code: StrictStr
    msg: str = ""
    requestTime: int | None = None
    data: Any = None


class AccountInfo(BaseModel):
    """``data`` of ``GET /api/v2/spot/account/info``. ``authorities`` is required: a body
    without it says nothing the security rules can stand on."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    authorities: list[StrictStr]
    ips: StrictStr | None = None


# ----------------------------------------------------------------------------- adapter


class BitgetAdapter(AdapterBase, settings_model=BitgetSettings, key_model=BitgetKey):
    """Audits Bitget keys. One instance per process, shared by every Bitget key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", ACCOUNT_INFO_PATH)}
    )
    #: Empty on purpose: exchange-apis.md documents no Bitget response header reporting a
    #: per-IP used weight, so the budget has nothing to learn from Bitget's headers.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: Bitget counts requests: every call costs 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, ACCOUNT_INFO_PATH: 1}
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a serverTime"

    _settings: BitgetSettings

    async def audit(self, key: BitgetKey) -> KeyFacts:
        """The key's permissions and IP whitelist, mapped onto keymon's vocabulary."""
        auth = BitgetAuth(key.api_key, key.api_secret, key.passphrase, self.now_ms)
        data = await self._get_synced(ACCOUNT_INFO_PATH, auth=auth)
        return self._facts(data)

    def parse_server_time(self, body: Any) -> float | None:
        server = body.get("serverTime") if isinstance(body, dict) else None
        if not isinstance(server, str | int) or not str(server).isdigit():
            return None
        return int(server)

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        response = await self._send("GET", path, auth=auth)
        try:
            envelope = Envelope.model_validate(json.loads(response.content))
        except (ValueError, UnicodeDecodeError, ValidationError):
            raise self._http_error(response, path) from None
        if envelope.code != SUCCESS:
            raise self._code_error(envelope, response)
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response, path)
        return envelope.data

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer without a readable envelope (or a non-200 with code 00000)."""
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return ExchangeRateLimited(
                "bitget: HTTP 429, too many requests (1/s on the account-info endpoint)",
                exchange=NAME,
                retry_after=retry_after,
            )
        if status >= 500:
            return ExchangeUnavailable(f"bitget: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "a v2 envelope")
        return ExchangeBadResponse(f"bitget: {path} answered HTTP {status}", exchange=NAME)

    def _code_error(self, envelope: Envelope, response: httpx.Response) -> ExchangeError:
        code = envelope.code
        msg = envelope.msg[:300]
        detail = f"bitget {code}: {msg or 'no message'}"
        if code in RATE_LIMIT_CODES or response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return ExchangeRateLimited(
                f"{detail} (rate limited)", exchange=NAME, code=code, retry_after=retry_after
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
        if code == UTA_CODE:
            return ExchangeBadResponse(
                f"{detail} (a Unified Trading Account? Bitget serves those on its v3 API,"
                " which keymon does not use yet)",
                exchange=NAME,
                code=code,
            )
        if response.status_code >= 500:
            return ExchangeUnavailable(detail, exchange=NAME, code=code)
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=code
        )

    def _facts(self, data: Any) -> KeyFacts:
        try:
            info = AccountInfo.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"bitget: {ACCOUNT_INFO_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        ip_list = parse_ips(info.ips)
        return KeyFacts(
            account_kind=account_kind(data),
            coverage=Coverage.INTROSPECTION,
            permissions=permissions(info.authorities),
            ip_restricted=bool(ip_list),
            ip_list=ip_list,
            created_at=None,  # regisTime is the account's registration, not the key's
            deadlines=(),  # Bitget shows no expiry for a key
        )


def permissions(authorities: list[str]) -> dict[str, bool]:
    """``authorities`` codes -> keymon permissions; codes without one are kept raw (True).

    When every code is in the official table, the list is the key's whole set, so a mapped
    permission whose codes are absent is observed off (False). A code the table does not list
    (the official example's ``trade``) may cover any of them: then only what is positively
    shown is on, and the rest is not visible (absent), never off.
    """
    result: dict[str, bool] = {"read": True}  # every key can read its own account info
    undocumented = False
    for raw in authorities:
        code = raw.strip().lower()
        mapped = AUTHORITY_CODES.get(code)
        if mapped is not None:
            result[mapped] = True
        elif code in READ_CODES:
            result["read"] = True
        elif code in OTHER_DOCUMENTED_CODES:
            result[raw] = True
        else:
            undocumented = True
            result[raw] = True
            if raw not in _unknown_codes_logged:
                _unknown_codes_logged.add(raw)
                log.info("unmapped_permission", exchange=NAME, permission=raw)
    if not undocumented:
        for permission in AUTHORITY_CODES.values():
            result.setdefault(permission, False)
    return result


def account_kind(data: Mapping[str, Any]) -> str | None:
    """``parentId`` is "Main account user ID" (official field table). Our reading: equal to
    ``userId`` on a main account (its own main account), another UID on a sub-account. None when
    either is missing or masked."""
    user, parent = str(data.get("userId", "")), str(data.get("parentId", ""))
    if not (user.isdigit() and parent.isdigit()):
        return None
    return "master" if int(user) == int(parent) else "sub"


def parse_ips(value: str | None) -> tuple[str, ...]:
    """``ips`` is one string; several IPs are assumed comma-separated (unconfirmed), and
    whitespace or semicolons are accepted as separators too. Empty means no whitelist."""
    if not value:
        return ()
    return tuple(part for part in re.split(r"[,;\s]+", value) if part)


def _rejection_message(code: str, detail: str, refused_ip: str | None) -> str:
    causes = {
        "40006": "the key is unknown to Bitget (deleted?)",
        "40009": "the signature is not valid: wrong secret",
        "40010": "the signature is not valid: wrong secret",
        "40012": "the key or its passphrase is wrong",
        "40013": "Bitget reports the user's status as abnormal (account frozen?)",
        "40037": "the key does not exist at Bitget (deleted?)",
        "40014": "the key lacks the permission for this request (Spot read)",
        "40018": "this egress IP is not in the key's IP whitelist",
    }
    text = f"bitget rejects the key ({detail}): {causes[code]}"
    if refused_ip:
        text += f"; Bitget refused egress IP {refused_ip}"
    return text
