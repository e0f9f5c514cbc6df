"""KuCoin: the key's own facts from ``GET /api/v1/user/api-key`` (exchange-apis.md §2.3).

Signing (KuCoin docs "Authentication"; universal SDK): ``KC-API-SIGN = base64(HMAC-SHA256(
secret, timestamp + METHOD + endpoint + body))`` where ``endpoint`` carries ``?query`` for a GET.
For key versions 2 and 3 the passphrase is itself signed: ``KC-API-PASSPHRASE =
base64(HMAC-SHA256(secret, passphrase))``. :class:`KucoinAuth` adds the ``KC-API-*`` headers
inside httpx's auth flow, i.e. when the request is sent, so a queued request carries a fresh
timestamp.

The timestamp must lie within 5 s of server time (``400002``). The timestamp is the local clock
plus the offset measured on ``GET /api/v1/timestamp`` (``data`` is the server time in ms),
refreshed every ``time_sync_interval``; a ``400002`` answer forces one re-sync and one retry
before the audit fails with ``clock_skew``.

KuCoin shows a key its IP whitelist, but **masked** (``203.**.154``): the facts carry the masked
entries as they are, and ``untrusted_ip`` matches a masked entry against ``trusted_ips`` on its
visible parts only (see :func:`keymon.policy.rules.masked_could_match`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator, Mapping
from typing import Any, ClassVar, Final, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from keymon.config_base import ExchangeSettingsBase, KeyBase, Secret, SecretRef, WeightPerMinute
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
)
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts

# ----------------------------------------------------------------------------- configuration

KUCOIN_BASE_URL = "https://api.kucoin.com"
#: ``GET /api/v1/user/api-key`` costs 20 in KuCoin's "Management" pool (exchange-apis.md §2.3).
#: The docs give no pool size keymon can rely on; keymon allows itself 30 calls a minute
#: (600 weight), a small share that leaves the rest of the pool to the bots.
KUCOIN_MAX_WEIGHT_PER_MINUTE = 600
#: KuCoin's documented key versions; the universal SDK sends "3".
KUCOIN_KEY_VERSIONS = (2, 3)
KUCOIN_DEFAULT_KEY_VERSION: Literal[2, 3] = 3


class KucoinSettings(ExchangeSettingsBase):
    """``exchanges.kucoin:``. KuCoin has no recv_window: a timestamp must lie within 5 s of
    the server's time."""

    base_url: str = KUCOIN_BASE_URL
    max_weight_per_minute: WeightPerMinute = KUCOIN_MAX_WEIGHT_PER_MINUTE


class KucoinKey(KeyBase):
    """A KuCoin key: API key, secret and the passphrase chosen when the key was created.
    ``key_version`` is the key's API version (2 or 3; the universal SDK sends 3); for both the
    passphrase is sent HMAC-signed."""

    exchange: Literal["kucoin"]
    passphrase: SecretRef
    key_version: Literal[2, 3] = KUCOIN_DEFAULT_KEY_VERSION


log = structlog.get_logger(__name__)

NAME: Final = "kucoin"
TIME_PATH: Final = "/api/v1/timestamp"
API_KEY_PATH: Final = "/api/v1/user/api-key"
OK: Final = "200000"

#: ``permission`` entry -> keymon permissions (exchange-apis.md §4). ``Transfer`` covers
#: withdrawals (KuCoin support article 900006465403), so it maps to ``withdraw``.
PERMISSIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "General": ("read",),
    "Spot": ("spot_trade",),
    "Margin": ("margin_trade", "margin_loan"),
    "Futures": ("futures_trade",),
    "InnerTransfer": ("internal_transfer",),
    "Transfer": ("withdraw",),
}

# Error codes (exchange-apis.md §2.3).
MISSING_HEADERS: Final = "400001"
INVALID_TIMESTAMP: Final = "400002"
KEY_MISSING: Final = "400003"
BAD_PASSPHRASE: Final = "400004"  # noqa: S105 (an error code)
BAD_SIGNATURE: Final = "400005"
IP_REFUSED: Final = "400006"
ACCESS_DENIED: Final = "400007"
USER_FROZEN: Final = "411100"
RATE_LIMITED: Final = "429000"
KEY_REJECTED_CODES: Final = frozenset(
    {MISSING_HEADERS, KEY_MISSING, BAD_PASSPHRASE, BAD_SIGNATURE, IP_REFUSED, ACCESS_DENIED,
     USER_FROZEN}
)  # fmt: skip
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]+:[0-9A-Fa-f]*)\b")

_unknown_entries_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def sign(secret: str, text: str) -> str:
    """base64 of HMAC-SHA256(secret, text): KuCoin's signature and signed passphrase."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class KucoinAuth(httpx.Auth):
    """Adds the ``KC-API-*`` headers when the request is sent."""

    requires_request_body = True

    def __init__(
        self,
        api_key: Secret,
        secret: Secret,
        passphrase: Secret,
        key_version: int,
        now_ms: Callable[[], int],
    ) -> None:
        self._api_key = api_key
        self._secret = secret
        self._passphrase = passphrase
        self._key_version = key_version
        self._now_ms = now_ms

    def __repr__(self) -> str:
        return "KucoinAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(self._now_ms())
        secret = self._secret.get()
        # The endpoint is the path plus ``?query`` exactly as sent; the body as sent.
        endpoint = request.url.raw_path.decode("ascii")
        body = request.content.decode()
        request.headers["KC-API-KEY"] = self._api_key.get()
        request.headers["KC-API-TIMESTAMP"] = timestamp
        request.headers["KC-API-SIGN"] = sign(secret, timestamp + request.method + endpoint + body)
        # Key versions 2 and 3 (the only ones keymon accepts) send the passphrase signed.
        request.headers["KC-API-PASSPHRASE"] = sign(secret, self._passphrase.get())
        request.headers["KC-API-KEY-VERSION"] = str(self._key_version)
        yield request


# ----------------------------------------------------------------------------- responses


class Envelope(BaseModel):
    """Every answer: ``{code, data}`` on success, ``{code, msg}`` on failure."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    code: StrictStr
    msg: str = ""
    data: Any = None


class ApiKeyInfo(BaseModel):
    """``data`` of ``GET /api/v1/user/api-key``. ``permission`` is required: a body without it
    says nothing the security rules can stand on."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    apiKey: StrictStr
    permission: StrictStr
    ipWhitelist: StrictStr | None = None
    createdAt: StrictInt | None = None
    #: Whether the key belongs to the master account (KuCoin's field table).
    isMaster: bool | None = None
    apiVersion: StrictInt | None = None


# ----------------------------------------------------------------------------- adapter


class KucoinAdapter(AdapterBase, settings_model=KucoinSettings, key_model=KucoinKey):
    """Audits KuCoin keys. One instance per process, shared by every KuCoin key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", API_KEY_PATH)}
    )
    #: Empty on purpose: KuCoin's ``gw-ratelimit-limit``/``-remaining``/``-reset`` headers
    #: (names unconfirmed, exchange-apis.md §2.3) report the *remaining* quota of a pool, not a
    #: per-IP used weight, so the budget (which reads used-weight-per-IP headers) has nothing
    #: to learn from them.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: Weight 20 for the key info ("Management" pool); the public timestamp is counted as 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, API_KEY_PATH: 20}
    time_path: ClassVar[str | None] = TIME_PATH
    server_time_field: ClassVar[str] = "a time"

    _settings: KucoinSettings

    async def audit(self, key: KucoinKey) -> KeyFacts:
        """The key's permissions, (masked) IP list and creation time in keymon's vocabulary."""
        auth = KucoinAuth(key.api_key, key.api_secret, key.passphrase, key.key_version, self.now_ms)
        data = await self._get_synced(API_KEY_PATH, auth=auth)
        return self._facts(data, key.api_key.get())

    def parse_server_time(self, body: Any) -> float | None:
        if not isinstance(body, int) or isinstance(body, bool):
            return None
        return body

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        response = await self._send("GET", path, auth=auth)
        try:
            envelope = Envelope.model_validate(json.loads(response.content))
        except (ValueError, UnicodeDecodeError, ValidationError):
            raise self._http_error(response, path) from None
        if envelope.code != OK:
            raise self._code_error(envelope, response)
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response, path)
        return envelope.data

    def _retry_after(self, response: httpx.Response) -> float | None:
        # gw-ratelimit-reset: milliseconds until the pool refills (name unconfirmed, §2.3).
        reset = response.headers.get("gw-ratelimit-reset")
        if reset is not None and reset.isdigit():
            return int(reset) / 1000
        return parse_retry_after(response.headers.get("Retry-After"), now=self._clock())

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer without a readable envelope (or a non-200 with code 200000)."""
        status = response.status_code
        if status == 429:
            retry_after = self._retry_after(response)
            return ExchangeRateLimited(
                f"kucoin: HTTP 429, too many requests (retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                retry_after=retry_after,
            )
        if status == 401:
            return ExchangeAuthError(
                "kucoin rejects the request: HTTP 401, the auth headers are missing or invalid",
                exchange=NAME,
            )
        if status >= 500:
            return ExchangeUnavailable(f"kucoin: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "an envelope")
        return ExchangeBadResponse(f"kucoin: {path} answered HTTP {status}", exchange=NAME)

    def _code_error(self, envelope: Envelope, response: httpx.Response) -> ExchangeError:
        code = envelope.code
        msg = envelope.msg[:300]
        detail = f"kucoin {code}: {msg or 'no message'}"
        number = int(code) if code.isdigit() else None
        if code == RATE_LIMITED:
            retry_after = self._retry_after(response)
            return ExchangeRateLimited(
                f"{detail} (rate limited; retry after {retry_after or 'unknown'} s)",
                exchange=NAME,
                code=number,
                retry_after=retry_after,
            )
        if code == INVALID_TIMESTAMP:
            return self._clock_error(detail, number)
        if code in KEY_REJECTED_CODES:
            match = _IP.search(msg) if code == IP_REFUSED else None
            refused_ip = match.group(1) if match else None
            return ExchangeAuthError(
                _rejection_message(code, detail, refused_ip),
                exchange=NAME,
                code=number,
                refused_ip=refused_ip,
            )
        if response.status_code >= 500:
            return ExchangeUnavailable(detail, exchange=NAME, code=number)
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=number
        )

    def _facts(self, data: Any, api_key: str) -> KeyFacts:
        try:
            info = ApiKeyInfo.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"kucoin: {API_KEY_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        if info.apiKey != api_key:
            raise ExchangeBadResponse(
                f"kucoin: {API_KEY_PATH} describes another key than the one that signed",
                exchange=NAME,
            )
        ips = _split(info.ipWhitelist or "")
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=_permissions(info.permission),
            ip_restricted=bool(ips),
            ip_list=tuple(ips),
            created_at=utc_from_ms(info.createdAt) if info.createdAt else None,
            deadlines=(),  # no expiry field (§2.3)
            account_kind=None if info.isMaster is None else "master" if info.isMaster else "sub",
        )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _permissions(text: str) -> dict[str, bool]:
    # The whole list is shown, so every mapped permission absent from it is observed absent.
    permissions = {name: False for names in PERMISSIONS.values() for name in names}
    permissions["read"] = True  # the endpoint itself needs General: the key can read
    for entry in _split(text):
        mapped = PERMISSIONS.get(entry)
        if mapped is not None:
            permissions.update(dict.fromkeys(mapped, True))
        else:
            permissions[entry] = True  # Earn and anything new: kept raw
            if entry not in _unknown_entries_logged:
                _unknown_entries_logged.add(entry)
                log.info("unmapped_permission", exchange=NAME, permission=entry)
    return permissions


def _rejection_message(code: str, detail: str, refused_ip: str | None) -> str:
    causes = {
        MISSING_HEADERS: "the KC-API-* headers are missing",
        KEY_MISSING: "the key does not exist (deleted?)",
        BAD_PASSPHRASE: "the passphrase is wrong (or key_version does not match the key)",
        BAD_SIGNATURE: "the signature is not valid: wrong secret",
        IP_REFUSED: "this egress IP is not in the key's IP whitelist",
        ACCESS_DENIED: "the key lacks the permission for this request (General)",
        USER_FROZEN: "the account is frozen",
    }
    text = f"kucoin rejects the key ({detail}): {causes[code]}"
    if refused_ip:
        text += f"; KuCoin refused egress IP {refused_ip}"
    return text


__all__ = ["KucoinAdapter", "KucoinAuth", "sign"]
