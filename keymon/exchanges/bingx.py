"""BingX: the key's own facts from ``GET /openApi/v1/account/apiPermissions`` (exchange-apis §2.7).

Signing (BingX docs "Signature Authentication", BingX-API/BingX-spot-api-doc): the key goes in
the ``X-BX-APIKEY`` header; the parameters carry ``timestamp`` (ms) and, optionally,
``recvWindow`` (ms; BingX's default and maximum is 5000); ``signature`` is the lowercase hex
HMAC-SHA256 of the exact parameter string sent (the query string directly followed by the body,
no separator between the two) and is appended as the last parameter. :class:`BingxAuth` writes
the parameters in ASCII order of their names, as BingX's examples do, and signs inside httpx's
auth flow, i.e. when the request is sent, so a request that waited for the budget still carries
a fresh timestamp.

BingX refuses a timestamp outside the window (``100421``; ``80014`` "timestamp is invalid"). The
timestamp is the local clock plus the offset measured on ``GET /openApi/swap/v2/server/time``,
refreshed every ``time_sync_interval``; a clock refusal forces one re-sync and one retry before
the audit fails with ``clock_skew``.

**The envelope.** BingX answers ``{"code": 0, "msg": "", "data": {...}}`` (its server-time
example) and an error as a non-zero ``code``; but its own example answer for
``apiPermissions`` is the bare object ``{"apiKey": "", "permissions": [1, 2], "ipAddresses":
[], "note": "demo"}``. keymon reads either: a 200 JSON object without ``code`` from that
endpoint is the data itself.

**What the answer holds.** Two descriptions of this endpoint exist. BingX's own reference (common
"Sub-account" page, "Query user API Key permissions") documents ``data`` as ``{apiKey,
permissions, ipAddresses, note}``: ``permissions`` a list of codes (1 spot trading, 2 read,
3 perpetual futures, 4 universal transfer, 5 withdraw, 7 sub-account internal transfer) and
``ipAddresses`` the key's IP whitelist. exchange-apis.md §2.7, from a third-party rendering,
gives Binance-style flags instead (``ipRestrict``, ``createTime``, ``enableReading``,
``enableSpotAndMarginTrading``, ``enableWithdrawals``, ``enableInternalTransfer``,
``enableFutures``, ``permitsUniversalTransfer``): a superset of what BingX documents for its
older ``/openApi/v1/account/apiRestrictions`` (which has no withdrawal flag). keymon reads
whichever the answer carries: the codes list (the key's whole set: a mapped code that is absent
is observed off), the IP list, the flags (one that is absent is not visible), ``ipRestrict``
(which wins over the list for ``ip_restricted``) and ``createTime``. An answer with neither
``permissions`` nor ``ipRestrict`` is a bad response.

BingX deletes a key bound to no IP that has trading, transfer or sub-account permissions after
14 days without use (IP-bound and read-only keys do not expire). BingX shows no date for it and
keymon's own calls probably count as use, so keymon invents no deadline: it says so in the
``ip_unrestricted`` finding of such a key (:attr:`KeyFacts.ip_unrestricted_note`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from keymon.config_base import Duration, KeyBase, RecvWindowSettings, Secret, WeightPerMinute
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
from keymon.model import Coverage, KeyFacts, Reason

# ----------------------------------------------------------------------------- configuration

BINGX_BASE_URL = "https://open-api.bingx.com"
#: BingX counts requests: ``GET /openApi/v1/account/apiPermissions`` allows 2 requests/s per UID
#: and 300 per 10 s per IP for each endpoint of its group (exchange-apis.md §2.7, BingX docs "Rate
#: limit"). keymon allows itself one request a second, half the per-UID limit.
BINGX_MAX_WEIGHT_PER_MINUTE = 60
#: BingX's default window, and its documented maximum: a request more than 5 s old is refused.
BINGX_RECV_WINDOW = timedelta(seconds=5)
BINGX_MAX_RECV_WINDOW = timedelta(seconds=5)


class BingxSettings(RecvWindowSettings):
    """``exchanges.bingx:``. ``recv_window`` is sent with every signed request; BingX documents
    5 s as both its default and its maximum."""

    base_url: str = BINGX_BASE_URL
    max_recv_window: ClassVar[timedelta] = BINGX_MAX_RECV_WINDOW
    recv_window: Duration = BINGX_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = BINGX_MAX_WEIGHT_PER_MINUTE


class BingxKey(KeyBase):
    """A BingX key: API key and secret, no passphrase. keymon reads only the key's own
    permissions (``GET /openApi/v1/account/apiPermissions``), so no ``uid`` is needed."""

    exchange: Literal["bingx"]


log = structlog.get_logger(__name__)

NAME: Final = "bingx"
TIME_PATH: Final = "/openApi/swap/v2/server/time"
PERMISSIONS_PATH: Final = "/openApi/v1/account/apiPermissions"
API_KEY_HEADER: Final = "X-BX-APIKEY"

#: ``permissions`` code -> keymon permission (BingX docs, "Query user API Key permissions").
PERMISSION_CODES: Final[Mapping[int, str]] = {
    1: "spot_trade",
    2: "read",
    3: "futures_trade",
    4: "universal_transfer",
    5: "withdraw",
    7: "internal_transfer",
}
#: Binance-style flag -> keymon permission (exchange-apis.md §2.7).
PERMISSION_FLAGS: Final[Mapping[str, str]] = {
    "enableReading": "read",
    "enableSpotAndMarginTrading": "spot_trade",
    "enableFutures": "futures_trade",
    "enableWithdrawals": "withdraw",
    "enableInternalTransfer": "internal_transfer",
    "permitsUniversalTransfer": "universal_transfer",
}
#: Permissions that put a key bound to no IP on BingX's 14-day idle-deletion list ("trading,
#: universal transfer and sub-account management"; withdraw needs an IP binding anyway).
IDLE_DELETION_PERMISSIONS: Final = (
    "spot_trade",
    "futures_trade",
    "universal_transfer",
    "internal_transfer",
    "withdraw",
)
IDLE_DELETION_NOTE: Final = (
    "BingX deletes a key bound to no IP that can trade or transfer after 14 days without use "
    "(keymon's own calls probably count as use, so it is at risk once keymon stops watching it)"
)

SUCCESS: Final = 0
SIGNATURE_FAILED: Final = 100001
NULL_SIGNATURE: Final = 100412
INCORRECT_KEY: Final = 100413
ACCOUNT_ABNORMAL: Final = 100414
IP_NOT_WHITELISTED: Final = 100419
PERMISSION_DENIED: Final = 100004
TIMESTAMP_MISMATCH: Final = 100421
INVALID_PARAMETER: Final = 80014
RATE_LIMITED: Final = 100410
KEY_REJECTED_CODES: Final = frozenset(
    {SIGNATURE_FAILED, INCORRECT_KEY, ACCOUNT_ABNORMAL, IP_NOT_WHITELISTED, PERMISSION_DENIED}
)
#: 100500 "Internal system error", 100503 "Server busy", 80012 "Service unavailable", 101500
#: "RPC timeout" (BingX's common error codes).
UNAVAILABLE_CODES: Final = frozenset({100500, 100503, 80012, 101500})
_REQUEST_IP = re.compile(r"request IP is\s+([0-9A-Fa-f:.]+[0-9A-Fa-f])")
#: A moment in epoch ms inside a message ("will be unblocked after 1727193814249").
_EPOCH_MS = re.compile(r"\b(1\d{12})\b")

_unknown_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def sign(secret: str, payload: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` under ``secret`` (BingX's ``signature``)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_text(query: str, body: str = "") -> str:
    """What BingX signs: the query string directly followed by the body, no separator."""
    return query + body


def parameter_string(pairs: list[tuple[str, str]]) -> str:
    """``key=value`` joined by ``&`` in ASCII order of the names; values as already encoded."""
    return "&".join(f"{k}={v}" for k, v in sorted(pairs, key=lambda kv: kv[0]))


class BingxAuth(httpx.Auth):
    """Adds ``recvWindow``, ``timestamp``, ``signature`` and ``X-BX-APIKEY`` when sent."""

    requires_request_body = True

    def __init__(
        self,
        api_key: Secret,
        secret: Secret,
        now_ms: Callable[[], int],
        recv_window_ms: int | None,
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_ms = now_ms
        self._recv_window_ms = recv_window_ms

    def __repr__(self) -> str:
        return "BingxAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        params: list[tuple[str, str]] = []
        for part in request.url.query.decode("ascii").split("&"):
            if part:
                name, _, value = part.partition("=")
                params.append((name, value))
        if self._recv_window_ms is not None:
            params.append(("recvWindow", str(self._recv_window_ms)))
        params.append(("timestamp", str(self._now_ms())))
        query = parameter_string(params)
        body = request.content.decode("utf-8", "surrogateescape")
        signature = sign(self._secret.get(), signed_text(query, body))
        request.url = with_query(request.url, f"{query}&signature={quote(signature, safe='')}")
        request.headers[API_KEY_HEADER] = self._api_key.get()
        yield request


# ----------------------------------------------------------------------------- responses


class Envelope(BaseModel):
    """Every answer: ``{"code": 0, "msg": "", "data": {...}}``; ``code`` 0 is success."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    code: StrictInt
    msg: str = ""
    data: Any = None


class ApiPermissions(BaseModel):
    """``data`` of ``GET /openApi/v1/account/apiPermissions``, in either shape (module
    docstring). Every field is optional here; :meth:`BingxAdapter._facts` requires one of
    ``permissions`` and ``ipRestrict``."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    permissions: list[StrictInt] | None = None
    ipAddresses: list[StrictStr] | None = None
    ipRestrict: StrictBool | None = None
    createTime: StrictInt | None = None


# ----------------------------------------------------------------------------- adapter


class BingxAdapter(AdapterBase, settings_model=BingxSettings, key_model=BingxKey):
    """Audits BingX keys. One instance per process, shared by every BingX key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", PERMISSIONS_PATH)}
    )
    #: Empty on purpose: BingX's ``X-RateLimit-Requests-Remain``/``-Expire`` headers count one
    #: UID's calls to one endpoint, not a per-IP used weight, so the budget has nothing to learn.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: BingX counts requests: every call costs 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, PERMISSIONS_PATH: 1}
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a serverTime"

    _settings: BingxSettings

    async def audit(self, key: BingxKey) -> KeyFacts:
        """The key's permissions and IP whitelist, mapped onto keymon's vocabulary."""
        auth = BingxAuth(
            key.api_key,
            key.api_secret,
            self.now_ms,
            int(self._settings.recv_window.total_seconds() * 1000),
        )
        data = await self._get_synced(PERMISSIONS_PATH, auth=auth)
        return self._facts(data)

    def parse_server_time(self, body: Any) -> float | None:
        server = body.get("serverTime") if isinstance(body, dict) else None
        if not isinstance(server, int) or isinstance(server, bool):
            return None
        return server

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        response = await self._send("GET", path, auth=auth)
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise self._http_error(response, path) from None
        if (
            path == PERMISSIONS_PATH
            and response.status_code == httpx.codes.OK
            and isinstance(body, dict)
            and "code" not in body
        ):
            # BingX's own example answer for this endpoint is the bare object, without the
            # envelope (module docstring): read it as the data.
            return body
        try:
            envelope = Envelope.model_validate(body)
        except ValidationError:
            raise self._http_error(response, path) from None
        if envelope.code != SUCCESS:
            raise self._code_error(envelope, response)
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response, path)
        return envelope.data

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer without a readable envelope (or a non-200 with code 0)."""
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
        if status == 418:
            return ExchangeRateLimited(
                f"bingx: HTTP 418, this IP is banned (retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                reason=Reason.BANNED,
                retry_after=retry_after,
            )
        if status == 429:
            return ExchangeRateLimited(
                f"bingx: HTTP 429, rate limit (retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                retry_after=retry_after,
            )
        if status == 401:
            return ExchangeAuthError(
                "bingx rejects the request: HTTP 401 (the key or its signature is refused)",
                exchange=NAME,
            )
        if status == 403:
            return ExchangeUnavailable(
                "bingx: HTTP 403 without a BingX answer: blocked in front of the API "
                "(firewall or region)",
                exchange=NAME,
            )
        if status >= 500:
            return ExchangeUnavailable(f"bingx: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "a BingX envelope")
        return ExchangeBadResponse(f"bingx: {path} answered HTTP {status}", exchange=NAME)

    def _code_error(self, envelope: Envelope, response: httpx.Response) -> ExchangeError:
        code = envelope.code
        msg = envelope.msg[:300]
        detail = f"bingx {code}: {msg or 'no message'}"
        if code == RATE_LIMITED:
            retry_after = self._retry_after(msg, response)
            return ExchangeRateLimited(
                f"{detail} (rate limited; retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                code=code,
                retry_after=retry_after,
            )
        if code == TIMESTAMP_MISMATCH or (
            code == INVALID_PARAMETER and (not msg or "timestamp" in msg.lower())
        ):
            return self._clock_error(detail, code)
        if code in KEY_REJECTED_CODES:
            match = _REQUEST_IP.search(msg) if code == IP_NOT_WHITELISTED else None
            refused_ip = match.group(1) if match else None
            return ExchangeAuthError(
                _rejection_message(code, detail, refused_ip),
                exchange=NAME,
                code=code,
                refused_ip=refused_ip,
            )
        if code in UNAVAILABLE_CODES or response.status_code >= 500:
            return ExchangeUnavailable(detail, exchange=NAME, code=code)
        if code in (NULL_SIGNATURE, INVALID_PARAMETER):
            return ExchangeBadResponse(
                f"{detail} (keymon sent a malformed or incomplete signed request)",
                exchange=NAME,
                code=code,
            )
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=code
        )

    def _retry_after(self, msg: str, response: httpx.Response) -> float | None:
        """Seconds until BingX lifts a 100410: from the message's "unblocked after <ms>", the
        ``X-RateLimit-Requests-Expire`` header (ms) or ``Retry-After``."""
        found = _EPOCH_MS.search(msg) or _EPOCH_MS.fullmatch(
            response.headers.get("X-RateLimit-Requests-Expire", "").strip()
        )
        until_ms = int(found.group(1)) if found else None
        if until_ms is not None:
            return max(0.0, until_ms / 1000 - self._clock())
        return parse_retry_after(response.headers.get("Retry-After"), now=self._clock())

    def _facts(self, data: Any) -> KeyFacts:
        try:
            info = ApiPermissions.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"bingx: {PERMISSIONS_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        if info.permissions is None and info.ipRestrict is None:
            raise ExchangeBadResponse(
                f"bingx: {PERMISSIONS_PATH} answered neither permissions nor ipRestrict",
                exchange=NAME,
            )
        assert isinstance(data, dict)
        permissions = _permissions(info.permissions, data)
        ip_list = (
            tuple(e.strip() for e in info.ipAddresses) if info.ipAddresses is not None else None
        )
        if info.ipRestrict is not None:
            ip_restricted: bool | None = info.ipRestrict
        else:
            ip_restricted = None if ip_list is None else bool(ip_list)
        note = None
        if ip_restricted is False and any(permissions.get(p) for p in IDLE_DELETION_PERMISSIONS):
            note = IDLE_DELETION_NOTE
        created = info.createTime
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=permissions,
            ip_restricted=ip_restricted,
            ip_list=ip_list,
            created_at=utc_from_ms(created) if created else None,
            deadlines=(),  # BingX shows no expiry; its 14-day idle deletion has no date
            ip_unrestricted_note=note,
        )


def _permissions(codes: list[int] | None, data: Mapping[str, Any]) -> dict[str, bool]:
    """Codes (the key's whole set) and Binance-style flags, onto keymon's vocabulary."""
    result: dict[str, bool] = {}
    if codes is not None:
        # The list is the whole set: a mapped permission that is absent is off. read is on
        # whatever the list says: the endpoint needs Read, and it has just answered.
        result = dict.fromkeys(PERMISSION_CODES.values(), False)
        result["read"] = True
        for code in codes:
            mapped = PERMISSION_CODES.get(code)
            if mapped is not None:
                result[mapped] = True
            else:
                _keep_unknown(result, str(code))
    for flag, value in data.items():
        if not isinstance(value, bool) or flag == "ipRestrict":
            continue
        mapped = PERMISSION_FLAGS.get(flag)
        if mapped is not None:
            result[mapped] = value or result.get(mapped, False)
        else:
            _keep_unknown(result, flag, value)
    return result


def _keep_unknown(result: dict[str, bool], name: str, value: bool = True) -> None:
    """A permission keymon does not know: kept under its raw name, logged once."""
    result[name] = value
    if name not in _unknown_logged:
        _unknown_logged.add(name)
        log.info("unmapped_permission", exchange=NAME, permission=name)


def _rejection_message(code: int, detail: str, refused_ip: str | None) -> str:
    causes = {
        SIGNATURE_FAILED: "the signature is not valid: wrong secret",
        INCORRECT_KEY: "the key is unknown to BingX (deleted?)",
        ACCOUNT_ABNORMAL: "the account is under BingX's risk control (or lacks KYC)",
        IP_NOT_WHITELISTED: "this egress IP is not in the key's IP whitelist",
        PERMISSION_DENIED: "the key lacks the permission this call needs (Read)",
    }
    text = f"bingx rejects the key ({detail}): {causes[code]}"
    if refused_ip:
        text += f"; BingX refused egress IP {refused_ip}"
    return text
