"""Coinbase Advanced Trade: the key's own permissions (exchange-apis.md §2.10).

``GET /api/v3/brokerage/key_permissions`` describes *the calling key*: ``can_view``,
``can_trade``, ``can_transfer``, ``portfolio_uuid`` and ``portfolio_type``. Nothing else:
Coinbase shows a key neither its IP allowlist nor its creation time nor any expiry, so those
facts are **not visible** (``None``) and the rules that need them are not evaluated. The desk
checks them in the CDP portal (docs/exchanges.md, "How keymon talks to Coinbase").

Auth is a JWT per request (CDP keys), built with PyJWT when the request is sent: header
``alg`` (``ES256`` for an EC P-256 key, ``EdDSA`` for an Ed25519 key), ``kid`` = the key's name
and a random hex ``nonce``; claims ``sub`` = the key's name, ``iss`` = ``"cdp"``, ``nbf`` = now,
``exp`` = now + 120 s and ``uri`` = ``"GET api.coinbase.com/api/v3/brokerage/key_permissions"``
(method, space, host and path: no scheme, no query); sent as ``Authorization: Bearer <jwt>``.
"Now" is the local clock corrected by the offset measured on the public ``GET
/api/v3/brokerage/time`` (Advanced Trade's "Get Server Time"), refreshed every
``time_sync_interval``.

Coinbase answers every authentication failure with the same bare ``401 Unauthorized``: an
unknown or deleted key, a wrong private key, a call from an IP outside the key's allowlist and
a JWT outside its ``nbf``/``exp`` window all look alike (§2.10(c)), and valid JWTs have been
reported to draw an occasional spurious 401. So keymon re-reads Coinbase's clock and retries
once. If the retry is refused too, keymon reads Coinbase's clock once more and compares it
with the refused JWT's window: only when that window provably missed Coinbase's own time
(``nbf`` ahead of the clock read *after* the request, or ``exp`` behind the one read *before*
it) does the audit fail with ``clock_skew``. Otherwise it fails with ``key_rejected``, and the
message lists the possible causes rather than picking one: keymon cannot tell a refused IP
from a deleted key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

import httpx
import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    StrictBool,
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
    parse_retry_after,
)
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts

# ----------------------------------------------------------------------------- configuration

COINBASE_BASE_URL = "https://api.coinbase.com"
#: Coinbase Advanced Trade allows 30 requests/s per user on private endpoints and 10/s per IP on
#: public ones (its "REST API Rate Limits" page; not in exchange-apis.md). keymon allows itself
#: one request a second; an audit costs one, plus the occasional clock read.
COINBASE_MAX_WEIGHT_PER_MINUTE = 60


class CoinbaseSettings(ExchangeSettingsBase):
    """``exchanges.coinbase:`` (Advanced Trade). No recv_window: each request carries a JWT valid
    for 120 s from the time keymon reads off Coinbase's clock (``time_sync_interval``)."""

    base_url: str = COINBASE_BASE_URL
    max_weight_per_minute: WeightPerMinute = COINBASE_MAX_WEIGHT_PER_MINUTE


#: A CDP API key's name: ``organizations/{org_id}/apiKeys/{key_id}``.
COINBASE_KEY_NAME = re.compile(r"organizations/[A-Za-z0-9-]+/apiKeys/[A-Za-z0-9-]+")
COINBASE_KEY_SHAPE = "organizations/<org_id>/apiKeys/<key_id>"
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
CoinbaseAlgorithm = Literal["ES256", "EdDSA"]


class CoinbaseKey(KeyBase):
    """A Coinbase Advanced Trade key (a CDP "Secret API key").

    ``api_key`` is the key's **name**, ``organizations/{org_id}/apiKeys/{key_id}``;
    ``api_secret`` its private key, in every form the official SDKs (coinbase-advanced-py,
    cdp-sdk) accept: an EC P-256 PEM (SEC1 or PKCS#8; signs ES256), an Ed25519 PKCS#8 PEM, or
    an Ed25519 key as the base64 string the CDP portal shows (64 bytes: seed and public key)
    or of its 32-byte seed alone (both sign EdDSA). A PEM pasted with literal ``\\n`` escapes
    (as in the downloaded key JSON) and base64 broken over lines are accepted. Both are checked
    when the configuration loads; messages never quote either.
    """

    exchange: Literal["coinbase"]

    @field_validator("api_key")
    @classmethod
    def _key_name_shape(cls, value: Secret, info: ValidationInfo) -> Secret:
        if not value.resolved:  # validate-config --no-secrets: nothing to look at
            return value
        text = value.get().strip()
        if COINBASE_KEY_NAME.fullmatch(text):
            return value if text == value.get() else Secret(SecretStr(text), value.origin)
        if "-----BEGIN" in text:
            hint = "it holds a private key (api_key and api_secret swapped?)"
        elif _UUID.fullmatch(text):
            hint = "it is a bare key id; give the full name"
        else:
            hint = "it does not have that shape"
        raise PydanticCustomError(
            "coinbase_key",
            "key '{key}': api_key must be the CDP key name {shape} (the key file's \"name\"); "
            "{hint}",
            {"key": _key_label(info), "hint": hint, "shape": COINBASE_KEY_SHAPE},
        )

    @field_validator("api_secret")
    @classmethod
    def _private_key(cls, value: Secret, info: ValidationInfo) -> Secret:
        if not value.resolved:
            return value
        text = normalize_coinbase_secret(value.get())
        try:
            coinbase_private_key(text)
        except CoinbaseKeyError as exc:
            raise PydanticCustomError(
                "coinbase_key",
                "key '{key}': api_secret {why}",
                {"key": _key_label(info), "why": str(exc)},
            ) from None
        return value if text == value.get() else Secret(SecretStr(text), value.origin)


def _key_label(info: ValidationInfo) -> str:
    name = info.data.get("name") if isinstance(info.data, dict) else None
    return name if isinstance(name, str) else "?"


class CoinbaseKeyError(ValueError):
    """A Coinbase secret that is no usable private key; the text never quotes the material."""


def normalize_coinbase_secret(text: str) -> str:
    """A Coinbase secret as pasted or downloaded, made loadable: surrounding whitespace and JSON
    quotes dropped; in a PEM, literal ``\\n`` escapes turned into line breaks."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if "-----BEGIN" in text:
        text = text.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n")
        text = text.strip() + "\n"
    elif not text.startswith("{"):
        # Base64 broken over lines (or with a stray blank) is the same key: coinbase-advanced-py
        # removes every whitespace before decoding.
        text = "".join(text.split())
    return text


def coinbase_private_key(text: str) -> tuple[Any, CoinbaseAlgorithm]:
    """The private key in a (normalized) Coinbase secret and the JWT algorithm it signs with.

    Raises:
        CoinbaseKeyError: saying what is wrong, never quoting the material.
    """
    # Imported here, as for Binance: cryptography costs every `keymon check` start-up time.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if "-----BEGIN" in text:
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except TypeError:
            raise CoinbaseKeyError("is an encrypted PEM private key; give it unencrypted") from None
        except (ValueError, UnsupportedAlgorithm):
            raise CoinbaseKeyError("looks like PEM but is not a readable private key") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise CoinbaseKeyError(
                    "is an EC key on another curve than P-256; Coinbase keys use P-256 (ES256)"
                )
            return key, "ES256"
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key, "EdDSA"
        raise CoinbaseKeyError(
            "is a PEM private key of a type Coinbase does not use (expected EC P-256 or Ed25519)"
        )
    if text.startswith("{"):
        raise CoinbaseKeyError(
            "looks like the whole CDP key JSON; give its privateKey value (api_key is its name)"
        )
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) not in (32, 64):
        raise CoinbaseKeyError(
            "is neither a PEM private key (EC P-256 or Ed25519) nor a CDP Ed25519 key (base64 of "
            "a 32-byte seed, or of 64 bytes: seed and public key)"
        )
    # The official SDKs (coinbase-advanced-py jwt_generator._load_private_key, cdp-sdk
    # _parse_private_key) sign with the first 32 bytes, the seed, and ignore the rest: so does
    # keymon. A second half that is not the seed's public key is no reason to refuse a key the
    # SDKs use; Coinbase itself will refuse a wrong seed (401).
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32]), "EdDSA"


log = structlog.get_logger(__name__)

NAME: Final = "coinbase"
TIME_PATH: Final = "/api/v3/brokerage/time"
PERMISSIONS_PATH: Final = "/api/v3/brokerage/key_permissions"
#: The JWT's lifetime and issuer, as Coinbase's key-authentication guide builds them.
JWT_LIFETIME_S: Final = 120
JWT_ISSUER: Final = "cdp"
UNAUTHORIZED: Final = 401

#: key_permissions field -> keymon permission (exchange-apis.md §2.10 and §4).
PERMISSION_FIELDS: Final[Mapping[str, str]] = {
    "can_view": "read",
    "can_trade": "spot_trade",
    "can_transfer": "withdraw",  # transfer means moving funds out
}

_unknown_flags_logged: set[str] = set()

UNAUTHORIZED_CAUSES: Final = (
    "the key is unknown to Coinbase (deleted or disabled?), the private key does not match the "
    "key name, or this egress IP is not in the key's IP allowlist; Coinbase's 401 does not say "
    "which"
)

# ----------------------------------------------------------------------------- signing


def jwt_uri(method: str, url: httpx.URL) -> str:
    """The ``uri`` claim: ``"GET api.coinbase.com/api/v3/brokerage/key_permissions"`` (method,
    space, host[:port] and path; no scheme, no query)."""
    host = url.netloc.decode("ascii")
    path = url.raw_path.split(b"?", 1)[0].decode("ascii")
    return f"{method.upper()} {host}{path}"


def build_jwt(
    key_name: str, private_key: Any, algorithm: CoinbaseAlgorithm, uri: str, now: int
) -> str:
    """One request's JWT, signed by PyJWT (ES256 or EdDSA)."""
    # Imported here: only configurations with Coinbase keys pay for PyJWT's import.
    import jwt

    claims = {
        "sub": key_name,
        "iss": JWT_ISSUER,
        "nbf": now,
        "exp": now + JWT_LIFETIME_S,
        "uri": uri,
    }
    headers = {"kid": key_name, "nonce": secrets.token_hex()}
    return jwt.encode(claims, private_key, algorithm=algorithm, headers=headers)


class CoinbaseAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <jwt>`` when the request is sent; remembers the JWT's
    ``(nbf, exp)`` window so that a refusal can be judged against Coinbase's clock."""

    def __init__(self, key: CoinbaseKey, now_s: Callable[[], int]) -> None:
        self._key_name = key.api_key
        self._secret = key.api_secret
        self._now_s = now_s
        self.window: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return "CoinbaseAuth(...)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        private_key, algorithm = _load(self._secret)
        now = self._now_s()
        token = build_jwt(
            self._key_name.get(), private_key, algorithm, jwt_uri(request.method, request.url), now
        )
        self.window = (now, now + JWT_LIFETIME_S)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _load(secret: Secret) -> tuple[Any, CoinbaseAlgorithm]:
    """The private key (checked when the configuration loaded, so this cannot fail)."""
    return coinbase_private_key(secret.get())


# ----------------------------------------------------------------------------- responses


class KeyPermissions(BaseModel):
    """``GET /api/v3/brokerage/key_permissions`` (the docs' ``GetApiKeyPermissionsResponse``).

    Every field is optional there, and in the official SDK's model (coinbase-advanced-py
    ``GetAPIKeyPermissionsResponse``): a flag that is absent is **not visible**, never off. An
    answer with none of the three flags tells nothing and is a bad response.
    """

    model_config = ConfigDict(extra="allow", defer_build=True)
    can_view: StrictBool | None = None
    can_trade: StrictBool | None = None
    can_transfer: StrictBool | None = None
    portfolio_uuid: str | None = None
    portfolio_type: str | None = None


# ----------------------------------------------------------------------------- adapter


class CoinbaseAdapter(AdapterBase, settings_model=CoinbaseSettings, key_model=CoinbaseKey):
    """Audits Coinbase Advanced Trade keys. One instance per process, shared by every key."""

    name: ClassVar[str] = NAME
    coverage: ClassVar[Coverage] = Coverage.INTROSPECTION
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("GET", TIME_PATH), ("GET", PERMISSIONS_PATH)}
    )
    #: Empty on purpose: Coinbase documents no header reporting a used weight.
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: keymon counts requests: every call costs 1.
    weights: ClassVar[Mapping[str, int]] = {TIME_PATH: 1, PERMISSIONS_PATH: 1}
    time_path: ClassVar[str | None] = TIME_PATH

    _settings: CoinbaseSettings
    _server_s: float | None = None  # Coinbase's time at the last sync

    async def audit(self, key: CoinbaseKey) -> KeyFacts:
        """The key's permissions; IP allowlist, creation and expiry are not visible."""
        await self._ensure_synced()
        try:
            data = await self._get(PERMISSIONS_PATH, auth=CoinbaseAuth(key, self.now_s))
        except ExchangeAuthError as exc:
            if exc.code != UNAUTHORIZED:
                raise
            # A bare 401: re-read Coinbase's clock (the local one may have jumped), try again.
            await self._ensure_synced(force=True)
            before = self._server_s
            auth = CoinbaseAuth(key, self.now_s)
            try:
                data = await self._get(PERMISSIONS_PATH, auth=auth)
            except ExchangeAuthError as again:
                if again.code != UNAUTHORIZED or auth.window is None:
                    raise
                raise await self._judge_refusal(auth.window, before) from None
        return self._facts(data)

    async def _time_answer(self, stamp: httpx.Auth) -> Any:
        """Coinbase's clock in seconds (kept for the 401 judgement, forgotten if it fails)."""
        self._server_s = None
        self._server_s = await self._server_time(auth=stamp)
        return self._server_s

    def parse_server_time(self, body: Any) -> float | None:
        seconds: float = body
        return seconds * 1000

    async def _server_time(self, *, auth: httpx.Auth | None = None) -> float:
        """Coinbase's clock in Unix seconds (``epochMillis``, else ``epochSeconds``, else the
        RFC 3339 ``iso``: the docs' ``ExtendedTimestamp`` has all three, the official SDK's
        test answer only ``iso``)."""
        data = await self._get(TIME_PATH, auth=auth)
        for field, scale in (("epochMillis", 1000), ("epochSeconds", 1)):
            value = data.get(field) if isinstance(data, dict) else None
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                continue
            try:
                return float(value) / scale  # Coinbase sends both as decimal strings
            except (TypeError, ValueError):
                continue
        iso = data.get("iso") if isinstance(data, dict) else None
        if isinstance(iso, str):
            try:
                parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is not None:
                return parsed.timestamp()
        raise ExchangeBadResponse(
            f"coinbase: {TIME_PATH} answered without epochMillis, epochSeconds or iso",
            exchange=NAME,
        )

    async def _judge_refusal(self, window: tuple[int, int], before: float | None) -> ExchangeError:
        """A second bare 401: clock skew if the refused JWT's window provably missed Coinbase's
        own clock, a key rejection (cause unknown) otherwise."""
        nbf, exp = window
        try:
            after: float | None = await self._server_time()
        except ExchangeError as exc:
            log.info("clock_probe_failed", exchange=NAME, reason=str(exc.reason))
            after = None
        if after is not None and nbf > after:
            return ExchangeClockError(
                f"coinbase: 401 Unauthorized twice; keymon's JWT was not yet valid by Coinbase's "
                f"clock (nbf {nbf - after:.0f} s ahead of it even after a re-sync): the local "
                "clock is unstable",
                exchange=NAME,
                code=UNAUTHORIZED,
            )
        if before is not None and exp <= before:
            return ExchangeClockError(
                f"coinbase: 401 Unauthorized twice; keymon's JWT had expired by Coinbase's clock "
                f"(exp {before - exp:.0f} s behind it even after a re-sync): the local clock is "
                "unstable",
                exchange=NAME,
                code=UNAUTHORIZED,
            )
        clock = (
            "Coinbase's clock, read around the retry, shows no skew"
            if after is not None and before is not None
            else "keymon could not read Coinbase's clock to rule out clock skew"
        )
        return ExchangeAuthError(
            f"coinbase rejects the key (401 Unauthorized, twice; {clock}): {UNAUTHORIZED_CAUSES}",
            exchange=NAME,
            code=UNAUTHORIZED,
        )

    async def _get(self, path: str, *, auth: httpx.Auth | None = None) -> Any:
        response = await self._send("GET", path, auth=auth)
        if response.status_code != httpx.codes.OK:
            raise _http_error(response, path)
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            raise self._unreadable(path, response) from None

    def _facts(self, data: Any) -> KeyFacts:
        try:
            body = KeyPermissions.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(
                sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            )
            raise ExchangeBadResponse(
                f"coinbase: {PERMISSIONS_PATH} answered an unexpected shape ({fields})",
                exchange=NAME,
            ) from None
        permissions: dict[str, bool] = {}
        for field, mapped in PERMISSION_FIELDS.items():
            value = getattr(body, field)
            if value is not None:
                permissions[mapped] = value
        if not permissions:
            raise ExchangeBadResponse(
                f"coinbase: {PERMISSIONS_PATH} answered none of can_view, can_trade and "
                "can_transfer",
                exchange=NAME,
            )
        # A can_* flag Coinbase documents nowhere is kept under its raw name, logged once.
        for field, value in data.items():
            if (
                isinstance(field, str)
                and field.startswith("can_")
                and field not in PERMISSION_FIELDS
                and isinstance(value, bool)
            ):
                permissions[field] = value
                if field not in _unknown_flags_logged:
                    _unknown_flags_logged.add(field)
                    log.info("unmapped_permission", exchange=NAME, permission=field)
        return KeyFacts(
            coverage=Coverage.INTROSPECTION,
            permissions=permissions,
            ip_restricted=None,  # Coinbase does not show a key its IP allowlist
            ip_list=None,
            created_at=None,  # nor its creation time
            deadlines=(),  # nor any expiry
        )


def _http_error(response: httpx.Response, path: str) -> ExchangeError:
    """A non-200 answer. Coinbase's 401 is a bare ``Unauthorized``; other errors may carry
    ``{"error", "message"}`` (or, for a 429, an HTML page): the status decides."""
    status = response.status_code
    detail = _error_text(response)
    if status == httpx.codes.UNAUTHORIZED:
        return ExchangeAuthError(
            f"coinbase rejects the key (401 Unauthorized): {UNAUTHORIZED_CAUSES}",
            exchange=NAME,
            code=status,
        )
    if status == httpx.codes.FORBIDDEN:
        return ExchangeAuthError(
            f"coinbase: {path} answered 403 Forbidden{detail} (the key may not call it)",
            exchange=NAME,
            code=status,
        )
    if status == httpx.codes.TOO_MANY_REQUESTS:
        return ExchangeRateLimited(
            f"coinbase: HTTP 429, too many requests{detail}",
            exchange=NAME,
            code=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        return ExchangeUnavailable(f"coinbase: HTTP {status}{detail}", exchange=NAME, code=status)
    return ExchangeBadResponse(
        f"coinbase: {path} answered HTTP {status}{detail}", exchange=NAME, code=status
    )


def _error_text(response: httpx.Response) -> str:
    """`` (ERROR: message)`` from a JSON error body, or nothing."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    message = body.get("message") or body.get("error_details")
    parts = [str(part)[:200] for part in (error, message) if isinstance(part, str) and part]
    return f" ({': '.join(parts)})" if parts else ""
