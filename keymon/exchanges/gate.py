"""Gate (APIv4): the key's own facts (exchange-apis.md §2.4).

Two endpoints. ``GET /api/v4/account/detail`` describes *the calling key*: its IP whitelist
(``ip_whitelist``, an array) and pair restriction, but no permissions. ``GET
/api/v4/account/main_keys`` lists every key of the main account with ``perms``, ``state`` and
``created_at``; the key is masked (``c5dcfbf1f3a7*****``), so keymon finds its own entry by the
unmasked prefix. The permission that endpoint needs is unconfirmed: when Gate refuses it (or its
answer has no single matching entry), keymon reports the IP facts only and leaves permissions
unknown. The entry's ``state`` (official SDK model ``SubAccountKey``: 1 normal; 2 and 3 frozen
and locked, the SDK versions name them in either order) is ``key_locked``, its ``last_access``
``last_used_at``.

``FORBIDDEN`` ("No permission" in Gate's error label list) on ``account/detail`` comes after
authentication: the key is valid but lacks the ``account`` read permission (a Gate permission of
its own, SDK model ``SubAccountKeyPerms``: "account: account information"). That is not a dead
key: the audit succeeds as *liveness only* (the key is accepted, nothing about it is visible),
never ``key_rejected``.

Signing (Gate APIv4 "Authentication"): ``hex(HMAC-SHA512(secret, METHOD + "\\n" + path + "\\n"
+ query + "\\n" + hex(SHA512(body)) + "\\n" + timestamp))`` with headers ``KEY``,
``Timestamp`` (Unix seconds) and ``SIGN``. :class:`GateAuth` adds them when the request is
sent. The timestamp is the local clock plus the offset measured on ``GET /api/v4/spot/time``
(``server_time``, ms); a ``REQUEST_EXPIRED`` answer (60 s window) forces one re-sync and one
retry before the audit fails with ``clock_skew``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from keymon.config_base import ExchangeSettingsBase, KeyBase, Secret, WeightPerMinute
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

GATE_BASE_URL = "https://api.gateio.ws"
#: Gate documents no weight for ``account/detail`` or ``account/main_keys`` keymon can rely on;
#: keymon allows itself 60 requests a minute (each audit costs two or three).
GATE_MAX_WEIGHT_PER_MINUTE = 60


class GateSettings(ExchangeSettingsBase):
    """``exchanges.gate:``. No recv_window: a Gate timestamp must lie within 60 s of the
    server's time."""

    base_url: str = GATE_BASE_URL
    max_weight_per_minute: WeightPerMinute = GATE_MAX_WEIGHT_PER_MINUTE


class GateKey(KeyBase):
    """A Gate (APIv4) key: API key and secret, no passphrase."""

    exchange: Literal["gate"]


log = structlog.get_logger(__name__)

NAME: Final = "gate"
TIME_PATH: Final = "/api/v4/spot/time"
DETAIL_PATH: Final = "/api/v4/account/detail"
MAIN_KEYS_PATH: Final = "/api/v4/account/main_keys"

#: ``perms[].name`` with ``read_only: false`` -> keymon permission (exchange-apis.md §2.4).
#: ``wallet`` write is read as "may transfer or withdraw" until verified on a real key.
WRITE_PERMS: Final[Mapping[str, str]] = {
    "spot": "spot_trade",
    "margin": "margin_trade",
    "futures": "futures_trade",
    "delivery": "futures_trade",
    "options": "options_trade",
    "unified": "margin_loan",
    "loan": "margin_loan",
    "wallet": "withdraw",
}
#: Mapped permissions observed off when absent from ``perms`` (the key's whole list). How Gate
#: shows a withdrawal right is unconfirmed: a writable ``wallet`` (or a perm literally named
#: ``withdraw``) turns ``withdraw`` on; with neither it is read as off.
OBSERVED_OFF: Final = frozenset(
    {"spot_trade", "margin_trade", "futures_trade", "options_trade", "margin_loan", "withdraw"}
)

# Error labels (exchange-apis.md §2.4, from ccxt's gate map: third-party).
KEY_REJECTED_LABELS: Final = frozenset(
    {
        "INVALID_KEY",
        "INVALID_CREDENTIALS",
        "INVALID_SIGNATURE",
        "IP_FORBIDDEN",
        "MISSING_REQUIRED_HEADER",
        "ACCOUNT_LOCKED",
    }
)
#: Labels meaning "this key may not call this endpoint": main_keys falls back to detail.
NOT_ALLOWED_LABELS: Final = frozenset({"FORBIDDEN", "READ_ONLY"})
REQUEST_EXPIRED: Final = "REQUEST_EXPIRED"
IP_FORBIDDEN: Final = "IP_FORBIDDEN"
RATE_LIMIT_LABELS: Final = frozenset({"TOO_MANY_REQUESTS"})
EMPTY_BODY_SHA512: Final = hashlib.sha512(b"").hexdigest()
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]+:[0-9A-Fa-f]*)\b")

_unknown_perms_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def prehash(method: str, path: str, query: str, body: str, timestamp: str) -> str:
    """Gate's pre-hash: ``METHOD\\npath\\nquery\\nhex(SHA512(body))\\ntimestamp``."""
    body_hash = hashlib.sha512(body.encode()).hexdigest()
    return "\n".join((method.upper(), path, query, body_hash, timestamp))


def sign(secret: str, text: str) -> str:
    """Hex of the HMAC-SHA512 digest of ``text`` under ``secret``."""
    return hmac.new(secret.encode(), text.encode(), hashlib.sha512).hexdigest()


class GateAuth(httpx.Auth):
    """Adds ``KEY``, ``Timestamp`` and ``SIGN`` when the request is sent."""

    requires_request_body = True

    def __init__(self, api_key: Secret, secret: Secret, now_s: Callable[[], int]) -> None:
        self._api_key = api_key
        self._secret = secret
        self._now_s = now_s

    def __repr__(self) -> str:
        return "GateAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(self._now_s())
        text = prehash(
            request.method,
            request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
            request.url.query.decode("ascii"),
            request.content.decode(),
            timestamp,
        )
        request.headers["KEY"] = self._api_key.get()
        request.headers["Timestamp"] = timestamp
        request.headers["SIGN"] = sign(self._secret.get(), text)
        yield request


# ----------------------------------------------------------------------------- responses


class ErrorBody(BaseModel):
    """A Gate error: ``{"label": ..., "message": ...}`` with a 4xx/5xx status."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    label: StrictStr
    message: str = ""


class AccountDetail(BaseModel):
    """``GET /api/v4/account/detail``. ``ip_whitelist`` may be absent or null (no binding)."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    ip_whitelist: list[StrictStr] | None = None


class Perm(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)
    name: StrictStr
    read_only: StrictBool = False


class MainKey(BaseModel):
    """One entry of ``GET /api/v4/account/main_keys``; ``key`` is masked."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    key: StrictStr
    perms: list[Perm] | None = None
    state: int | None = None
    created_at: int | str | None = None
    last_access: int | str | None = None


# ----------------------------------------------------------------------------- adapter


class GateAdapter(AdapterBase, settings_model=GateSettings, key_model=GateKey):
    """Audits Gate keys. One instance per process, shared by every Gate key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", DETAIL_PATH), ("GET", MAIN_KEYS_PATH)}
    )
    #: Empty on purpose: exchange-apis.md documents no Gate header reporting a used weight.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: keymon counts requests: every call costs 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, DETAIL_PATH: 1, MAIN_KEYS_PATH: 1}
    #: An audit is two requests (detail, main_keys), granted together by the budget.
    audit_weight: int = 2
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a server_time"

    _settings: GateSettings

    async def audit(self, key: GateKey) -> KeyFacts:
        """The key's IP whitelist (account/detail) and, if Gate shows them, its permissions
        and creation time (its own entry in account/main_keys)."""
        auth = GateAuth(key.api_key, key.api_secret, self.now_s)
        try:
            detail = await self._get_synced(DETAIL_PATH, auth=auth)
        except ExchangeAuthError as exc:
            if exc.code not in NOT_ALLOWED_LABELS:
                raise
            # Authenticated, but without the account read permission: accepted, not visible.
            log.info("account_detail_not_allowed", exchange=NAME, label=str(exc.code))
            return KeyFacts(coverage=Coverage.LIVENESS)
        entry: MainKey | None = None
        try:
            keys = await self._get(MAIN_KEYS_PATH, auth=auth)
        except (ExchangeAuthError, ExchangeBadResponse) as exc:
            log.info("main_keys_unavailable", exchange=NAME, reason=str(exc)[:200])
        else:
            entry = own_entry(keys, key.api_key.get())
        return self._facts(detail, entry)

    def parse_server_time(self, body: Any) -> float | None:
        server = body.get("server_time") if isinstance(body, dict) else None
        if isinstance(server, bool) or not isinstance(server, int | float):
            return None
        return float(server)

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        response = await self._send("GET", path, auth=auth)
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise self._http_error(response, path) from None
        if response.status_code != httpx.codes.OK:
            try:
                failure = ErrorBody.model_validate(body)
            except ValidationError:
                raise self._http_error(response, path) from None
            raise self._label_error(failure, response)
        return body

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer keymon cannot read as JSON or as a Gate error body."""
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return ExchangeRateLimited(
                "gate: HTTP 429, too many requests", exchange=NAME, retry_after=retry_after
            )
        if status >= 500:
            return ExchangeUnavailable(f"gate: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "JSON")
        return ExchangeBadResponse(f"gate: {path} answered HTTP {status}", exchange=NAME)

    def _label_error(self, error: ErrorBody, response: httpx.Response) -> ExchangeError:
        label = error.label
        message = error.message[:300]
        detail = f"gate {label}: {message or 'no message'}"
        if label in RATE_LIMIT_LABELS or response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return ExchangeRateLimited(
                f"{detail} (rate limited)", exchange=NAME, code=label, retry_after=retry_after
            )
        if label == REQUEST_EXPIRED:
            return self._clock_error(detail, label)
        if label in KEY_REJECTED_LABELS:
            match = _IP.search(message) if label == IP_FORBIDDEN else None
            refused_ip = match.group(1) if match else None
            return ExchangeAuthError(
                _rejection_message(label, detail, refused_ip),
                exchange=NAME,
                code=label,
                refused_ip=refused_ip,
            )
        if label in NOT_ALLOWED_LABELS:
            return ExchangeAuthError(
                f"{detail} (the key may not call this endpoint)", exchange=NAME, code=label
            )
        if response.status_code >= 500:
            return ExchangeUnavailable(detail, exchange=NAME, code=label)
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=label
        )

    def _facts(self, data: Any, entry: MainKey | None) -> KeyFacts:
        try:
            detail = AccountDetail.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"gate: {DETAIL_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        ip_list = tuple(ip.strip() for ip in detail.ip_whitelist or () if ip.strip())
        perms: dict[str, bool] = {}
        created_at: datetime | None = None
        last_used: datetime | None = None
        locked: bool | None = None
        if entry is not None:
            if entry.perms is not None:
                perms = permissions(entry.perms)
            created_at = _timestamp(entry.created_at)
            last_used = _timestamp(entry.last_access)
            locked = None if entry.state not in (1, 2, 3) else entry.state != 1
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=perms,
            ip_restricted=bool(ip_list),
            ip_list=ip_list,
            created_at=created_at,
            deadlines=(),  # Gate shows no expiry for a key
            key_locked=locked,
            last_used_at=last_used,
        )


def own_entry(data: Any, api_key: str) -> MainKey | None:
    """The one ``main_keys`` entry whose unmasked prefix the configured key starts with;
    None when there is none, or more than one (the prefix is then ambiguous)."""
    items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    found: list[MainKey] = []
    for item in items:
        try:
            entry = MainKey.model_validate(item)
        except ValidationError:
            continue
        prefix = entry.key.split("*", 1)[0]
        if prefix and api_key.startswith(prefix) and ("*" in entry.key or entry.key == api_key):
            found.append(entry)
    if len(found) != 1:
        log.info("main_keys_no_single_match", exchange=NAME, matches=len(found))
        return None
    return found[0]


def permissions(perms: list[Perm]) -> dict[str, bool]:
    """``perms`` -> keymon permissions; unknown write perms are kept raw (True).

    ``perms`` is the key's whole list, so a mapped trade permission that is absent is observed
    off (False); ``withdraw`` is on only with a writable ``wallet`` (or ``withdraw``).
    """
    result: dict[str, bool] = {"read": True}  # the key just read its own account
    for permission in OBSERVED_OFF:
        result.setdefault(permission, False)
    for perm in perms:
        name = perm.name.strip().lower()
        if perm.read_only:
            result["read"] = True
            continue
        mapped = WRITE_PERMS.get(name)
        if mapped is not None:
            result[mapped] = True
        else:
            result[perm.name] = True
            if perm.name not in _unknown_perms_logged:
                _unknown_perms_logged.add(perm.name)
                log.info("unmapped_permission", exchange=NAME, permission=perm.name)
    return result


def _timestamp(value: int | str | None) -> datetime | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        return None
    seconds = value / 1000 if value > 10**11 else value
    return datetime.fromtimestamp(seconds, tz=UTC)


def _rejection_message(label: str, detail: str, refused_ip: str | None) -> str:
    causes = {
        "INVALID_KEY": "the key is unknown to Gate (deleted?)",
        "INVALID_CREDENTIALS": "the key is unknown to Gate (deleted?)",
        "INVALID_SIGNATURE": "the signature is not valid: wrong secret",
        "IP_FORBIDDEN": "this egress IP is not in the key's IP whitelist",
        "MISSING_REQUIRED_HEADER": "a signing header is missing",
        "ACCOUNT_LOCKED": "the account is locked",
    }
    text = f"gate rejects the key ({detail}): {causes[label]}"
    if refused_ip:
        text += f"; Gate refused egress IP {refused_ip}"
    return text
