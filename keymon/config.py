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
import errno
import ipaddress
import json
import math
import os
import re
import stat
import urllib.parse
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, get_origin

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
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

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
#: The longest duration keymon accepts anywhere (intervals, windows, ``max_age``, ``--since``):
#: ten years. Far beyond any useful setting, and well inside what ``timedelta``, ``datetime``
#: arithmetic up to year 9999 and the scheduler can hold (10,000,000d passed validation once and
#: then crashed the scheduler).
MAX_DURATION = timedelta(days=3650)
_MAX_DURATION_TEXT = "3650d"


def parse_duration(value: object) -> timedelta:
    """Parse ``30s``/``5m``/``1h``/``14d``/``1h30m`` (or a number of seconds) to a timedelta.

    Durations are finite, not negative and at most :data:`MAX_DURATION`; anything else is a
    ``PydanticCustomError`` (a ``ValueError``) that says which rule it broke.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration such as 30s, 5m, 1h or 14d")
    seconds: float | None = None
    if isinstance(value, int):
        # Compared before any float conversion: a huge integer does not fit a float.
        seconds = float(min(max(value, -1), MAX_DURATION.days * 86400 + 1))
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            seconds = None
        elif re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", text):
            seconds = sum(
                float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text)
            )
    if seconds is None:
        raise PydanticCustomError(
            "duration",
            "'{value}' is not a duration; write it like 30s, 5m, 1h or 14d",
            {"value": str(value)[:40]},
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "duration", "a duration must be a finite number, not {value}", {"value": str(value)}
        )
    if seconds < 0:
        raise PydanticCustomError("duration", "a duration must not be negative")
    if seconds > MAX_DURATION.total_seconds():  # also .inf
        raise PydanticCustomError(
            "duration",
            "'{value}' is longer than {max}, the longest duration keymon accepts",
            {"value": str(value)[:40], "max": _MAX_DURATION_TEXT},
        )
    return timedelta(seconds=seconds)


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


#: A secret file larger than this is not a secret (an RSA-4096 PEM is about 3.3 KB): it is
#: refused before it is read whole.
MAX_SECRET_FILE_BYTES = 64 * 1024
#: What ``{env: NAME}`` may name: a POSIX-style variable name.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
#: Names quoted back in messages: the upper-case convention (``ACME_BINANCE_SECRET``), at most
#: 64 characters, and either with an underscore or without digits. A key or secret pasted where
#: its variable's name belongs (``{env: vmPUZE6mv9...}``, ``{env: HUNTER2}``) is not quoted.
_SHOWN_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: Paths quoted back in messages: absolute or explicitly relative, made of ordinary file-name
#: components of at most 64 characters (no ``+`` or ``=``: base64 key material is not quoted).
_SHOWN_PATH = re.compile(r"(?:~|\.{1,2})?(?:/[A-Za-z0-9_.@:-]{1,64})+/?")
_SECRET_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _shown_env_name(name: str) -> str | None:
    """``name`` if it may be quoted in a message, None if it might be a secret itself."""
    if _SHOWN_ENV_NAME.fullmatch(name) and ("_" in name or not any(c.isdigit() for c in name)):
        return name
    return None


def _shown_path(path: str) -> str | None:
    """``path`` if it may be quoted in a message, None if it might be a secret itself."""
    return path if len(path) <= 1024 and _SHOWN_PATH.fullmatch(path) else None


def _env_secret(name: object) -> Secret:
    if not isinstance(name, str) or not name:
        raise PydanticCustomError("secret", "env: needs the name of a variable")
    if not _ENV_NAME.fullmatch(name):
        # Most likely the secret itself, written where its variable's name belongs: never quoted.
        raise PydanticCustomError(
            "secret",
            "env: is not an environment variable name (letters, digits and _); if it is the "
            "secret itself, put it in a variable or a file and name that here",
        )
    shown = _shown_env_name(name)
    found = os.environ.get(name)
    if found is None:
        if shown is None:
            raise PydanticCustomError(
                "secret",
                "the environment variable named by env: is not set (its name is not shown: it "
                "does not look like a variable name; is it the secret itself?)",
            )
        raise PydanticCustomError(
            "secret", "environment variable {name} is not set", {"name": name}
        )
    what = f"environment variable {shown}" if shown else "the environment variable named by env:"
    if not found:
        raise PydanticCustomError("secret", "{what} is empty", {"what": what})
    _check_secret_text(found, what)
    return Secret(SecretStr(found), f"environment variable {name}")


def _file_secret(path: object) -> Secret:
    if not isinstance(path, str) or not path:
        raise PydanticCustomError("secret", "file: needs a path")
    shown = _shown_path(path)
    what = f"secret file {shown}" if shown else "the secret file"
    hidden = (
        ""
        if shown
        else " (its name is not shown: it does not look like a path; is it the secret itself?)"
    )
    if "\x00" in path:
        raise PydanticCustomError("secret", "file: a path cannot contain a NUL character")
    try:
        # Looked at before it is opened: opening a FIFO would wait for a writer.
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise PydanticCustomError(
                "secret", "{what} is not a regular file{hidden}", {"what": what, "hidden": hidden}
            )
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise PydanticCustomError(
            "secret",
            "cannot read {what}: {why}{hidden}",
            {"what": what, "why": exc.strerror or type(exc).__name__, "hidden": hidden},
        ) from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise PydanticCustomError(
            "secret",
            "{what} is larger than {limit} KiB: not a secret",
            {"what": what, "limit": MAX_SECRET_FILE_BYTES // 1024},
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PydanticCustomError("secret", "{what} is not UTF-8 text", {"what": what}) from None
    # Docker and Kubernetes secrets usually end in a newline that is not the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise PydanticCustomError("secret", "{what} is empty", {"what": what})
    _check_secret_text(text, what)
    return Secret(SecretStr(text), f"file {path}")


def _check_secret_text(text: str, what: str) -> None:
    """A secret is text: control characters (other than line breaks and tabs, which PEM keys
    hold) mean a binary file or a paste gone wrong, and would break the request headers."""
    if _SECRET_CONTROL.search(text):
        raise PydanticCustomError(
            "secret", "{what} holds control characters (binary data?)", {"what": what}
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in YAML, undecodable bytes in env)
        raise PydanticCustomError(
            "secret", "{what} is not valid Unicode text", {"what": what}
        ) from None


def _resolve_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        if not value:
            raise PydanticCustomError("secret", "secret is empty")
        _check_secret_text(value, "the secret")
        return Secret(SecretStr(value), "literal")
    if isinstance(value, Mapping):
        keys = set(value)
        if keys == {"env"}:
            return _env_secret(value["env"])
        if keys == {"file"}:
            return _file_secret(value["file"])
    # Never quote the value: a mapping typo ({evn: ...}) may hold the secret itself.
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
        if value > MAX_TIMEOUT:
            raise PydanticCustomError("duration", "must be at most 10m")
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


#: The largest weight budget keymon accepts: far above any exchange's per-IP limit (Binance's
#: largest is 12,000 a minute), low enough that the budget's arithmetic stays exact.
MAX_WEIGHT_PER_MINUTE = 1_000_000
#: The longest HTTP timeout: a request still unanswered after ten minutes is lost.
MAX_TIMEOUT = timedelta(minutes=10)


def _whole_number(value: object) -> object:
    """YAML's ``true`` is no number, though Python's ``bool`` is an ``int``: refuse it."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "int_type", "expected a whole number, not {value}", {"value": str(value).lower()}
        )
    return value


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
_BOOL_WORDS |= {"1": True, "0": False}


def _boolean(value: object) -> object:
    """``true``/``false`` (an environment override may spell it yes/no, on/off, 1/0). Numbers
    and other text are refused: ``send_resolved: 2`` is a mistake, not a truth value."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise PydanticCustomError("bool_type", "expected true or false")


WeightPerMinute = Annotated[
    int, BeforeValidator(_whole_number), Field(gt=0, le=MAX_WEIGHT_PER_MINUTE)
]
Boolean = Annotated[bool, BeforeValidator(_boolean)]


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(value: str, *, allow_insecure_http: bool = False) -> str:
    """``value`` as a base URL keymon may send signed requests to, without a trailing slash.

    ``https://host[:port]``; plain ``http`` only to a loopback address (127.0.0.0/8, ``::1``,
    ``localhost``: tests, simulators) or with ``allow_insecure_http``. No user name or password
    (sent as Basic credentials with every request), no path, query or fragment. Messages never
    quote a URL that holds credentials or a query.
    """
    shown = value[:80] if not re.search(r"[@?#\s]", value) else None
    example = "such as https://api.binance.com"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S*", value):
        if shown is None:
            raise PydanticCustomError("url", f"not an http(s) base URL {example}")
        raise PydanticCustomError(
            "url", "'{value}' is not an http(s) base URL " + example, {"value": shown}
        )
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:  # an unclosed [ipv6 literal
        raise PydanticCustomError("url", f"not an http(s) base URL {example}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise PydanticCustomError(
            "url",
            "scheme '{scheme}': a base URL is https://host[:port], " + example,
            {"scheme": scheme[:20]},
        )
    if "@" in parts.netloc:
        raise PydanticCustomError(
            "url",
            "a base URL must not hold a user name or password (user:pass@): they would be sent "
            "with every request",
        )
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise PydanticCustomError("url", "a base URL takes no query (?...) or fragment (#...)")
    if parts.path not in ("", "/"):
        raise PydanticCustomError(
            "url", "a base URL takes no path (https://host[:port]): keymon adds the paths itself"
        )
    host = parts.hostname or ""
    if not host or not re.fullmatch(r"[a-z0-9_.-]+|[0-9a-f:.]+", host):
        raise PydanticCustomError("url", "a base URL needs a host name " + example)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise PydanticCustomError("url", "the port must be a number from 1 to 65535")
    if scheme == "http" and not allow_insecure_http and not _loopback_host(host):
        raise PydanticCustomError(
            "url",
            "plain http to {host} would send API keys and signatures in clear: use https "
            "(http is accepted for loopback addresses only: 127.0.0.0/8, ::1, localhost; or "
            "set allow_insecure_http: true for a simulator on a private network)",
            {"host": host[:80]},
        )
    return value.rstrip("/")


class ExchangeSettingsBase(_Model):
    """What every ``exchanges.<name>:`` section has; each exchange sets its own defaults."""

    #: Plain http to a host other than a loopback address. For a simulated exchange on a
    #: private network only (the compose demo): never for a real exchange. Declared first: the
    #: base_url check reads it.
    allow_insecure_http: Boolean = False
    base_url: str
    #: keymon's own share of the exchange's per-IP rate limit (the bots share the IP).
    max_weight_per_minute: WeightPerMinute
    time_sync_interval: Duration = timedelta(minutes=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        return check_base_url(
            value, allow_insecure_http=info.data.get("allow_insecure_http") is True
        )

    @field_validator("time_sync_interval")
    @classmethod
    def _time_sync_floor(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise PydanticCustomError("duration", "must be at least 1s")
        return value


class BinanceSettings(ExchangeSettingsBase):
    """``exchanges.binance:``."""

    base_url: str = BINANCE_BASE_URL
    recv_window: Duration = BINANCE_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = BINANCE_MAX_WEIGHT_PER_MINUTE

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
    max_weight_per_minute: WeightPerMinute = BYBIT_MAX_WEIGHT_PER_MINUTE

    @field_validator("recv_window")
    @classmethod
    def _recv_window_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= BYBIT_MAX_RECV_WINDOW:
            raise PydanticCustomError("duration", "must be more than 0s and at most 60s")
        return value


class BitgetSettings(ExchangeSettingsBase):
    """``exchanges.bitget:``. No recv_window: Bitget's signature has none."""

    base_url: str = BITGET_BASE_URL
    max_weight_per_minute: Annotated[int, BeforeValidator(_whole_number), Field(gt=0, le=60)] = (
        BITGET_MAX_WEIGHT_PER_MINUTE
    )


class HtxSettings(ExchangeSettingsBase):
    """``exchanges.htx:``. No recv_window: signature v2 carries only a ``Timestamp``."""

    base_url: str = HTX_BASE_URL
    max_weight_per_minute: WeightPerMinute = HTX_MAX_WEIGHT_PER_MINUTE


class GateSettings(ExchangeSettingsBase):
    """``exchanges.gate:``. No recv_window: a Gate timestamp must lie within 60 s of the
    server's time."""

    base_url: str = GATE_BASE_URL
    max_weight_per_minute: WeightPerMinute = GATE_MAX_WEIGHT_PER_MINUTE


class KrakenSettings(ExchangeSettingsBase):
    """``exchanges.kraken:``. No recv_window: Kraken checks a strictly increasing nonce per key
    instead of a time window, so ``time_sync_interval`` is unused."""

    base_url: str = KRAKEN_BASE_URL
    max_weight_per_minute: WeightPerMinute = KRAKEN_MAX_WEIGHT_PER_MINUTE


class KucoinSettings(ExchangeSettingsBase):
    """``exchanges.kucoin:``. KuCoin has no recv_window: a timestamp must lie within 5 s of
    the server's time."""

    base_url: str = KUCOIN_BASE_URL
    max_weight_per_minute: WeightPerMinute = KUCOIN_MAX_WEIGHT_PER_MINUTE


class OkxSettings(ExchangeSettingsBase):
    """``exchanges.okx:``. OKX has no recv_window: a request expires 30 s from server time."""

    base_url: str = OKX_BASE_URL
    max_weight_per_minute: WeightPerMinute = OKX_MAX_WEIGHT_PER_MINUTE


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
    max_weight_per_minute: WeightPerMinute = MEXC_MAX_WEIGHT_PER_MINUTE


class BitmartSettings(ExchangeSettingsBase):
    """``exchanges.bitmart:`` (liveness only). A BitMart timestamp must lie within a minute
    of the server's time."""

    base_url: str = BITMART_BASE_URL
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class BitrueSettings(_RecvWindowSettings):
    """``exchanges.bitrue:`` (liveness only)."""

    base_url: str = BITRUE_BASE_URL
    recv_window: Duration = BITRUE_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class XtSettings(_RecvWindowSettings):
    """``exchanges.xt:``. ``base_url`` is XT's user-center host, where a key reads its own
    settings; ``recv_window`` is ``validate-recvwindow``."""

    base_url: str = XT_BASE_URL
    recv_window: Duration = XT_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class LbankSettings(ExchangeSettingsBase):
    """``exchanges.lbank:`` (liveness only)."""

    base_url: str = LBANK_BASE_URL
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class CoinstoreSettings(ExchangeSettingsBase):
    """``exchanges.coinstore:`` (liveness only)."""

    base_url: str = COINSTORE_BASE_URL
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class BiconomySettings(ExchangeSettingsBase):
    """``exchanges.biconomy:`` (liveness only)."""

    base_url: str = BICONOMY_BASE_URL
    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class BingxSettings(ExchangeSettingsBase):
    """``exchanges.bingx:``. ``recv_window`` is sent with every signed request; BingX documents
    5 s as both its default and its maximum."""

    base_url: str = BINGX_BASE_URL
    recv_window: Duration = BINGX_RECV_WINDOW
    max_weight_per_minute: WeightPerMinute = BINGX_MAX_WEIGHT_PER_MINUTE

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
    max_weight_per_minute: WeightPerMinute = COINBASE_MAX_WEIGHT_PER_MINUTE


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
    require_ip_restriction: Boolean = True
    review_warning: Duration = timedelta(days=14)
    review_critical: Duration = timedelta(days=3)
    max_age: Duration | None = None
    #: Audit keys under this policy this often (default: ``audit.interval``).
    interval: Duration | None = None

    @field_validator("max_age")
    @classmethod
    def _max_age_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise PydanticCustomError("duration", "must be more than 0s")
        return value

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
    send_resolved: Boolean = True

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
    if "%" in value:
        # ipaddress accepts fe80::1%eth0, but a zone names an interface of this machine, not an
        # address the exchange could show.
        raise PydanticCustomError(
            "ip",
            "'{value}' is a scoped IPv6 address (%zone); give the address without the zone",
            {"value": value[:60]},
        )
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
        # The YAML file arrives as init kwargs; the environment overrides it. Variables load()
        # already reported as unreadable are left out, so the other problems are still found.
        skipped = _SKIPPED_ENV.get()
        if skipped and isinstance(env_settings, EnvSettingsSource):
            env_settings.env_vars = {
                k: v for k, v in env_settings.env_vars.items() if k.lower() not in skipped
            }
        return (env_settings, init_settings)

    @field_validator("data_dir")
    @classmethod
    def _data_dir_path(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise PydanticCustomError("path", "a path cannot contain a NUL character")
        return value

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


#: The largest configuration file keymon reads, checked before parsing. A 10,000-key file is
#: 1.1 MB in the benchmark's one-line form and about 3.5 MB written out with labels and comments.
MAX_CONFIG_BYTES = 8 * 1024 * 1024
#: How deeply the file may nest. keymon's settings need 5 levels (``keys[0].api_secret.env``);
#: libyaml's composer recurses once per level and crashed the process (SIGSEGV) at 100,000.
MAX_NESTING = 32
#: Values in the file once YAML aliases are expanded (a "billion laughs" file is a few hundred
#: bytes). A 10,000-key file has about 250,000.
MAX_VALUES = 2_000_000
#: On a syntax error in a file up to this size, the pure-Python parser reads it again for a more
#: precise message (it is some ten times slower than libyaml).
_PRECISE_REPARSE_BYTES = 1024 * 1024


def load(path: Path | str) -> LoadedConfig:
    """Read, override from the environment and validate the configuration at ``path``.

    Raises:
        ConfigError: with every problem found, each prefixed by its location. Nothing else: an
            unexpected failure is one problem naming its type (and a bug to report).
    """
    path = Path(path)
    try:
        return _load(path)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            [
                f"{path}: the configuration could not be validated ({type(exc).__name__}); "
                "this is a bug in keymon, please report it"
            ]
        ) from None


def _load(path: Path) -> LoadedConfig:
    raw, problems = _read_yaml(path)
    problems += [f"{k}: unknown field" for k in raw if not isinstance(k, str)]
    raw = {k: v for k, v in raw.items() if isinstance(k, str)}
    problems += _cross_check(raw)
    env_problems, bad_env = _env_json_problems(os.environ)
    problems += env_problems
    token = _SKIPPED_ENV.set(frozenset(name.lower() for name in bad_env))
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        problems += _reference_problems(
            raw.get("policies", {DEFAULT_POLICY_NAME: None}),
            raw.get("default_policy", DEFAULT_POLICY_NAME),
            raw.get("keys"),
        )
        raise ConfigError(_dedupe(_format_errors(exc) + problems)) from None
    except SettingsError as exc:  # a shape of override _env_json_problems did not foresee
        problems.append(_settings_error_problem(exc))
        raise ConfigError(_dedupe(problems)) from None
    finally:
        _SKIPPED_ENV.reset(token)
    problems += _reference_problems(settings.policies, settings.default_policy, settings.keys)
    if problems:
        raise ConfigError(_dedupe(problems))
    return LoadedConfig(settings, path, tuple(_literal_secret_warnings(settings)))


def _read_config_bytes(path: Path) -> bytes:
    """The file's bytes, at most :data:`MAX_CONFIG_BYTES` of them, or a located problem."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a configuration file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or type(exc).__name__}"]) from None
    except ValueError:  # a NUL in the path
        raise ConfigError([f"{path}: not a usable path"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [
                f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; keymon reads "
                "configuration files up to that size"
            ]
        )
    return data


def _read_yaml(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The file's top-level mapping, and its duplicate keys as problems."""
    data = _read_config_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [f"{path}:{line}:{column}: not UTF-8 text; save the file as UTF-8"]
        ) from None
    try:
        loaded, duplicates = _parse_yaml(text)
    except _LimitExceeded as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: {exc.problem}"]) from None
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
    except yaml.reader.ReaderError as exc:
        # A control character (or other unprintable one) in the text.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            [f"{path}:{line}:{column}: invalid YAML: a control character YAML does not allow"]
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError):
        # Tags such as !!int or !!timestamp on a value they cannot read fail inside PyYAML's
        # constructors with plain Python errors whose text quotes the value.
        raise ConfigError([f"{path}: invalid YAML (a value or tag YAML cannot read)"]) from None
    if loaded is None:
        raise ConfigError([f"{path}: the file is empty"])
    if not isinstance(loaded, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of settings"])
    return loaded, duplicates


def _parse_yaml(text: str) -> tuple[Any, list[str]]:
    """The document and its duplicate-key problems. libyaml's C parser where available (a
    10,000-key file loads in a fraction of the time); on a syntax error in a file of reasonable
    size, the pure-Python parser again, whose messages say where and what precisely. Both feed
    :class:`_LimitedComposer`, so nesting and alias expansion are bounded either way."""
    if _FastLoader is not None:
        fast = _FastLoader(text)
        try:
            return fast.get_single_data(), fast.duplicates
        except _LimitExceeded:
            raise
        except yaml.YAMLError:
            if len(text) > _PRECISE_REPARSE_BYTES:
                raise
        finally:
            fast.dispose()
    precise = _PreciseLoader(text)
    try:
        return precise.get_single_data(), precise.duplicates
    finally:
        precise.dispose()


class _LimitExceeded(yaml.MarkedYAMLError):
    """The file nests too deeply or expands to too many values; ``problem`` says which."""


_YAML_TAG = "tag:yaml.org,2002:"
#: Fields of a key whose values are secrets: nothing under them is ever quoted.
_SECRET_FIELDS = frozenset({"api_key", "api_secret", "passphrase", "memo"})


class _LimitedComposer(yaml.composer.Composer):
    """PyYAML's composer, iterative over the parser's events, with three additions:

    * nesting deeper than :data:`MAX_NESTING` stops composition at once (libyaml's C composer
      recursed into a segmentation fault on a deep file, before any check could run);
    * every value is counted, an alias as the size of what it repeats, up to
      :data:`MAX_VALUES` (an alias that repeats its own ancestor is refused);
    * a key given twice in one mapping is a problem naming both lines (YAML would keep the
      second silently), collected in ``duplicates``.
    """

    if TYPE_CHECKING:  # provided by the parser and resolver it is mixed with

        def check_event(self, *choices: Any) -> bool: ...
        def peek_event(self) -> Any: ...
        def get_event(self) -> Any: ...
        def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str: ...

    def __init__(self) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        self._depth = 0
        self._values = 0
        self._sizes: dict[int, int] = {}
        self._path: list[str | int] = []

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """As PyYAML's, but a value its tag cannot read (``!!int nope``, ``!!timestamp
        2024-13-45``) is a located error, not a bare ``ValueError``."""
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, TypeError, OverflowError, AttributeError, LookupError):
            tag = str(node.tag)
            shown = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else "its tag"
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} cannot read this value", node.start_mark
            ) from None

    def _count(self, size: int, mark: yaml.Mark | None) -> None:
        self._values += size
        if self._values > MAX_VALUES:
            raise _LimitExceeded(
                problem=f"more than {MAX_VALUES:,} values once aliases are expanded",
                problem_mark=mark,
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    raise _LimitExceeded(
                        problem="an alias repeats a value that contains it",
                        problem_mark=event.start_mark,
                    )
                self._count(size, event.start_mark)
        return super().compose_node(parent, index)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        node: yaml.ScalarNode = super().compose_scalar_node(anchor)
        self._count(1, node.start_mark)
        if anchor is not None:
            self._sizes[id(node)] = 1
        return node

    def _enter(self, mark: yaml.Mark) -> int:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise _LimitExceeded(
                problem=f"nested more than {MAX_NESTING} levels deep (keymon's settings need 5)",
                problem_mark=mark,
            )
        self._count(1, mark)
        return self._values

    def _leave(self, node: yaml.Node, anchor: str | None, start: int) -> None:
        self._depth -= 1
        if anchor is not None:
            self._sizes[id(node)] = self._values - start + 1

    def compose_sequence_node(self, anchor: Any) -> yaml.SequenceNode:
        start_event = self.get_event()
        start = self._enter(start_event.start_mark)
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.SequenceNode, None, start_event.implicit)
        node = yaml.SequenceNode(
            tag, [], start_event.start_mark, None, flow_style=start_event.flow_style
        )
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            self._path.append(index)
            node.value.append(self.compose_node(node, index))
            self._path.pop()
            index += 1
        end_event = self.get_event()
        node.end_mark = end_event.end_mark
        self._leave(node, anchor, start)
        return node

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        start_event = self.get_event()
        start = self._enter(start_event.start_mark)
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.MappingNode, None, start_event.implicit)
        node = yaml.MappingNode(
            tag, [], start_event.start_mark, None, flow_style=start_event.flow_style
        )
        if anchor is not None:
            self.anchors[anchor] = node
        seen: dict[tuple[str, str], int] = {}
        while not self.check_event(yaml.MappingEndEvent):
            item_key = self.compose_node(node, None)
            name: str | int = "?"
            if isinstance(item_key, yaml.ScalarNode):
                name = item_key.value
                line = item_key.start_mark.line + 1
                first = seen.get((item_key.tag, item_key.value))
                if first is None:
                    seen[(item_key.tag, item_key.value)] = line
                else:
                    self._duplicate(name, first, line)
            self._path.append(name)
            item_value = self.compose_node(node, item_key)
            self._path.pop()
            node.value.append((item_key, item_value))
        end_event = self.get_event()
        node.end_mark = end_event.end_mark
        self._leave(node, anchor, start)
        return node

    def _duplicate(self, name: str | int, first: int, second: int) -> None:
        path = [*self._path, name]
        # Nothing under a secret is quoted: a mapping there may be keyed by the secret itself.
        in_a_key_secret = len(path) >= 3 and path[0] == "keys" and path[2] in _SECRET_FIELDS
        if in_a_key_secret or path[:2] == ["notify", "urls"]:
            path = path[:3]
        loc = _format_loc(tuple(path)) or "(top level)"
        lines = f"lines {first} and {second}" if first != second else f"twice on line {first}"
        self.duplicates.append(f"{loc}: duplicate key ({lines})")


class _PreciseLoader(
    _LimitedComposer,
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.constructor.SafeConstructor,
    yaml.resolver.Resolver,
):
    """The pure-Python safe loader, composing through :class:`_LimitedComposer`."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _LimitedComposer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _FastLoader: type[_PreciseLoader | _CLoader] | None = None
else:

    class _CLoader(
        _LimitedComposer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
    ):
        """libyaml's parser (events only: it does not recurse) under :class:`_LimitedComposer`."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _LimitedComposer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _FastLoader = _CLoader

# ----------------------------------------------------------------------------- environment

#: Lower-cased names of KEYMON_* variables already reported as unreadable: the environment
#: source skips them, so that the file's own problems are still listed with theirs.
_SKIPPED_ENV: ContextVar[frozenset[str]] = ContextVar("keymon_skipped_env", default=frozenset())


def _env_json_problems(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Problems of the ``KEYMON_*`` variables that hold JSON (sections, lists, mappings), each
    named by its variable, and the names of those variables.

    pydantic-settings decodes them itself, but a malformed one ends the whole load with a
    ``SettingsError`` that names neither the variable nor the mistake.
    """
    problems, bad = [], []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith("KEYMON_") or not _env_holds_json(upper[7:].lower().split("__")):
            continue
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as exc:
            why = f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
        except RecursionError:
            why = f"nested more than {MAX_NESTING} levels deep"
        else:
            if _json_depth(decoded) <= MAX_NESTING:
                continue
            why = f"nested more than {MAX_NESTING} levels deep"
        problems.append(f"{name}: not valid JSON: {why}")
        bad.append(name)
    return problems, bad


def _env_holds_json(parts: list[str]) -> bool:
    """Whether the override of the setting at ``parts`` is read as JSON: a section, a list or
    a mapping (a scalar setting takes the text as it is)."""
    model: type[BaseModel] = Settings
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if index == len(parts) - 1:
                return True
            model = annotation
            continue
        # A list or mapping: a variable for one of its items is not decoded strictly.
        return index == len(parts) - 1 and get_origin(annotation) in (tuple, list, dict)
    return False


def _json_depth(value: object) -> int:
    """How deeply ``value`` nests, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
    return deepest


def _settings_error_problem(exc: SettingsError) -> str:
    """A located problem for a ``SettingsError`` (an unreadable environment override)."""
    match = re.search(r'field "(\w+)"', str(exc))
    field = match.group(1) if match else None
    variable = f"KEYMON_{field.upper()}" if field else "a KEYMON_* variable"
    cause = exc.__cause__
    why = cause.msg if isinstance(cause, json.JSONDecodeError) else "cannot be read"
    return f"{variable}: {why} (an environment override of {field or 'a setting'})"


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
