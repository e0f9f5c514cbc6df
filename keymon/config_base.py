"""The configuration's common pieces, below every exchange module.

Secrets (``{env: NAME}``, ``{file: PATH}``), durations, permissions, base URLs, and the base
classes of an exchange's settings section (:class:`ExchangeSettingsBase`) and of its key model
(:class:`KeyBase`). Each exchange module (:mod:`keymon.exchanges`) builds its own settings and
key model on these; :mod:`keymon.config` collects them from the exchange registry. This module
imports nothing from the exchanges nor from :mod:`keymon.config`.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

# The liveness-only exchanges document no limit for the one signed read keymon makes beyond
# "per IP"/"per key" limits far above it; keymon counts each call as weight 1 (an exchange
# module says where its documented weight differs) and spends at most 60 calls a minute per
# exchange, leaving the rest to the bots.
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


def _at_least_one_second(value: timedelta) -> timedelta:
    if value < timedelta(seconds=1):
        raise PydanticCustomError("duration", "must be at least 1s")
    return value


#: A duration of at least one second: how often something is done.
Period = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_at_least_one_second)]

#: ``interval: auto``: audit as often as the exchange's weight budget allows (see
#: :meth:`keymon.config.Settings.interval_for`).
AUTO: Literal["auto"] = "auto"


def parse_interval(value: object) -> timedelta | Literal["auto"]:
    """An audit interval: a duration (:func:`parse_duration`) or the word ``auto``."""
    if isinstance(value, str) and value.strip() == AUTO:
        return AUTO
    try:
        return parse_duration(value)
    except PydanticCustomError as exc:
        if exc.type != "duration" or "is not a duration" not in exc.message():
            raise
        raise PydanticCustomError(
            "duration",
            "'{value}' is not a duration or auto; write it like 30s, 5m, 1h or 14d, or auto",
            {"value": str(value)[:40]},
        ) from None


def _period_or_auto(value: timedelta | Literal["auto"]) -> timedelta | Literal["auto"]:
    return value if isinstance(value, str) else _at_least_one_second(value)


#: An audit interval: a duration, or ``auto`` (as often as the weight budget allows).
Interval = Annotated[timedelta | Literal["auto"], BeforeValidator(parse_interval)]
#: ``audit.interval``: an :data:`Interval` of at least one second, or ``auto``.
IntervalPeriod = Annotated[
    timedelta | Literal["auto"], BeforeValidator(parse_interval), AfterValidator(_period_or_auto)
]


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
    #: False for a reference checked only for its shape (``validate-config --no-secrets``):
    #: its value is a placeholder, and validators that read key material skip it.
    resolved: bool = True

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


#: Set while a configuration is checked without its secrets (``validate-config
#: --no-secrets``): ``{env: NAME}`` and ``{file: PATH}`` are checked for their shape only and
#: stand for an unresolved placeholder.
SKIP_SECRET_RESOLUTION: ContextVar[bool] = ContextVar("keymon_skip_secrets", default=False)
_PLACEHOLDER = SecretStr("<not resolved>")


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
    if SKIP_SECRET_RESOLUTION.get():
        return Secret(_PLACEHOLDER, f"environment variable {name}", resolved=False)
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
    if SKIP_SECRET_RESOLUTION.get():
        return Secret(_PLACEHOLDER, f"file {path}", resolved=False)
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The largest weight budget keymon accepts: far above any exchange's per-IP limit (the largest
#: documented is 12,000 a minute), low enough that the budget's arithmetic stays exact.
MAX_WEIGHT_PER_MINUTE = 1_000_000
#: The longest HTTP timeout: a request still unanswered after ten minutes is lost.
MAX_TIMEOUT = timedelta(minutes=10)


def whole_number(value: object) -> object:
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
    int, BeforeValidator(whole_number), Field(gt=0, le=MAX_WEIGHT_PER_MINUTE)
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
    time_sync_interval: Period = timedelta(minutes=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        return check_base_url(
            value, allow_insecure_http=info.data.get("allow_insecure_http") is True
        )


class LivenessSettings(ExchangeSettingsBase):
    """A liveness-only exchange's section: its budget is :data:`LIVENESS_MAX_WEIGHT_PER_MINUTE`."""

    max_weight_per_minute: WeightPerMinute = LIVENESS_MAX_WEIGHT_PER_MINUTE


class RecvWindowSettings(ExchangeSettingsBase):
    """A section whose exchange takes a ``recvWindow``: more than 0 s, at most
    :attr:`max_recv_window` (60 s, unless the exchange documents another maximum)."""

    max_recv_window: ClassVar[timedelta] = timedelta(seconds=60)
    recv_window: Duration = timedelta(seconds=5)

    @field_validator("recv_window")
    @classmethod
    def _recv_window_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= cls.max_recv_window:
            most = f"{cls.max_recv_window.total_seconds():g}s"
            raise PydanticCustomError("duration", f"must be more than 0s and at most {most}")
        return value


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
    #: Audit this key this often (default: its policy's interval, then ``audit.interval``);
    #: ``auto``: as often as the exchange's weight budget allows.
    interval: Interval | None = None

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
