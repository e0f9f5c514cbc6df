"""Kraken (spot REST): the key's own facts from ``POST /0/private/GetApiKeyInfo``
(exchange-apis.md §2.16).

``GetApiKeyInfo`` needs no permission and describes the key that signs the call: its
``permissions`` (strings), ``ipAllowlist`` (addresses or ranges; empty means any IP),
``createdTime`` and ``validUntil`` (``"0"``: no expiry). It is a POST, but it changes nothing:
the read-only transport allows exactly that method and path.

Signing (Kraken spot REST auth guide): ``API-Sign = base64(HMAC-SHA512(base64decode(secret),
uri_path + SHA256(nonce + postdata)))`` with ``API-Key`` alongside; the form-encoded body
carries a ``nonce``. :class:`KrakenAuth` takes the nonce, writes the body and signs it inside
httpx's auth flow, i.e. when the request is sent, never before it queued.

**Nonces.** Kraken has no time window: a request is valid if its nonce is larger than every
nonce the key has used (within the key's optional nonce window). keymon must sign with the
trading key it audits, so it shares that key's nonce sequence with the bots. :data:`NONCES`
hands out millisecond nonces, strictly increasing per key across the whole process (config
reloads included), even for two calls in the same millisecond. Milliseconds on purpose: they
are what Kraken's own examples and most bots use; a microsecond nonce would put the key's
nonce a thousand times above the bots' and lock them out for good. ``EAPI:Invalid nonce`` (a
bot signed a larger nonce just before) is retried once with a fresh nonce; if that fails too,
the audit fails with ``clock_skew``, never ``key_rejected``: the key is fine, the nonce is not.

Kraken answers HTTP 200 with ``{"error": [...], "result": {...}}``; entries of ``error`` that
start with ``W`` are warnings, only ``E...`` entries are errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal
from urllib.parse import urlencode

import httpx
import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from keymon.config_base import ExchangeSettingsBase, KeyBase, Secret, WeightPerMinute
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeClockError,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import (
    Clock,
    parse_retry_after,
)
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, Deadline, KeyFacts

# ----------------------------------------------------------------------------- configuration

KRAKEN_BASE_URL = "https://api.kraken.com"
#: Kraken limits private REST calls with a per-key counter (each call adds 1; the counter decays
#: by 0.33-1 per second depending on the account tier, and a call past 15-20 is refused with
#: ``EAPI:Rate limit exceeded``). keymon adds at most two points per key per audit (one call,
#: one retry after a nonce clash), far inside that; this process-wide ceiling of 60 calls a
#: minute keeps a burst of many Kraken keys from crowding the IP as well.
KRAKEN_MAX_WEIGHT_PER_MINUTE = 60


class KrakenSettings(ExchangeSettingsBase):
    """``exchanges.kraken:``. No recv_window: Kraken checks a strictly increasing nonce per key
    instead of a time window, so ``time_sync_interval`` is unused."""

    base_url: str = KRAKEN_BASE_URL
    max_weight_per_minute: WeightPerMinute = KRAKEN_MAX_WEIGHT_PER_MINUTE


class KrakenKey(KeyBase):
    """A Kraken spot key: the API key and its private key ("secret"), which is base64. Kraken
    signs with the decoded bytes, so a secret that does not decode is refused at load time."""

    exchange: Literal["kraken"]

    @field_validator("api_secret")
    @classmethod
    def _base64_secret(cls, value: Secret, info: ValidationInfo) -> Secret:
        if value.resolved and not kraken_secret_decodes(value.get()):
            # Name the key, never quote the secret (not even a part of it).
            name = info.data.get("name")
            raise PydanticCustomError(
                "secret",
                "the Kraken private key of key '{name}' is not base64; copy the whole "
                "'Private key' Kraken showed when the key was created",
                {"name": str(name)[:100] if name else "?"},
            )
        return value


def kraken_secret_decodes(secret: str) -> bool:
    """True when ``secret`` is non-empty, strictly valid base64 (Kraken's private key)."""
    try:
        return bool(base64.b64decode(secret.strip(), validate=True))
    except (binascii.Error, ValueError):
        return False


log = structlog.get_logger(__name__)

NAME: Final = "kraken"
KEY_INFO_PATH: Final = "/0/private/GetApiKeyInfo"

#: ``permissions`` strings -> keymon permissions. Checked against Kraken's own page
#: (docs.kraken.com/api-reference/account-data/get-api-key-info, example answer with
#: ``query-funds``, ``withdraw-funds``, ``query-open-trades``, ``modify-trades``) and its API-key
#: permission guide (docs.kraken.com/exchange/guides/rest/api-keys: Query Funds reads balances;
#: Create & Modify Orders places orders; Cancel/Close Orders only cancels and closes; Withdraw
#: Funds withdraws). The names exchange-apis.md guessed (``create-orders``,
#: ``cancel-close-orders``, ...) are not Kraken's and are no longer mapped.
PERMISSION_NAMES: Final[Mapping[str, str]] = {
    "query-funds": "read",
    "modify-trades": "spot_trade",
    "withdraw-funds": "withdraw",
}
#: Kraken's own names with no keymon permission, kept under their name (no "unmapped" log):
#: ``close-trades`` (Cancel/Close Orders: cancels orders and closes positions, cannot place
#: one; a market maker needs it besides ``modify-trades``), the other query permissions,
#: ``deposit-funds``, ``export-data``.
DOCUMENTED_RAW: Final = frozenset(
    {
        "close-trades",
        "query-open-trades",
        "query-closed-trades",
        "query-ledger",
        "deposit-funds",
        "export-data",
    }
)
#: Observed off when absent: ``permissions`` is the key's whole list.
OBSERVED_OFF: Final = frozenset(PERMISSION_NAMES.values())

INVALID_KEY: Final = "EAPI:Invalid key"
INVALID_SIGNATURE: Final = "EAPI:Invalid signature"
INVALID_NONCE: Final = "EAPI:Invalid nonce"
PERMISSION_DENIED: Final = "EGeneral:Permission denied"
#: ``EAPI:Rate limit exceeded`` is documented (§2.16); ``EGeneral:Temporary lockout`` is
#: Kraken's answer to a key that keeps failing and is read the same way: wait, then retry.
RATE_LIMITED: Final = frozenset({"EAPI:Rate limit exceeded", "EGeneral:Temporary lockout"})
_CAUSES: Final[Mapping[str, str]] = {
    INVALID_KEY: "the key is unknown to Kraken (deleted or expired?)",
    # Kraken's support article on API-key 2FA: a client that does not send the key's
    # one-time password gets EAPI:Invalid signature. keymon sends none.
    INVALID_SIGNATURE: "the signature is not valid: a wrong secret, or the key has two-factor "
    "authentication (2FA) enabled, which keymon cannot satisfy (it sends no one-time password; "
    "Kraken answers a missing or wrong OTP with EAPI:Invalid signature). Check the secret, or "
    "switch 2FA off for this key to have it audited",
    # GetApiKeyInfo needs no permission, so "permission denied" cannot mean a missing
    # permission here: the one restriction left is the key's IP allowlist. The exact string
    # Kraken sends for a refused IP is unconfirmed (exchange-apis.md §2.16).
    PERMISSION_DENIED: "this egress IP is most likely not in the key's IP allowlist "
    "(GetApiKeyInfo needs no permission)",
}

_unknown_permissions_logged: set[str] = set()

# ----------------------------------------------------------------------------- signing


def sign(secret: str, path: str, nonce: str, postdata: str) -> str:
    """``base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + postdata)))``."""
    inner = hashlib.sha256((nonce + postdata).encode()).digest()
    digest = hmac.new(base64.b64decode(secret), path.encode() + inner, hashlib.sha512).digest()
    return base64.b64encode(digest).decode("ascii")


class NonceSource:
    """Millisecond nonces, strictly increasing per key.

    Per key, not process-wide: one shared counter would run ahead of the clock by one per call
    when hundreds of keys are audited in the same millisecond, and a key's nonce far in the
    future locks out its bots. Keys are held as digests, not as the API keys themselves.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._last: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def next(self, api_key: str, clock: Clock | None = None) -> int:
        """The next nonce for ``api_key``: the clock in ms, or one above the last if that is
        not larger."""
        ident = hashlib.sha256(api_key.encode()).digest()
        now_ms = int((clock or self._clock)() * 1000)
        with self._lock:
            nonce = max(now_ms, self._last.get(ident, 0) + 1)
            self._last[ident] = nonce
            return nonce


#: The process's nonce source: it outlives adapters, so a reload cannot reuse a nonce.
NONCES: Final = NonceSource()


class KrakenAuth(httpx.Auth):
    """Takes a nonce, writes the form body and adds ``API-Key`` and ``API-Sign`` when sent."""

    def __init__(self, api_key: Secret, secret: Secret, nonce: Callable[[], int]) -> None:
        self._api_key = api_key
        self._secret = secret
        self._nonce = nonce

    def __repr__(self) -> str:
        return "KrakenAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        nonce = str(self._nonce())
        postdata = urlencode({"nonce": nonce})
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        try:
            signature = sign(self._secret.get(), path, nonce, postdata)
        except (binascii.Error, ValueError):
            # The configuration refuses such a secret; this guards a secret file that changed.
            raise ExchangeAuthError(
                "kraken: the API secret is not valid base64", exchange=NAME
            ) from None
        body = postdata.encode()
        request.headers["API-Key"] = self._api_key.get()
        request.headers["API-Sign"] = signature
        request.headers["Content-Type"] = "application/x-www-form-urlencoded"
        request.headers["Content-Length"] = str(len(body))
        request.stream = httpx.ByteStream(body)
        request._content = body  # what request.content / aread() return (httpx keeps both)
        yield request


# ----------------------------------------------------------------------------- responses


class Envelope(BaseModel):
    """Every answer: ``{"error": [...], "result": {...}}``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    error: list[StrictStr]
    result: Any = None


Stamp = StrictStr | int | float | None


class KeyInfo(BaseModel):
    """``result`` of ``GetApiKeyInfo``. exchange-apis.md gives no field types: times are read
    from strings or numbers, Unix seconds or milliseconds, or ISO 8601."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    apiKey: StrictStr | None = None
    permissions: list[StrictStr]
    ipAllowlist: list[StrictStr] | StrictStr | None = None
    createdTime: Stamp = None
    validUntil: Stamp = None
    lastUsed: Stamp = None


# ----------------------------------------------------------------------------- adapter


class KrakenAdapter(AdapterBase, settings_model=KrakenSettings, key_model=KrakenKey):
    """Audits Kraken spot keys. One instance per process, shared by every Kraken key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset({("POST", KEY_INFO_PATH)})
    #: Empty: Kraken reports no used weight in response headers; its limit is a per-key
    #: counter it does not show, and keymon's share of it is one or two calls per audit.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    weights: ClassVar[Mapping[str, int]] = {KEY_INFO_PATH: 1}
    nonces: ClassVar[NonceSource] = NONCES

    _settings: KrakenSettings

    async def audit(self, key: KrakenKey) -> KeyFacts:
        """The key's permissions, IP allowlist, creation time and expiry."""
        api_key = key.api_key.get()
        auth = KrakenAuth(
            key.api_key, key.api_secret, lambda: self.nonces.next(api_key, self._clock)
        )
        try:
            result = await self._post(KEY_INFO_PATH, auth=auth)
        except ExchangeClockError:
            # A bot sharing the key signed a larger nonce just before: one more try, with a
            # fresh nonce, before calling it a nonce problem.
            log.info("nonce_retry", exchange=NAME)
            result = await self._post(KEY_INFO_PATH, auth=auth)
        return self._facts(result, api_key)

    async def _post(self, path: str, *, auth: httpx.Auth) -> Any:
        response = await self._send("POST", path, auth=auth)
        try:
            envelope = Envelope.model_validate(json.loads(response.content))
        except (ValueError, UnicodeDecodeError, ValidationError):
            raise self._http_error(response, path) from None
        errors = [e for e in envelope.error if not e.startswith("W")]
        if errors:
            raise self._api_error(errors, response)
        if envelope.error:
            log.info("exchange_warning", exchange=NAME, warnings=envelope.error[:5])
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response, path)
        return envelope.result

    def _http_error(self, response: httpx.Response, path: str) -> ExchangeError:
        """An answer that is not Kraken's error/result envelope."""
        status = response.status_code
        if status == 429:
            return ExchangeRateLimited(
                "kraken: HTTP 429, too many requests",
                exchange=NAME,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            return ExchangeUnavailable(f"kraken: HTTP {status}", exchange=NAME)
        if status == 200:
            return self._unreadable(path, response, "an error/result envelope")
        return ExchangeBadResponse(f"kraken: {path} answered HTTP {status}", exchange=NAME)

    def _api_error(self, errors: list[str], response: httpx.Response) -> ExchangeError:
        first = errors[0]
        detail = f"kraken {'; '.join(errors)[:300]}"
        if first in RATE_LIMITED or response.status_code == 429:
            return ExchangeRateLimited(
                f"{detail} (the key's call counter is full: its bots are busy)",
                exchange=NAME,
                code=first,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if first == INVALID_NONCE:
            return ExchangeClockError(
                f"{detail} (another client of this key signed a larger nonce; do its bots use "
                "a larger nonce scale than milliseconds? See docs/exchanges.md on Kraken nonces)",
                exchange=NAME,
                code=first,
            )
        if first in _CAUSES:
            return ExchangeAuthError(
                f"kraken rejects the key ({detail}): {_CAUSES[first]}", exchange=NAME, code=first
            )
        if first.startswith("EService:") or response.status_code >= 500:
            return ExchangeUnavailable(detail, exchange=NAME, code=first)
        return ExchangeBadResponse(
            f"{detail} (HTTP {response.status_code})", exchange=NAME, code=first
        )

    def _facts(self, data: Any, api_key: str) -> KeyFacts:
        try:
            info = KeyInfo.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "result" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"kraken: {KEY_INFO_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        if info.apiKey is not None and info.apiKey != api_key:
            raise ExchangeBadResponse(
                f"kraken: {KEY_INFO_PATH} describes another key than the one that signed",
                exchange=NAME,
            )
        ip_list = allowlist(info.ipAllowlist)
        try:
            expires = parse_time(info.validUntil)
        except ValueError:
            raise ExchangeBadResponse(
                f"kraken: {KEY_INFO_PATH} answered a validUntil keymon cannot read",
                exchange=NAME,
            ) from None
        try:
            created = parse_time(info.createdTime)
        except ValueError:
            log.info("unreadable_created_time", exchange=NAME)
            created = None
        try:
            last_used = parse_time(info.lastUsed)
        except ValueError:
            last_used = None
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=permissions(info.permissions),
            ip_restricted=None if ip_list is None else bool(ip_list),
            ip_list=ip_list,
            created_at=created,
            deadlines=(Deadline("key_expiry", expires),) if expires else (),
            last_used_at=last_used,
        )


def allowlist(value: list[str] | str | None) -> tuple[str, ...] | None:
    """``ipAllowlist`` as a tuple of entries; ``[]`` is unrestricted, absent is not visible.

    The docs give an array; a comma-separated string is accepted too.
    """
    if value is None:
        return None
    entries = value.split(",") if isinstance(value, str) else value
    return tuple(entry.strip() for entry in entries if entry.strip())


def permissions(names: list[str]) -> dict[str, bool]:
    """Kraken permission strings -> keymon permissions; unknown names are kept raw (True).

    The list is the key's whole set, so a mapped permission that is absent is observed off.
    """
    result: dict[str, bool] = dict.fromkeys(sorted(OBSERVED_OFF), False)
    for raw in names:
        name = raw.strip()
        mapped = PERMISSION_NAMES.get(name.lower())
        if mapped is not None:
            result[mapped] = True
            continue
        result[name] = True
        if name.lower() not in DOCUMENTED_RAW and name not in _unknown_permissions_logged:
            _unknown_permissions_logged.add(name)
            log.info("unmapped_permission", exchange=NAME, permission=name)
    return result


_NUMBER = re.compile(r"\d+(\.\d+)?")


def parse_time(value: str | int | float | None) -> datetime | None:
    """A Kraken time: Unix seconds (or ms, if that large) as a number or a string, or ISO 8601.

    ``0``, ``"0"``, an empty string or a missing field mean "none". Raises ValueError on
    anything else.
    """
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if text in ("", "0", "0.0"):
        return None
    if _NUMBER.fullmatch(text):
        number = float(text)
        if number > 1e11:  # later than the year 5000 in seconds: milliseconds
            number /= 1000
        return datetime.fromtimestamp(number, UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
