"""Configuration: one YAML file plus ``KEYMON_<SECTION>__<FIELD>`` environment overrides.

:func:`load` reads the file, lets the environment override any setting (pydantic-settings,
nested delimiter ``__``), resolves every secret reference and checks the whole thing at once:
a bad file raises :class:`~keymon.errors.ConfigError` listing *every* problem with its
location (``keys[3].api_secret: environment variable ACME_SECRET is not set``). Messages
never contain a secret value: secrets are described by where they come from, never by what
they are.

Durations are written ``30s``, ``5m``, ``1h``, ``14d`` (or combined, ``1h30m``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from keymon.errors import ConfigError
from keymon.model import PERMISSIONS, Severity

DEFAULT_CONFIG_PATH = Path("config/keymon.yaml")
DEFAULT_LISTEN = "0.0.0.0:9877"
DEFAULT_INTERVAL = timedelta(minutes=5)
DEFAULT_JITTER = timedelta(seconds=10)
DEFAULT_TIMEOUT = timedelta(seconds=10)
DEFAULT_POLICY_NAME = "market-maker"
BINANCE_BASE_URL = "https://api.binance.com"
#: A tenth of Binance's 12,000/min SAPI IP limit: the bots share the IP and come first.
BINANCE_MAX_WEIGHT_PER_MINUTE = 1200
BINANCE_RECV_WINDOW = timedelta(seconds=5)
BINANCE_MAX_RECV_WINDOW = timedelta(seconds=60)
BYBIT_BASE_URL = "https://api.bybit.com"
#: Bybit counts requests, not weights: ``GET /v5/user/query-api`` allows 10 requests/s (600/min)
#: per UID and the whole IP allows 600 requests per 5 s (exchange-apis.md §2.1). keymon takes a
#: tenth of the endpoint's limit, 60 requests/min, and leaves the rest to the bots on the IP.
BYBIT_MAX_WEIGHT_PER_MINUTE = 60
BYBIT_RECV_WINDOW = timedelta(seconds=5)
#: Bybit does not document a maximum recv_window; keymon keeps Binance's 60 s bound.
BYBIT_MAX_RECV_WINDOW = timedelta(seconds=60)
BITGET_BASE_URL = "https://api.bitget.com"
#: HTX (formerly Huobi); the signature v2 pre-sign text includes this host, lowercase.
HTX_BASE_URL = "https://api.huobi.pro"
#: HTX documents no per-minute figure for ``/v2/user/api-key``; a conservative default.
HTX_MAX_WEIGHT_PER_MINUTE = 60
#: Bitget counts requests: ``GET /api/v2/spot/account/info`` allows 1 request/s per UID
#: (exchange-apis.md §2.5). The budget counts weight per minute, so 60 is the most keymon may
#: ever spend there; keymon keeps that ceiling as its default (one audit per second at most).
BITGET_MAX_WEIGHT_PER_MINUTE = 60
GATE_BASE_URL = "https://api.gateio.ws"
#: Gate documents no weight for ``account/detail`` or ``account/main_keys`` keymon can rely on;
#: keymon allows itself 60 requests a minute (each audit costs two or three).
GATE_MAX_WEIGHT_PER_MINUTE = 60
KRAKEN_BASE_URL = "https://api.kraken.com"
#: Kraken limits private REST calls with a per-key counter (each call adds 1; the counter decays
#: by 0.33-1 per second depending on the account tier, and a call past 15-20 is refused with
#: ``EAPI:Rate limit exceeded``). keymon adds at most two points per key per audit (one call,
#: one retry after a nonce clash), far inside that; this process-wide ceiling of 60 calls a
#: minute keeps a burst of many Kraken keys from crowding the IP as well.
KRAKEN_MAX_WEIGHT_PER_MINUTE = 60
KUCOIN_BASE_URL = "https://api.kucoin.com"
#: ``GET /api/v1/user/api-key`` costs 20 in KuCoin's "Management" pool (exchange-apis.md §2.3).
#: The docs give no pool size keymon can rely on; keymon allows itself 30 calls a minute
#: (600 weight), a small share that leaves the rest of the pool to the bots.
KUCOIN_MAX_WEIGHT_PER_MINUTE = 600
#: KuCoin's documented key versions; the universal SDK sends "3".
KUCOIN_KEY_VERSIONS = (2, 3)
KUCOIN_DEFAULT_KEY_VERSION: Literal[2, 3] = 3
OKX_BASE_URL = "https://www.okx.com"
#: OKX counts requests: ``GET /api/v5/account/config`` allows 5 requests per 2 s (150/min) per
#: UID (exchange-apis.md §2.2). keymon takes a fifth of that, 30 requests/min, and leaves the
#: rest to the bots of the same account.
OKX_MAX_WEIGHT_PER_MINUTE = 30
BINGX_BASE_URL = "https://open-api.bingx.com"
#: BingX counts requests: ``GET /openApi/v1/account/apiPermissions`` allows 2 requests/s per UID
#: and 300 per 10 s per IP for each endpoint of its group (exchange-apis.md §2.7, BingX docs "Rate
#: limit"). keymon allows itself one request a second, half the per-UID limit.
BINGX_MAX_WEIGHT_PER_MINUTE = 60
#: BingX's default window, and its documented maximum: a request more than 5 s old is refused.
BINGX_RECV_WINDOW = timedelta(seconds=5)
BINGX_MAX_RECV_WINDOW = timedelta(seconds=5)
COINBASE_BASE_URL = "https://api.coinbase.com"
#: Coinbase Advanced Trade allows 30 requests/s per user on private endpoints and 10/s per IP on
#: public ones (its "REST API Rate Limits" page; not in exchange-apis.md). keymon allows itself
#: one request a second; an audit costs one, plus the occasional clock read.
COINBASE_MAX_WEIGHT_PER_MINUTE = 60

# The liveness-only exchanges (exchange-apis.md §2.6, §2.8, §2.9, §2.11-§2.14). None documents
# a limit for the one signed read keymon makes beyond "per IP"/"per key" limits far above it;
# keymon counts each call as weight 1 (MEXC: the documented weight 10 of GET /api/v3/account)
# and spends at most 60 calls a minute per exchange, leaving the rest to the bots.
MEXC_BASE_URL = "https://api.mexc.com"
#: ``GET /api/v3/account`` has weight 10: 600 weight/min is 60 audits a minute.
MEXC_MAX_WEIGHT_PER_MINUTE = 600
#: MEXC's recvWindow: 5000 ms by default, 60000 at most (exchange-apis.md §2.6).
MEXC_RECV_WINDOW = timedelta(seconds=5)
MEXC_MAX_RECV_WINDOW = timedelta(seconds=60)
BITMART_BASE_URL = "https://api-cloud.bitmart.com"
BITRUE_BASE_URL = "https://openapi.bitrue.com"
BITRUE_RECV_WINDOW = timedelta(seconds=5)
BITRUE_MAX_RECV_WINDOW = timedelta(seconds=60)
#: XT's user-center API (GET /v4/user/account/api-key), not the spot host sapi.xt.com.
XT_BASE_URL = "https://api.xt.com"
XT_RECV_WINDOW = timedelta(seconds=5)
XT_MAX_RECV_WINDOW = timedelta(seconds=60)
LBANK_BASE_URL = "https://api.lbkex.com"
COINSTORE_BASE_URL = "https://api.coinstore.com"
BICONOMY_BASE_URL = "https://www.biconomy.com"
LIVENESS_MAX_WEIGHT_PER_MINUTE = 60

# ----------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """Parse ``30s``/``5m``/``1h``/``14d``/``1h30m`` (or a number of seconds) to a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration such as 30s, 5m, 1h or 14d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return timedelta(seconds=float(text))
        if text and re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", text):
            seconds = sum(
                float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text)
            )
            return timedelta(seconds=seconds)
    raise PydanticCustomError(
        "duration",
        "'{value}' is not a duration; write it like 30s, 5m, 1h or 14d",
        {"value": str(value)[:40]},
    )


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way the configuration writes it (``14d``, ``1h30m``, ``500ms``)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


# ----------------------------------------------------------------------------- secrets


@dataclass(frozen=True, slots=True)
class Secret:
    """A resolved secret and where it came from. Neither ``repr`` nor ``str`` shows the value."""

    value: SecretStr
    origin: str  # "environment variable X", "file /run/secrets/x", "literal"

    def get(self) -> str:
        return self.value.get_secret_value()

    def __repr__(self) -> str:
        return f"Secret(origin={self.origin!r})"

    __str__ = __repr__


def _resolve_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        if not value:
            raise PydanticCustomError("secret", "secret is empty")
        return Secret(SecretStr(value), "literal")
    if isinstance(value, Mapping):
        keys = set(value)
        if keys == {"env"}:
            name = value["env"]
            if not isinstance(name, str) or not name:
                raise PydanticCustomError("secret", "env: needs the name of a variable")
            found = os.environ.get(name)
            if found is None:
                raise PydanticCustomError(
                    "secret", "environment variable {name} is not set", {"name": name}
                )
            if not found:
                raise PydanticCustomError(
                    "secret", "environment variable {name} is empty", {"name": name}
                )
            return Secret(SecretStr(found), f"environment variable {name}")
        if keys == {"file"}:
            path = value["file"]
            if not isinstance(path, str) or not path:
                raise PydanticCustomError("secret", "file: needs a path")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise PydanticCustomError(
                    "secret",
                    "cannot read secret file {path}: {why}",
                    {"path": path, "why": exc.strerror or type(exc).__name__},
                ) from None
            except UnicodeDecodeError:
                raise PydanticCustomError(
                    "secret", "secret file {path} is not UTF-8 text", {"path": path}
                ) from None
            # Docker and Kubernetes secrets usually end in a newline that is not the secret.
            text = text.removesuffix("\n").removesuffix("\r")
            if not text:
                raise PydanticCustomError("secret", "secret file {path} is empty", {"path": path})
            return Secret(SecretStr(text), f"file {path}")
    raise PydanticCustomError("secret", "a secret is {env: NAME}, {file: PATH} or a string")


SecretRef = Annotated[Secret, BeforeValidator(_resolve_secret)]

# ----------------------------------------------------------------------------- sections

Permission = Literal[
    "read",
    "spot_trade",
    "margin_trade",
    "margin_loan",
    "futures_trade",
    "options_trade",
    "portfolio_margin",
    "withdraw",
    "internal_transfer",
    "universal_transfer",
    "fix_trade",
    "fix_read",
]
assert set(Permission.__args__) == set(PERMISSIONS)  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(_Model):
    """``log:``: JSON for machines by default, ``console`` for people."""

    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class AuditSettings(_Model):
    """``audit:``: how often every key is audited."""

    interval: Duration = DEFAULT_INTERVAL
    jitter: Duration = DEFAULT_JITTER
    timeout: Duration = DEFAULT_TIMEOUT

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise PydanticCustomError("duration", "must be at least 1s")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout_positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise PydanticCustomError("duration", "must be more than 0s")
        return value

    @model_validator(mode="after")
    def _jitter_below_interval(self) -> Self:
        if "jitter" not in self.model_fields_set and self.jitter >= self.interval:
            # The default jitter must not make a short interval invalid: scale it down.
            object.__setattr__(self, "jitter", self.interval / 10)
        if self.jitter >= self.interval:
            raise PydanticCustomError(
                "duration",
                "jitter ({jitter}) must be shorter than interval ({interval})",
                {
                    "jitter": format_duration(self.jitter),
                    "interval": format_duration(self.interval),
                },
            )
        return self


class ExchangeSettingsBase(_Model):
    """What every ``exchanges.<name>:`` section has; each exchange sets its own defaults."""

    base_url: str
    #: keymon's own share of the exchange's per-IP rate limit (the bots share the IP).
    max_weight_per_minute: int = Field(gt=0)
    time_sync_interval: Duration = timedelta(minutes=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(:\d+)?/?", value):
            raise PydanticCustomError(
                "url",
                "'{value}' is not an http(s) base URL such as https://api.binance.com",
                {"value": value[:80]},
            )
        return value.rstrip("/")


class BinanceSettings(ExchangeSettingsBase):
    """``exchanges.binance:``."""

    base_url: str = BINANCE_BASE_URL
    recv_window: Duration = BINANCE_RECV_WINDOW
    max_weight_per_minute: int = Field(default=BINANCE_MAX_WEIGHT_PER_MINUTE, gt=0)

    @field_validator("recv_window")
    @classmethod
    def _recv_window_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= BINANCE_MAX_RECV_WINDOW:
            raise PydanticCustomError("duration", "must be more than 0s and at most 60s")
        return value


class BybitSettings(ExchangeSettingsBase):
    """``exchanges.bybit:``."""

    base_url: str = BYBIT_BASE_URL
    recv_window: Duration = BYBIT_RECV_WINDOW
    max_weight_per_minute: int = Field(default=BYBIT_MAX_WEIGHT_PER_MINUTE, gt=0)

    @field_validator("recv_window")
    @classmethod
    def _recv_window_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= BYBIT_MAX_RECV_WINDOW:
            raise PydanticCustomError("duration", "must be more than 0s and at most 60s")
        return value


class BitgetSettings(ExchangeSettingsBase):
    """``exchanges.bitget:``. No recv_window: Bitget's signature has none."""

    base_url: str = BITGET_BASE_URL
    max_weight_per_minute: int = Field(default=BITGET_MAX_WEIGHT_PER_MINUTE, gt=0, le=60)


class HtxSettings(ExchangeSettingsBase):
    """``exchanges.htx:``. No recv_window: signature v2 carries only a ``Timestamp``."""

    base_url: str = HTX_BASE_URL
    max_weight_per_minute: int = Field(default=HTX_MAX_WEIGHT_PER_MINUTE, gt=0)


class GateSettings(ExchangeSettingsBase):
    """``exchanges.gate:``. No recv_window: a Gate timestamp must lie within 60 s of the
    server's time."""

    base_url: str = GATE_BASE_URL
    max_weight_per_minute: int = Field(default=GATE_MAX_WEIGHT_PER_MINUTE, gt=0)


class KrakenSettings(ExchangeSettingsBase):
    """``exchanges.kraken:``. No recv_window: Kraken checks a strictly increasing nonce per key
    instead of a time window, so ``time_sync_interval`` is unused."""

    base_url: str = KRAKEN_BASE_URL
    max_weight_per_minute: int = Field(default=KRAKEN_MAX_WEIGHT_PER_MINUTE, gt=0)


class KucoinSettings(ExchangeSettingsBase):
    """``exchanges.kucoin:``. KuCoin has no recv_window: a timestamp must lie within 5 s of
    the server's time."""

    base_url: str = KUCOIN_BASE_URL
    max_weight_per_minute: int = Field(default=KUCOIN_MAX_WEIGHT_PER_MINUTE, gt=0)


class OkxSettings(ExchangeSettingsBase):
    """``exchanges.okx:``. OKX has no recv_window: a request expires 30 s from server time."""

    base_url: str = OKX_BASE_URL
    max_weight_per_minute: int = Field(default=OKX_MAX_WEIGHT_PER_MINUTE, gt=0)


class _RecvWindowSettings(ExchangeSettingsBase):
    """A section whose exchange takes a ``recvWindow`` (more than 0 s, at most 60 s)."""

    recv_window: Duration = timedelta(seconds=5)

    @field_validator("recv_window")
    @classmethod
    def _recv_window_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(seconds=60):
            raise PydanticCustomError("duration", "must be more than 0s and at most 60s")
        return value


class MexcSettings(_RecvWindowSettings):
    """``exchanges.mexc:`` (liveness only)."""

    base_url: str = MEXC_BASE_URL
    recv_window: Duration = MEXC_RECV_WINDOW
    max_weight_per_minute: int = Field(default=MEXC_MAX_WEIGHT_PER_MINUTE, gt=0)


class BitmartSettings(ExchangeSettingsBase):
    """``exchanges.bitmart:`` (liveness only). A BitMart timestamp must lie within a minute
    of the server's time."""

    base_url: str = BITMART_BASE_URL
    max_weight_per_minute: int = Field(default=LIVENESS_MAX_WEIGHT_PER_MINUTE, gt=0)


class BitrueSettings(_RecvWindowSettings):
    """``exchanges.bitrue:`` (liveness only)."""

    base_url: str = BITRUE_BASE_URL
    recv_window: Duration = BITRUE_RECV_WINDOW
    max_weight_per_minute: int = Field(default=LIVENESS_MAX_WEIGHT_PER_MINUTE, gt=0)


class XtSettings(_RecvWindowSettings):
    """``exchanges.xt:``. ``base_url`` is XT's user-center host, where a key reads its own
    settings; ``recv_window`` is ``validate-recvwindow``."""

    base_url: str = XT_BASE_URL
    recv_window: Duration = XT_RECV_WINDOW
    max_weight_per_minute: int = Field(default=LIVENESS_MAX_WEIGHT_PER_MINUTE, gt=0)


class LbankSettings(ExchangeSettingsBase):
    """``exchanges.lbank:`` (liveness only)."""

    base_url: str = LBANK_BASE_URL
    max_weight_per_minute: int = Field(default=LIVENESS_MAX_WEIGHT_PER_MINUTE, gt=0)


class CoinstoreSettings(ExchangeSettingsBase):
    """``exchanges.coinstore:`` (liveness only)."""

    base_url: str = COINSTORE_BASE_URL
    max_weight_per_minute: int = Field(default=LIVENESS_MAX_WEIGHT_PER_MINUTE, gt=0)


class BiconomySettings(ExchangeSettingsBase):
    """``exchanges.biconomy:`` (liveness only)."""

    base_url: str = BICONOMY_BASE_URL
    max_weight_per_minute: int = Field(default=LIVENESS_MAX_WEIGHT_PER_MINUTE, gt=0)


class BingxSettings(ExchangeSettingsBase):
    """``exchanges.bingx:``. ``recv_window`` is sent with every signed request; BingX documents
    5 s as both its default and its maximum."""

    base_url: str = BINGX_BASE_URL
    recv_window: Duration = BINGX_RECV_WINDOW
    max_weight_per_minute: int = Field(default=BINGX_MAX_WEIGHT_PER_MINUTE, gt=0)

    @field_validator("recv_window")
    @classmethod
    def _recv_window_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= BINGX_MAX_RECV_WINDOW:
            raise PydanticCustomError("duration", "must be more than 0s and at most 5s")
        return value


class CoinbaseSettings(ExchangeSettingsBase):
    """``exchanges.coinbase:`` (Advanced Trade). No recv_window: each request carries a JWT valid
    for 120 s from the time keymon reads off Coinbase's clock (``time_sync_interval``)."""

    base_url: str = COINBASE_BASE_URL
    max_weight_per_minute: int = Field(default=COINBASE_MAX_WEIGHT_PER_MINUTE, gt=0)


class ExchangesSettings(_Model):
    """``exchanges:``: optional per-exchange settings, one field per supported exchange."""

    binance: BinanceSettings = BinanceSettings()
    bybit: BybitSettings = BybitSettings()
    bitget: BitgetSettings = BitgetSettings()
    htx: HtxSettings = HtxSettings()
    kucoin: KucoinSettings = KucoinSettings()
    okx: OkxSettings = OkxSettings()
    gate: GateSettings = GateSettings()
    mexc: MexcSettings = MexcSettings()
    bitmart: BitmartSettings = BitmartSettings()
    bitrue: BitrueSettings = BitrueSettings()
    xt: XtSettings = XtSettings()
    lbank: LbankSettings = LbankSettings()
    coinstore: CoinstoreSettings = CoinstoreSettings()
    biconomy: BiconomySettings = BiconomySettings()
    kraken: KrakenSettings = KrakenSettings()
    bingx: BingxSettings = BingxSettings()
    coinbase: CoinbaseSettings = CoinbaseSettings()

    def for_exchange(self, name: str) -> ExchangeSettingsBase:
        """The settings section of exchange ``name``."""
        section = getattr(self, name)
        assert isinstance(section, ExchangeSettingsBase)
        return section


class Policy(_Model):
    """One named policy: what a key must and must not be able to do."""

    require: tuple[Permission, ...] = ("read", "spot_trade")
    forbid: dict[Permission, Severity] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "internal_transfer": Severity.CRITICAL,
            "universal_transfer": Severity.CRITICAL,
            "futures_trade": Severity.WARNING,
            "options_trade": Severity.WARNING,
            "margin_loan": Severity.WARNING,
            "portfolio_margin": Severity.WARNING,
        }
    )
    require_ip_restriction: bool = True
    review_warning: Duration = timedelta(days=14)
    review_critical: Duration = timedelta(days=3)
    max_age: Duration | None = None
    #: Audit keys under this policy this often (default: ``audit.interval``).
    interval: Duration | None = None

    @field_validator("forbid")
    @classmethod
    def _withdraw_has_its_own_rule(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        if "withdraw" in value:
            raise PydanticCustomError(
                "policy",
                "withdraw is always checked by the withdraw_enabled rule (critical); "
                "remove it from forbid",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        both = sorted(set(self.require) & set(self.forbid))
        if both:
            raise PydanticCustomError(
                "policy", "{perms}: both required and forbidden", {"perms": ", ".join(both)}
            )
        if self.review_critical > self.review_warning:
            raise PydanticCustomError(
                "policy",
                "review_critical ({crit}) must not be longer than review_warning ({warn})",
                {
                    "crit": format_duration(self.review_critical),
                    "warn": format_duration(self.review_warning),
                },
            )
        return self


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS = frozenset(
    {
        "key",
        "client",
        "exchange",
        "policy",
        "key_id",
        "coverage",
        "permission",
        "rule",
        "severity",
        "kind",
        "reason",
        "field",
        "endpoint",
        "status",
        "le",
        "quantile",
    }
)


class KeyBase(_Model):
    """Fields every key has, whatever its exchange. Each exchange's key model narrows
    ``exchange`` to its name (the discriminator) and adds what it needs (a passphrase, a key
    type)."""

    exchange: str
    name: str
    client: str = Field(min_length=1)
    api_key: SecretRef
    api_secret: SecretRef
    policy: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    #: Audit this key this often (default: its policy's interval, then ``audit.interval``).
    interval: Duration | None = None

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _KEY_NAME.fullmatch(value):
            raise PydanticCustomError(
                "name",
                "'{value}' is not a key name: use letters, digits, '-', '_' and '.'",
                {"value": value[:100]},
            )
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for label in value:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise PydanticCustomError(
                    "label", "'{label}' is not a Prometheus label name", {"label": label}
                )
            if label in _RESERVED_LABELS:
                raise PydanticCustomError(
                    "label", "'{label}' is a label keymon sets itself", {"label": label}
                )
        return value


BinanceKeyType = Literal["hmac", "ed25519", "rsa"]


class BinanceKey(KeyBase):
    """A Binance key. ``key_type`` defaults to what the secret is: a PEM private key is
    Ed25519 or RSA ("self-generated"), anything else is an HMAC secret ("system generated")."""

    exchange: Literal["binance"]
    key_type: BinanceKeyType | None = None

    @field_validator("api_secret")
    @classmethod
    def _readable_key_material(cls, value: Secret) -> Secret:
        detect_binance_key_type(value.get())  # a PEM that is no usable key fails here
        return value

    @model_validator(mode="after")
    def _key_type_matches(self) -> Self:
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


class BybitKey(KeyBase):
    """A Bybit key. Only system-generated (HMAC) keys are supported: an RSA key's secret is
    its private key, which this release does not sign with."""

    exchange: Literal["bybit"]


class BitgetKey(KeyBase):
    """A Bitget key: the passphrase chosen when the key was created is sent with every
    request (``ACCESS-PASSPHRASE``), so it is required."""

    exchange: Literal["bitget"]
    passphrase: SecretRef


class HtxKey(KeyBase):
    """An HTX key. ``GET /v2/user/api-key`` needs the account's ``uid`` (the numeric user id
    shown in the HTX account settings, or answered by ``GET /v2/user/uid``), so it is
    required. It is not a secret."""

    exchange: Literal["htx"]
    uid: str = Field(pattern=r"^[0-9]{1,20}$")


class GateKey(KeyBase):
    """A Gate (APIv4) key: API key and secret, no passphrase."""

    exchange: Literal["gate"]


class KrakenKey(KeyBase):
    """A Kraken spot key: the API key and its private key ("secret"), which is base64. Kraken
    signs with the decoded bytes, so a secret that does not decode is refused at load time."""

    exchange: Literal["kraken"]

    @field_validator("api_secret")
    @classmethod
    def _base64_secret(cls, value: Secret, info: ValidationInfo) -> Secret:
        if not kraken_secret_decodes(value.get()):
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


class KucoinKey(KeyBase):
    """A KuCoin key: API key, secret and the passphrase chosen when the key was created.
    ``key_version`` is the key's API version (2 or 3; the universal SDK sends 3); for both the
    passphrase is sent HMAC-signed."""

    exchange: Literal["kucoin"]
    passphrase: SecretRef
    key_version: Literal[2, 3] = KUCOIN_DEFAULT_KEY_VERSION


class OkxKey(KeyBase):
    """An OKX key. OKX keys have a passphrase, chosen at key creation and sent with every
    signed request (``OK-ACCESS-PASSPHRASE``); it is a secret like the API secret."""

    exchange: Literal["okx"]
    passphrase: SecretRef


class MexcKey(KeyBase):
    """A MEXC key (liveness only): API key and HMAC secret."""

    exchange: Literal["mexc"]


class BitmartKey(KeyBase):
    """A BitMart key (liveness only). The memo chosen when the key was created is part of
    every signature, so it is required, and kept secret like the API secret."""

    exchange: Literal["bitmart"]
    memo: SecretRef


class BitrueKey(KeyBase):
    """A Bitrue key (liveness only): API key and HMAC secret."""

    exchange: Literal["bitrue"]


class XtKey(KeyBase):
    """An XT.com key: API key (XT's appkey / accessKey) and HMAC secret."""

    exchange: Literal["xt"]


class LbankKey(KeyBase):
    """An LBank key (liveness only). Only HmacSHA256 keys, as the client guide asks; an RSA
    key's secret is its private key, which this release does not sign with."""

    exchange: Literal["lbank"]


class CoinstoreKey(KeyBase):
    """A Coinstore key (liveness only): API key and HMAC secret."""

    exchange: Literal["coinstore"]


class BiconomyKey(KeyBase):
    """A Biconomy key (liveness only): API key and secret."""

    exchange: Literal["biconomy"]


class BingxKey(KeyBase):
    """A BingX key: API key and secret, no passphrase. keymon reads only the key's own
    permissions (``GET /openApi/v1/account/apiPermissions``), so no ``uid`` is needed."""

    exchange: Literal["bingx"]


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


KeyConfig = Annotated[
    BinanceKey
    | BybitKey
    | OkxKey
    | KucoinKey
    | BitgetKey
    | HtxKey
    | GateKey
    | KrakenKey
    | BingxKey
    | CoinbaseKey
    | MexcKey
    | BitmartKey
    | BitrueKey
    | XtKey
    | LbankKey
    | CoinstoreKey
    | BiconomyKey,
    Field(discriminator="exchange"),
]
#: Every supported exchange: the introspecting ones, then the liveness-only ones.
_KEY_MODELS: dict[str, type[KeyBase]] = {
    "binance": BinanceKey,
    "bybit": BybitKey,
    "okx": OkxKey,
    "kucoin": KucoinKey,
    "bitget": BitgetKey,
    "htx": HtxKey,
    "gate": GateKey,
    "kraken": KrakenKey,
    "bingx": BingxKey,
    "coinbase": CoinbaseKey,
    "mexc": MexcKey,
    "bitmart": BitmartKey,
    "bitrue": BitrueKey,
    "xt": XtKey,
    "lbank": LbankKey,
    "coinstore": CoinstoreKey,
    "biconomy": BiconomyKey,
}
EXCHANGE_NAMES: tuple[str, ...] = tuple(_KEY_MODELS)


def _apprise_url(value: Secret) -> Secret:
    """A channel URL Apprise can use; the message names the scheme, never the tokens."""
    import apprise  # only configurations with notifications pay for the import

    url = value.get()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme or apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise PydanticCustomError(
            "url",
            "not a notification URL Apprise understands (scheme '{scheme}'); see "
            "https://github.com/caronc/apprise/wiki",
            {"scheme": scheme[:20] or "none"},
        )
    return value


class NotifySettings(_Model):
    """``notify:``: Apprise URLs for desks without Alertmanager."""

    urls: tuple[Annotated[SecretRef, AfterValidator(_apprise_url)], ...] = ()
    reminder: Duration = timedelta(hours=4)
    send_resolved: bool = True

    @field_validator("reminder")
    @classmethod
    def _reminder_floor(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise PydanticCustomError("duration", "must be at least 1s")
        return value


TrustedNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_network(value: object) -> TrustedNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("ip", "an IP address or CIDR network is a string")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        why = str(exc)
        if value.strip() in why:  # ipaddress repeats the value; say it once
            why = why.replace(value.strip(), "").strip(" '")
        raise PydanticCustomError(
            "ip",
            "'{value}' is not an IP address or CIDR network ({why})",
            {"value": value[:60], "why": why},
        ) from None


class Settings(BaseSettings):
    """The whole configuration. Built by :func:`load`."""

    model_config = SettingsConfigDict(
        env_prefix="KEYMON_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("./data")
    log: LogSettings = LogSettings()
    audit: AuditSettings = AuditSettings()
    exchanges: ExchangesSettings = ExchangesSettings()
    trusted_ips: tuple[Annotated[TrustedNetwork, BeforeValidator(_parse_network)], ...] = ()
    policies: dict[str, Policy] = Field(default_factory=lambda: {DEFAULT_POLICY_NAME: Policy()})
    default_policy: str = DEFAULT_POLICY_NAME
    keys: tuple[KeyConfig, ...] = Field(min_length=1)
    notify: NotifySettings = NotifySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen(value)
        return value

    def policy_for(self, key: KeyBase) -> tuple[str, Policy]:
        """The name and policy that apply to ``key``."""
        name = key.policy or self.default_policy
        return name, self.policies[name]

    def interval_for(self, key: KeyBase) -> timedelta:
        """How often ``key`` is audited: its own interval, its policy's, or ``audit.interval``."""
        policy = self.policies.get(key.policy or self.default_policy)
        return key.interval or (policy.interval if policy else None) or self.audit.interval

    @model_validator(mode="after")
    def _intervals_longer_than_jitter(self) -> Self:
        jitter = self.audit.jitter
        where = [(f"policies.{n}.interval", p.interval) for n, p in self.policies.items()]
        where += [(f"keys[{i}].interval", k.interval) for i, k in enumerate(self.keys)]
        for loc, interval in where:
            if interval is not None and (interval < timedelta(seconds=1) or interval <= jitter):
                raise PydanticCustomError(
                    "duration",
                    "{loc}: {interval} must be at least 1s and longer than audit.jitter ({jitter})",
                    {
                        "loc": loc,
                        "interval": format_duration(interval),
                        "jitter": format_duration(jitter),
                    },
                )
        return self

    def secret_values(self) -> set[str]:
        """Every secret value in the configuration, for the log redaction step."""
        values = {s.get() for key in self.keys for s in key_secrets(key)}
        values.update(url.get() for url in self.notify.urls)
        return values


def key_secrets(key: KeyBase) -> list[Secret]:
    """Every secret of a key: API key, secret, and a passphrase or memo where the exchange
    uses one (every field that holds a :class:`Secret`)."""
    values = (getattr(key, name) for name in type(key).model_fields)
    return [value for value in values if isinstance(value, Secret)]


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::]:9877`` for IPv6) into its parts, or raise a config error."""
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]\s]*)):(\d{1,5})", value)
    if not match or not 0 <= int(match.group(3)) < 65536:  # 0: any free port (tests)
        raise PydanticCustomError(
            "listen", "'{value}' is not host:port, such as 0.0.0.0:9877", {"value": value[:60]}
        )
    return (match.group(1) or match.group(2) or "0.0.0.0", int(match.group(3)))  # noqa: S104


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A valid configuration and the warnings it drew (such as literal secrets)."""

    settings: Settings
    path: Path
    warnings: tuple[str, ...]


def load(path: Path | str) -> LoadedConfig:
    """Read, override from the environment and validate the configuration at ``path``.

    Raises:
        ConfigError: with every problem found, each prefixed by its location.
    """
    path = Path(path)
    raw = _read_yaml(path)
    problems = [f"{k}: unknown field" for k in raw if not isinstance(k, str)]
    raw = {k: v for k, v in raw.items() if isinstance(k, str)}
    problems += _cross_check(raw)
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        problems += _reference_problems(
            raw.get("policies", {DEFAULT_POLICY_NAME: None}),
            raw.get("default_policy", DEFAULT_POLICY_NAME),
            raw.get("keys"),
        )
        raise ConfigError(_dedupe(_format_errors(exc) + problems)) from None
    problems += _reference_problems(settings.policies, settings.default_policy, settings.keys)
    if problems:
        raise ConfigError(_dedupe(problems))
    return LoadedConfig(settings, path, tuple(_literal_secret_warnings(settings)))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = _parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        # PyYAML's own rendering quotes the offending line, which may hold a literal secret:
        # say where and what, never the line itself.
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = str(exc.problem or exc.context)
        ctx = exc.context_mark
        if exc.problem and exc.context and ctx and mark and ctx.line != mark.line:
            what += f" ({exc.context} at line {ctx.line + 1}, column {ctx.column + 1})"
        # Alias and tag names are the user's text, perhaps a secret: never quote them.
        what = re.sub(r"'[^'<][^']{2,}'", "(...)", what)
        raise ConfigError([f"{where}: invalid YAML: {what}"]) from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError):
        # Tags such as !!int or !!timestamp on a value they cannot read fail inside PyYAML's
        # constructors with plain Python errors whose text quotes the value.
        raise ConfigError([f"{path}: invalid YAML (a value or tag YAML cannot read)"]) from None
    if data is None:
        raise ConfigError([f"{path}: the file is empty"])
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of settings"])
    return data


def _parse_yaml(text: str) -> Any:
    """libyaml's C parser where available (a 10,000-key file loads in a fraction of the time);
    on an error, the pure-Python parser again, whose messages say where and what precisely."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 - a safe loader, in C
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def _cross_check(raw: Mapping[str, Any]) -> list[str]:
    """Checks across fields, run on the raw data so they report even when fields are bad."""
    problems = []
    keys = raw.get("keys")
    if isinstance(keys, list):
        seen: dict[str, int] = {}
        for index, key in enumerate(keys):
            name = key.get("name") if isinstance(key, dict) else None
            if isinstance(name, str):
                if name in seen:
                    problems.append(
                        f"keys[{index}].name: '{name}' is already the name of keys[{seen[name]}]; "
                        "key names must be unique"
                    )
                else:
                    seen[name] = index
    return problems


def _reference_problems(policies: object, default: object, keys: object) -> list[str]:
    """Policies named by ``default_policy`` and by keys must exist.

    Runs on the raw data when other fields are invalid (so every problem is listed at once),
    and on the validated settings otherwise (environment overrides included).
    """
    if not isinstance(policies, Mapping):
        return []
    defined = ", ".join(sorted(map(str, policies))) or "none"
    problems = []
    if isinstance(default, str) and default not in policies:
        problems.append(f"default_policy: no policy named '{default}' (defined: {defined})")
    for index, key in enumerate(keys if isinstance(keys, list | tuple) else []):
        policy = key.get("policy") if isinstance(key, dict) else getattr(key, "policy", None)
        if isinstance(policy, str) and policy not in policies:
            problems.append(
                f"keys[{index}].policy: no policy named '{policy}' (defined: {defined})"
            )
    return problems


def _literal_secret_warnings(settings: Settings) -> Iterator[str]:
    advice = "secret written literally in the configuration; use {env: NAME} or {file: PATH}"
    for index, key in enumerate(settings.keys):
        for field_name in type(key).model_fields:
            secret = getattr(key, field_name, None)
            if isinstance(secret, Secret) and secret.origin == "literal":
                yield f"keys[{index}].{field_name}: {advice} outside trials"
    for index, url in enumerate(settings.notify.urls):
        if url.origin == "literal":
            yield f"notify.urls[{index}]: channel URLs hold tokens; {advice}"


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    errors = exc.errors(include_url=False, include_input=False)
    item_errors = any(e["loc"][:1] == ("keys",) and len(e["loc"]) > 1 for e in errors)
    for error in errors:
        loc = _format_loc(error["loc"])
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind == "extra_forbidden":
            message = "unknown field" + _did_you_mean(error["loc"])
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "union_tag_invalid":
            message = (
                f"unknown exchange '{ctx.get('tag')}' (supported: {', '.join(EXCHANGE_NAMES)})"
            )
            loc = f"{loc}.exchange" if loc else "exchange"
        elif kind == "union_tag_not_found":
            message = f"exchange is missing (supported: {', '.join(EXCHANGE_NAMES)})"
            loc = f"{loc}.exchange" if loc else "exchange"
        elif kind == "literal_error" and _is_permission_loc(error["loc"]):
            message = f"unknown permission (expected one of: {', '.join(PERMISSIONS)})"
        elif kind == "too_short" and loc == "keys":
            if item_errors:  # pydantic counts the failed items as missing: say it once
                continue
            message = "at least one key must be configured"
        elif kind == "key_type":
            loc += ".key_type"
            message = error["msg"]
        elif kind in ("model_attributes_type", "dict_type", "model_type"):
            message = "expected a mapping of fields" + (
                " (name, client, exchange, api_key, api_secret)"
                if error["loc"][:1] == ("keys",) and len(error["loc"]) <= 2
                else ""
            )
        elif kind == "enum" and "forbid" in error["loc"]:
            message = "the severity must be warning or critical"
        else:
            message = error["msg"].removeprefix("Value error, ")
        source = _env_source(error["loc"])
        if source:
            message += f" (from environment variable {source})"
        lines.append(f"{loc}: {message}" if loc else message)
    return lines


def _env_source(loc: tuple[int | str, ...]) -> str | None:
    """The KEYMON_* variable that set the value at ``loc``, if one did."""
    parts = [p for p in loc if isinstance(p, str)]
    environ = {k.upper() for k in os.environ}
    for i in range(len(parts), 0, -1):
        name = "KEYMON_" + "__".join(parts[:i]).upper()
        if name in environ:
            return name
    return None


def _is_permission_loc(loc: tuple[int | str, ...]) -> bool:
    return len(loc) >= 3 and loc[0] == "policies" and loc[2] in ("require", "forbid")


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic's marker for "the key of this mapping"; the path says it
        elif part in EXCHANGE_NAMES and out.startswith("keys["):
            # The discriminated union adds the tag to the path; the user never wrote it.
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "": tuple(Settings.model_fields),
    "log": tuple(LogSettings.model_fields),
    "audit": tuple(AuditSettings.model_fields),
    "exchanges": tuple(ExchangesSettings.model_fields),
    "notify": tuple(NotifySettings.model_fields),
}


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    import difflib

    name = str(loc[-1])
    parent = loc[:-1]
    if not parent:
        candidates = _FIELD_NAMES[""]
    elif len(parent) == 1 and isinstance(parent[0], str) and parent[0] in _FIELD_NAMES:
        candidates = _FIELD_NAMES[parent[0]]
    elif parent[0] == "keys":
        exchange = next((p for p in parent[1:] if p in _KEY_MODELS), None)
        if exchange is not None:
            candidates = tuple(_KEY_MODELS[str(exchange)].model_fields)
        else:
            candidates = tuple(
                dict.fromkeys(f for m in _KEY_MODELS.values() for f in m.model_fields)
            )
    elif parent[0] == "policies":
        candidates = tuple(Policy.model_fields)
    elif (
        parent[0] == "exchanges" and len(parent) > 1 and parent[1] in ExchangesSettings.model_fields
    ):
        section = ExchangesSettings.model_fields[str(parent[1])].annotation
        if section is None:
            return ""
        candidates = tuple(section.model_fields)
    else:
        return ""
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
