"""XT.com: the key's own settings from the user-center API (xt-com/xt-api, "User Center").

XT documents ``GET /v4/user/account/api-key``, "Query user's apiKey (applicable to master and
sub account)" (xt-com/xt-api ``_user_center_apikey/queryUserApiKey.md``), signed like every
other XT call with the ``validate-*`` headers of the key itself: so a key reads its own
settings there, and keymon audits XT keys by introspection, as it does Binance's. The answer
lists the account's keys; keymon keeps the entry whose ``accessKey`` is the calling key and
drops every other entry unread.

Fields (the doc's example answer): ``roleScopes`` (the key's permission codes), ``bindIps``
(comma-separated; ``""`` or ``null`` means no binding), ``isLock`` (0 not locked, 1 locked),
``createTime`` (``"2023-02-17 05:41:43"``; XT states no time zone, keymon reads UTC),
``userAccountLevel`` (1 master account, 2 sub-account), ``keyName``, ``tags``, ``updateTime``,
and **``secretKey``**: XT's example answer carries every key's secret. keymon drops it (and the
access key) before anything else sees the entry; it is never kept, logged or exported.

Permission codes (the create/modify pages, "roleScopes"): ``QUERY`` -> read, ``TRADE`` ("spot
and margin trade") -> spot_trade and margin_trade, ``LEVER_LOAN`` ("margin pledged", borrowing)
-> margin_loan, ``FUTURE`` -> futures_trade, ``WITHDRAW`` -> withdraw, ``TRANSFER`` (XT's
transfers between an account's business systems and between its sub-accounts) ->
internal_transfer and universal_transfer. ``roleScopes`` is read as the key's whole set: a code
that is absent is observed off. The query page's example still shows the older combined form
``QUERY_TRADE`` ("trade is enabled") and names ``QUERY_NO_TRADE`` ("trade is not enabled");
both are read as those codes. A code keymon does not know is kept under its raw name and
logged once. ``isLock`` is the fact ``key_locked`` (rule ``key_locked``), ``userAccountLevel``
the fact ``account_kind`` (1 master, 2 sub).

Signing (XT "Signature generation"): lowercase hex HMAC-SHA256, under the secret, of ``X + Y``;
``X`` is ``validate-algorithms=HmacSHA256&validate-appkey=<key>&validate-recvwindow=<ms>&
validate-timestamp=<ms>``, ``Y`` is ``#<METHOD>#<path>``, then ``#<query>`` (pairs sorted by
key) and ``#<body>`` when present; the five ``validate-*`` headers carry the values and the
signature. The user-center API lives on ``https://api.xt.com`` (its "REST API" page), not on the
spot host ``sapi.xt.com``; it documents no server-time endpoint, so keymon stamps with this
host's clock and reads an ``AUTH_105`` ("outdated message": older than
``exchanges.xt.recv_window`` or more than 1 s ahead) as clock skew.

Errors (XT's own tables, ``_documentation/errorCode.md`` and
``_user_center_documentation/errorCode.md``): answers are ``{"rc", "mc", "ma", "result"}``
(rc 0 success; rc 1 with the code in ``mc``). ``AUTH_101`` key does not exist, ``AUTH_102``
not activated, ``AUTH_103`` signature, ``AUTH_104`` unbound IP (not named), ``AUTH_106``
beyond the key's permissions, ``NO_OPERATION_PERMISSION`` (the account may not use this
call) and ``COMMON_001`` (user does not exist) reject the key; ``AUTH_105`` is clock skew;
``AUTH_001``..``AUTH_007`` (a header keymon always sends missing or malformed) are keymon's own
malformed request; ``COMMON_002`` (system busy) and HTTP 500/502/503 are the exchange being
unavailable, HTTP 429 a rate limit, HTTP 404 "interface does not exist" (most likely
``base_url`` pointing at the spot host).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, urlencode

import httpx
import structlog

from keymon.config_base import (
    LIVENESS_MAX_WEIGHT_PER_MINUTE,
    Duration,
    KeyBase,
    RecvWindowSettings,
    Secret,
    WeightPerMinute,
)
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeClockError,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import parse_retry_after
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts

# ----------------------------------------------------------------------------- configuration

#: XT's user-center API (GET /v4/user/account/api-key), not the spot host sapi.xt.com.
XT_BASE_URL = "https://api.xt.com"
XT_RECV_WINDOW = timedelta(seconds=5)
XT_MAX_RECV_WINDOW = timedelta(seconds=60)


class XtSettings(RecvWindowSettings):
    """``exchanges.xt:``. ``base_url`` is XT's user-center host, where a key reads its own
    settings; ``recv_window`` is ``validate-recvwindow``."""

    base_url: str = XT_BASE_URL
    recv_window: Duration = XT_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class XtKey(KeyBase):
    """An XT.com key: API key (XT's appkey / accessKey) and HMAC secret."""

    exchange: Literal["xt"]


log = structlog.get_logger(__name__)

NAME: Final = "xt"
API_KEY_PATH: Final = "/v4/user/account/api-key"
ALGORITHM: Final = "HmacSHA256"

#: roleScopes code -> the keymon permissions it grants (module docstring).
ROLE_SCOPES: Final[Mapping[str, tuple[str, ...]]] = {
    "QUERY": ("read",),
    "TRADE": ("spot_trade", "margin_trade"),
    "LEVER_LOAN": ("margin_loan",),
    "FUTURE": ("futures_trade",),
    "WITHDRAW": ("withdraw",),
    "TRANSFER": ("internal_transfer", "universal_transfer"),
}
#: The older combined values the query page's example documents.
LEGACY_SCOPES: Final[Mapping[str, tuple[str, ...]]] = {
    "QUERY_TRADE": ("QUERY", "TRADE"),
    "QUERY_NO_TRADE": ("QUERY",),
}
#: Fields of an entry keymon never keeps (secrets, and the full API key).
DROPPED_FIELDS: Final = frozenset({"secretKey", "accessKey"})

#: XT ``mc`` codes -> (what they mean for the audit, the cause an operator reads).
REJECTED: Final = "rejected"
IP_REFUSED: Final = "ip_refused"
CLOCK: Final = "clock"
MALFORMED: Final = "malformed"
UNAVAILABLE: Final = "unavailable"
CODES: Final[Mapping[str, tuple[str, str]]] = {
    "AUTH_001": (MALFORMED, "missing request header validate-appkey"),
    "AUTH_002": (MALFORMED, "missing request header validate-timestamp"),
    "AUTH_003": (MALFORMED, "missing request header validate-recvwindow"),
    "AUTH_004": (MALFORMED, "bad request header validate-recvwindow"),
    "AUTH_005": (MALFORMED, "missing request header validate-algorithms"),
    "AUTH_006": (MALFORMED, "bad request header validate-algorithms"),
    "AUTH_007": (MALFORMED, "missing request header validate-signature"),
    "AUTH_101": (REJECTED, "XT does not know this API key (deleted?)"),
    "AUTH_102": (
        REJECTED,
        "the key is not activated (disabled, frozen or expired: XT does not say which)",
    ),
    "AUTH_103": (REJECTED, "the signature is not valid: wrong secret"),
    "AUTH_104": (IP_REFUSED, "this egress IP is not bound to the key"),
    "AUTH_105": (CLOCK, "the request is outdated: its timestamp is outside recvwindow"),
    "AUTH_106": (REJECTED, "the call exceeds the key's permissions"),
    "NO_OPERATION_PERMISSION": (
        REJECTED,
        "the account may not read its API keys through XT's user-center API",
    ),
    "COMMON_001": (REJECTED, "the user the key belongs to does not exist"),
    "COMMON_002": (UNAVAILABLE, "system busy"),
}

_unknown_scopes_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


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


# ----------------------------------------------------------------------------- parsing


def permissions(value: Any) -> dict[str, bool]:
    """``roleScopes`` -> keymon permissions. The value is the key's whole set (a comma string,
    or a list): every mapped permission starts off; unknown codes are kept raw (True).

    Raises:
        ValueError: when ``value`` is neither a string nor a list of strings.
    """
    if isinstance(value, str):
        tokens = [t for t in value.replace(";", ",").replace(" ", ",").split(",") if t]
    elif isinstance(value, list) and all(isinstance(t, str) for t in value):
        tokens = [t.strip() for t in value if t.strip()]
    else:
        raise ValueError("roleScopes is neither a string nor a list of codes")
    result = {name: False for names in ROLE_SCOPES.values() for name in names}
    for token in tokens:
        codes = _codes(token.upper())
        if codes is None:
            result[token] = True
            if token not in _unknown_scopes_logged:
                _unknown_scopes_logged.add(token)
                log.info("unmapped_permission", exchange=NAME, permission=token)
            continue
        for code in codes:
            for name in ROLE_SCOPES[code]:
                result[name] = True
    return result


def _codes(token: str) -> tuple[str, ...] | None:
    """The known codes one token stands for, or None (``QUERY_TRADE`` is two)."""
    if token in ROLE_SCOPES:
        return (token,)
    if token in LEGACY_SCOPES:
        return LEGACY_SCOPES[token]
    # Codes joined with "_" (the example's form), matched greedily (LEVER_LOAN has one too).
    parts = token.split("_")
    found: list[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and f"{parts[i]}_{parts[i + 1]}" in ROLE_SCOPES:
            found.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        elif parts[i] in ROLE_SCOPES:
            found.append(parts[i])
            i += 1
        else:
            return None
    return tuple(found) or None


def parse_ips(value: Any) -> tuple[str, ...]:
    """``bindIps``: a comma string (or a list); empty or null means no IP binding."""
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    raise ValueError("bindIps is neither a string nor a list")


def parse_time(value: Any) -> datetime | None:
    """``createTime`` (``"2023-02-17 05:41:43"``, maybe with milliseconds), read as UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    for pattern in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


# ----------------------------------------------------------------------------- adapter


class XtAdapter(AdapterBase, settings_model=XtSettings, key_model=XtKey):
    """Audits XT.com keys by introspection. One instance per process, shared by every key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset({("GET", API_KEY_PATH)})
    #: Empty: XT documents no header reporting a used weight.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: XT documents no limit for the user-center call; keymon counts each call as 1.
    weights: ClassVar[Mapping[str, int]] = {API_KEY_PATH: 1}
    #: No server-time endpoint on the user-center host: keymon stamps with the local clock.
    time_path: ClassVar[str | None] = None

    _settings: XtSettings

    async def audit(self, key: XtKey) -> KeyFacts:
        """The key's permissions, IP binding and creation time, in keymon's vocabulary."""
        recv_window_ms = int(self._settings.recv_window.total_seconds() * 1000)
        auth = XtAuth(key.api_key, key.api_secret, self.now_ms, recv_window_ms)
        response = await self._send("GET", API_KEY_PATH, auth=auth)
        result = self._result(response)
        return self._facts(result, key.api_key.get())

    def _result(self, response: httpx.Response) -> Any:
        status = response.status_code
        try:
            body: Any = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        # XT's table of HTTP statuses comes first: 429 and 5xx mean what they say whatever
        # the envelope (a rate-limited answer carries rc 1 and mc "429").
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
            raise ExchangeRateLimited(
                f"xt: HTTP 429, too many requests (retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                retry_after=retry_after,
            )
        if status >= 500:
            raise ExchangeUnavailable(f"xt: HTTP {status}", exchange=NAME)
        if isinstance(body, dict) and body.get("rc") not in (None, 0):
            raise self._code_error(body, status)
        if status == 404:
            raise ExchangeBadResponse(
                f"xt: {API_KEY_PATH} answered HTTP 404 (interface does not exist): XT serves its "
                "user-center API on https://api.xt.com; check exchanges.xt.base_url",
                exchange=NAME,
            )
        if status != httpx.codes.OK:
            raise ExchangeBadResponse(f"xt: {API_KEY_PATH} answered HTTP {status}", exchange=NAME)
        if not isinstance(body, dict):
            raise self._unreadable(API_KEY_PATH, response)
        return body.get("result")

    def _code_error(self, body: Mapping[str, Any], status: int) -> ExchangeError:
        code = body.get("mc")
        details = body.get("ma")
        message = ""
        if isinstance(details, list):
            message = "; ".join(str(d) for d in details if isinstance(d, str | int | float))
        code_text = str(code) if code is not None else "rc=" + str(body.get("rc"))
        detail = f"xt {code_text}: {message[:300] or 'no message'}"
        known = CODES.get(code_text)
        if known is None:
            if status >= 500:
                return ExchangeUnavailable(detail, exchange=NAME, code=code_text)
            return ExchangeBadResponse(
                f"{detail} (HTTP {status}; a code keymon does not know)",
                exchange=NAME,
                code=code_text,
            )
        kind, cause = known
        if kind in (REJECTED, IP_REFUSED):
            return ExchangeAuthError(
                f"xt rejects the key ({detail}): {cause}", exchange=NAME, code=code_text
            )
        if kind == CLOCK:
            return ExchangeClockError(
                f"{detail} ({cause}; keymon stamps with this host's clock, as XT's user-center "
                "API has no server time to sync with: check the host's NTP)",
                exchange=NAME,
                code=code_text,
            )
        if kind == UNAVAILABLE:
            return ExchangeUnavailable(f"{detail} ({cause})", exchange=NAME, code=code_text)
        return ExchangeBadResponse(
            f"{detail} ({cause}; XT refused keymon's request as malformed, which says nothing "
            "about the key)",
            exchange=NAME,
            code=code_text,
        )

    def _facts(self, result: Any, api_key: str) -> KeyFacts:
        if not isinstance(result, list):
            raise ExchangeBadResponse(
                f"xt: {API_KEY_PATH} answered without a list of keys", exchange=NAME
            )
        found = next(
            (e for e in result if isinstance(e, dict) and e.get("accessKey") == api_key), None
        )
        if found is None:
            raise ExchangeBadResponse(
                f"xt: {API_KEY_PATH} did not list the calling key ({len(result)} entries)",
                exchange=NAME,
            )
        # The secret (and the full key) leave the entry before anything else reads it.
        entry = {k: v for k, v in found.items() if k not in DROPPED_FIELDS}
        try:
            granted = permissions(entry.get("roleScopes"))
            ip_list = parse_ips(entry.get("bindIps"))
        except ValueError as exc:
            raise ExchangeBadResponse(
                f"xt: {API_KEY_PATH} answered an unexpected shape ({exc})", exchange=NAME
            ) from None
        lock = entry.get("isLock")
        # isLock: XT's lock of the key (key_locked); userAccountLevel 1 master, 2 sub.
        key_locked = bool(lock) if isinstance(lock, bool) or lock in (0, 1) else None
        level = entry.get("userAccountLevel")
        account_kind = {1: "master", 2: "sub"}.get(level) if isinstance(level, int) else None
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=granted,
            ip_restricted=bool(ip_list),
            ip_list=ip_list,
            created_at=parse_time(entry.get("createTime")),
            deadlines=(),  # XT shows no expiry
            key_locked=key_locked,
            account_kind=account_kind,
        )
