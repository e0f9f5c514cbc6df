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

import contextlib
import difflib
import functools
import gc
import ipaddress
import json
import operator
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, cast, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from keymon.config_base import (
    AUTO,
    MAX_TIMEOUT,
    SKIP_SECRET_RESOLUTION,
    Boolean,
    Interval,
    IntervalPeriod,
    Period,
    _Model,
)
from keymon.config_base import (
    MAX_DURATION as MAX_DURATION,
)
from keymon.config_base import (
    MAX_SECRET_FILE_BYTES as MAX_SECRET_FILE_BYTES,
)
from keymon.config_base import (
    Duration as Duration,
)
from keymon.config_base import (
    ExchangeSettingsBase as ExchangeSettingsBase,
)
from keymon.config_base import (
    KeyBase as KeyBase,
)
from keymon.config_base import (
    Secret as Secret,
)
from keymon.config_base import (
    SecretRef as SecretRef,
)
from keymon.config_base import (
    _resolve_secret as _resolve_secret,
)
from keymon.config_base import (
    check_base_url as check_base_url,
)
from keymon.config_base import (
    format_duration as format_duration,
)
from keymon.config_base import (
    parse_duration as parse_duration,
)
from keymon.errors import ConfigError
from keymon.exchanges import CONFIG_ORDER, EXCHANGES, audit_cost, extras_cost
from keymon.healthcheck import DEFAULT_CONFIG_PATH as DEFAULT_CONFIG_PATH
from keymon.healthcheck import DEFAULT_LISTEN, split_listen
from keymon.model import PERMISSIONS, Permission, Severity

DEFAULT_INTERVAL = timedelta(minutes=5)
DEFAULT_JITTER = timedelta(seconds=10)
DEFAULT_TIMEOUT = timedelta(seconds=10)
DEFAULT_POLICY_NAME = "market-maker"
#: ``trading_lock_risk`` fires when a trading-rule indicator reaches this share of its trigger.
DEFAULT_LOCK_RISK = 0.8


def parse_share(value: object) -> float:
    """A share of a whole: ``80%`` or ``0.8`` (more than 0, at most 100 %).

    A bare number above 1 is refused rather than guessed at: ``lock_risk: 80`` may mean 80 %
    or 8,000 %, and a wrong guess silences the warning.
    """
    share: float | None = None
    if isinstance(value, bool):
        share = None
    elif isinstance(value, int | float):
        share = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            share = None
    if share is None or share != share:  # None or NaN
        raise PydanticCustomError(
            "share",
            "'{value}' is not a share; write it like 80% or 0.8",
            {"value": str(value)[:40]},
        )
    if not 0 < share <= 1:
        raise PydanticCustomError(
            "share",
            "{value} is out of range: more than 0% and at most 100% (write 80% or 0.8)",
            {"value": str(value)[:40]},
        )
    return share


Share = Annotated[float, BeforeValidator(parse_share)]


#: ``interval: auto`` plans on this share of an exchange's weight budget; the rest is headroom
#: for clock syncs, retries after errors and a reload's new keys.
AUTO_BUDGET_SHARE = 0.85
#: ``interval: auto`` never audits a key more often than this, however large the budget.
AUTO_INTERVAL_FLOOR = timedelta(seconds=10)
#: ``interval: auto`` keys always get at least this share of the planned budget, even when keys
#: with a fixed interval on the same exchange would take it all (``budget_too_small`` says so).
AUTO_MIN_SHARE = 0.1
#: With ``interval: auto`` a key's audits are jittered by at most this share of its interval.
AUTO_JITTER_SHARE = 0.01


class LogSettings(_Model):
    """``log:``: JSON for machines by default, ``console`` for people."""

    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class AuditSettings(_Model):
    """``audit:``: how often every key is audited (``interval: auto``: as often as the
    exchange's weight budget allows, see :meth:`Settings.interval_for`)."""

    interval: IntervalPeriod = DEFAULT_INTERVAL
    jitter: Duration = DEFAULT_JITTER
    timeout: Duration = DEFAULT_TIMEOUT

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
        if self.interval == AUTO:
            return self  # scaled to each key's computed interval (Settings.jitter_for)
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


# ----------------------------------------------------------------------------- exchanges


@functools.cache
def default_section(exchange: str) -> ExchangeSettingsBase:
    """Exchange ``exchange``'s settings section with every default (frozen, so shared)."""
    return EXCHANGES[exchange].settings_model.model_validate({})


class ExchangesSettingsBase(_Model):
    """``exchanges:``: optional per-exchange settings, one field per exchange.

    The fields come from the exchange registry (each adapter's ``settings_model``): a
    configuration is validated with this class extended by the sections of the exchanges it
    uses (:func:`exchanges_model`); an exchange it does not use has its defaults.
    """

    def for_exchange(self, name: str) -> ExchangeSettingsBase:
        """The settings section of exchange ``name`` (its defaults where not in this model)."""
        section = getattr(self, name, None)
        if section is None:
            section = default_section(name)
        assert isinstance(section, ExchangeSettingsBase)
        return section

    def __eq__(self, other: object) -> bool:
        """Equal when every exchange's settings are: an exchange without a section has its
        defaults, whichever exchanges each configuration uses."""
        if not isinstance(other, ExchangesSettingsBase):
            return NotImplemented
        names = set(type(self).model_fields) | set(type(other).model_fields)
        return all(self.for_exchange(name) == other.for_exchange(name) for name in names)

    def __hash__(self) -> int:
        # Consistent with __eq__: only the sections that differ from their defaults count.
        fields = sorted(type(self).model_fields)
        changed = [(n, s) for n in fields if (s := self.for_exchange(n)) != default_section(n)]
        return hash(tuple(changed))

    if TYPE_CHECKING:
        # A section per exchange, added at run time from the registry.
        def __getattr__(self, name: str) -> Any: ...


#: Every supported exchange, in the order messages list them.
EXCHANGE_NAMES: tuple[str, ...] = CONFIG_ORDER
ALL_EXCHANGES: frozenset[str] = frozenset(EXCHANGE_NAMES)


def key_model(exchange: str) -> type[KeyBase]:
    """The key model of ``exchange`` (a name in :data:`EXCHANGE_NAMES`)."""
    return EXCHANGES[exchange].key_model


@functools.cache
def exchanges_model(names: frozenset[str]) -> type[ExchangesSettingsBase]:
    """``exchanges:`` with a section for each exchange in ``names``."""
    sections: dict[str, Any] = {
        name: (EXCHANGES[name].settings_model, default_section(name))
        for name in EXCHANGE_NAMES
        if name in names
    }
    model: type[ExchangesSettingsBase] = create_model(
        "ExchangesSettings",
        __base__=ExchangesSettingsBase,
        __doc__=ExchangesSettingsBase.__doc__,
        __module__=__name__,
        **sections,
    )
    return model


@functools.cache
def key_config(names: frozenset[str]) -> Any:
    """One key model per exchange in ``names``, told apart by ``exchange:``."""
    models = [key_model(name) for name in EXCHANGE_NAMES if name in names]
    return Annotated[functools.reduce(operator.or_, models), Field(discriminator="exchange")]


def exchanges_in_use(values: Mapping[str, Any], environ: Mapping[str, str]) -> frozenset[str]:
    """The exchanges a configuration uses: those its keys name, those with an ``exchanges:``
    section, and those an environment override names (``KEYMON_EXCHANGES__<NAME>__...``).

    Only their adapters are imported and their models built. An override that can name any
    exchange (``KEYMON_KEYS``, ``KEYMON_EXCHANGES`` as JSON), or a configuration that names
    none keymon knows, uses all of them, so every message is the one the full model gives.
    """
    names: set[str] = set()
    section = values.get("exchanges")
    if isinstance(section, ExchangesSettingsBase):
        names.update(type(section).model_fields)
    elif isinstance(section, Mapping):
        names.update(name for name in section if isinstance(name, str) and name in ALL_EXCHANGES)
    keys = values.get("keys")
    for key in keys if isinstance(keys, list | tuple) else ():
        exchange = key.get("exchange") if isinstance(key, Mapping) else getattr(key, "exchange", 0)
        if isinstance(exchange, str) and exchange in ALL_EXCHANGES:
            names.add(exchange)
    for variable in environ:
        name = variable.upper()
        if name == "KEYMON_EXCHANGES" or name.startswith("KEYMON_KEYS"):
            return ALL_EXCHANGES
        if name.startswith("KEYMON_EXCHANGES__"):
            exchange = name.removeprefix("KEYMON_EXCHANGES__").partition("__")[0].lower()
            if exchange in ALL_EXCHANGES:
                names.add(exchange)
    return frozenset(names) if names else ALL_EXCHANGES


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
    #: ``trading_lock_risk``: a trading-rule indicator at this share of its trigger value.
    lock_risk: Share = DEFAULT_LOCK_RISK
    #: Audit keys under this policy this often (default: ``audit.interval``); ``auto``: as
    #: often as the exchange's weight budget allows.
    interval: Interval | None = None

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


def _apprise_url(value: Secret) -> Secret:
    """A channel URL Apprise can use; the message names the scheme, never the tokens."""
    if not value.resolved:  # validate-config --no-secrets: the URL is not read
        return value
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
    reminder: Period = timedelta(hours=4)
    send_resolved: Boolean = True


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
    """The whole configuration. Built by :func:`load`.

    A configuration is validated by a subclass whose ``exchanges:`` and ``keys[]`` know only
    the exchanges it uses (:func:`settings_model`, :func:`exchanges_in_use`), so only their
    adapters are imported. ``Settings(...)`` picks that subclass itself.
    """

    model_config = SettingsConfigDict(
        env_prefix="KEYMON_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        # Never validated itself: its subclasses per set of exchanges are.
        defer_build=True,
    )

    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("./data")
    log: LogSettings = LogSettings()
    audit: AuditSettings = AuditSettings()
    exchanges: ExchangesSettingsBase = ExchangesSettingsBase()
    trusted_ips: tuple[Annotated[TrustedNetwork, BeforeValidator(_parse_network)], ...] = ()
    policies: dict[str, Policy] = Field(default_factory=lambda: {DEFAULT_POLICY_NAME: Policy()})
    default_policy: str = DEFAULT_POLICY_NAME
    keys: tuple[KeyBase, ...] = Field(min_length=1)
    notify: NotifySettings = NotifySettings()
    #: Each exchange's ``interval: auto``, computed on first use (:meth:`auto_intervals`).
    _auto_intervals: dict[str, timedelta] | None = PrivateAttr(default=None)
    _audit_costs: dict[str, tuple[int, int]] = PrivateAttr(default_factory=dict)

    def __new__(cls, *args: Any, **values: Any) -> Self:
        if cls is not Settings:
            return super().__new__(cls)
        model = settings_model(exchanges_in_use(values, os.environ))
        return cast(Self, super().__new__(model))

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

    def configured_interval(self, key: KeyBase) -> timedelta | Literal["auto"]:
        """The key's own interval, its policy's, or ``audit.interval``: a duration or auto."""
        policy = self.policies.get(key.policy or self.default_policy)
        return key.interval or (policy.interval if policy else None) or self.audit.interval

    def interval_for(self, key: KeyBase) -> timedelta:
        """How often ``key`` is audited: its own interval, its policy's, or ``audit.interval``;
        for ``auto``, what its exchange's weight budget allows (:meth:`auto_intervals`)."""
        interval = self.configured_interval(key)
        if isinstance(interval, str):  # auto
            return self.auto_intervals()[key.exchange]
        return interval

    def jitter_for(self, key: KeyBase) -> timedelta:
        """How much a run of ``key`` may be delayed: ``audit.jitter``, and with ``auto`` at
        most :data:`AUTO_JITTER_SHARE` of the computed interval."""
        if self.configured_interval(key) == AUTO:
            return min(self.audit.jitter, self.interval_for(key) * AUTO_JITTER_SHARE)
        return self.audit.jitter

    def audit_costs(self, exchange: str) -> tuple[int, int]:
        """One audit's weight on ``exchange`` under its settings: the mandatory part
        (:func:`~keymon.exchanges.audit_cost`) and the optional reads
        (:func:`~keymon.exchanges.extras_cost`); computed once per configuration."""
        costs = self._audit_costs.get(exchange)
        if costs is None:
            adapter, section = EXCHANGES[exchange], self.exchanges.for_exchange(exchange)
            costs = self._audit_costs[exchange] = (
                audit_cost(adapter, section),
                extras_cost(adapter, section),
            )
        return costs

    def auto_intervals(self) -> dict[str, timedelta]:
        """The interval of the ``auto`` keys of each exchange (computed once per configuration).

        Per exchange: ``budget * AUTO_BUDGET_SHARE`` weight per minute, less what its keys with
        a fixed interval need, shared by its ``auto`` keys (each audit costs
        :func:`~keymon.exchanges.audit_cost`)::

            interval = max(AUTO_INTERVAL_FLOOR, auto_keys * cost / available) minutes
        """
        if self._auto_intervals is not None:
            return self._auto_intervals
        auto_keys: dict[str, int] = {}
        fixed_load: dict[str, float] = {}
        for key in self.keys:
            interval = self.configured_interval(key)
            cost, _ = self.audit_costs(key.exchange)
            if isinstance(interval, str):  # auto
                auto_keys[key.exchange] = auto_keys.get(key.exchange, 0) + 1
            else:
                per_minute = cost * 60 / interval.total_seconds()
                fixed_load[key.exchange] = fixed_load.get(key.exchange, 0.0) + per_minute
        result = {}
        for exchange, count in auto_keys.items():
            budget = self.exchanges.for_exchange(exchange).max_weight_per_minute
            planned = budget * AUTO_BUDGET_SHARE
            available = max(planned - fixed_load.get(exchange, 0.0), planned * AUTO_MIN_SHARE)
            minutes = count * self.audit_costs(exchange)[0] / available
            result[exchange] = max(AUTO_INTERVAL_FLOOR, timedelta(minutes=minutes))
        self._auto_intervals = result
        return result

    @model_validator(mode="after")
    def _intervals_longer_than_jitter(self) -> Self:
        jitter = self.audit.jitter
        where = [(f"policies.{n}.interval", p.interval) for n, p in self.policies.items()]
        where += [(f"keys[{i}].interval", k.interval) for i, k in enumerate(self.keys)]
        for loc, interval in where:
            if interval is None or interval == AUTO:
                continue
            assert isinstance(interval, timedelta)
            if interval < timedelta(seconds=1) or interval <= jitter:
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
        values = {s.get() for key in self.keys for s in key_secrets(key) if s.resolved}
        values.update(url.get() for url in self.notify.urls if url.resolved)
        return values


@functools.cache
def settings_model(names: frozenset[str]) -> type[Settings]:
    """:class:`Settings` for configurations that use the exchanges ``names``."""
    exchanges = exchanges_model(names)
    fields: dict[str, Any] = {
        "exchanges": (exchanges, exchanges()),
        "keys": (tuple[key_config(names), ...], Field(min_length=1)),  # type: ignore[misc]
    }
    model: type[Settings] = create_model(
        "Settings", __base__=Settings, __doc__=Settings.__doc__, __module__=__name__, **fields
    )
    return model


if TYPE_CHECKING:
    ExchangesSettings = ExchangesSettingsBase
    KeyConfig = KeyBase
else:

    def __getattr__(name: str) -> Any:
        """``ExchangesSettings`` and ``KeyConfig`` with every exchange (their models built, and
        every adapter imported, on first use)."""
        if name == "ExchangesSettings":
            return exchanges_model(ALL_EXCHANGES)
        if name == "KeyConfig":
            return key_config(ALL_EXCHANGES)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def key_secrets(key: KeyBase) -> list[Secret]:
    """Every secret of a key: API key, secret, and a passphrase or memo where the exchange
    uses one (every field that holds a :class:`Secret`)."""
    values = (getattr(key, name) for name in type(key).model_fields)
    return [value for value in values if isinstance(value, Secret)]


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::]:9877`` for IPv6) into its parts, or raise a config error."""
    parts = split_listen(value)  # port 0: any free port (tests)
    if parts is None:
        raise PydanticCustomError(
            "listen", "'{value}' is not host:port, such as 0.0.0.0:9877", {"value": value[:60]}
        )
    return parts


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


def load(path: Path | str, *, resolve_secrets: bool = True) -> LoadedConfig:
    """Read, override from the environment and validate the configuration at ``path``.

    With ``resolve_secrets=False`` (``validate-config --no-secrets``), ``{env: NAME}`` and
    ``{file: PATH}`` references are checked for their shape but not read: their
    :class:`Secret` is an unresolved placeholder (``resolved`` false), and the checks that read
    key material (a PEM's type, Kraken's base64, a notification URL) are skipped. Such a
    configuration is for checking only, never for running.

    Raises:
        ConfigError: with every problem found, each prefixed by its location. Nothing else: an
            unexpected failure is one problem naming its type (and a bug to report).
    """
    path = Path(path)
    token = SKIP_SECRET_RESOLUTION.set(not resolve_secrets)
    try:
        with _gc_paused():
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
    finally:
        SKIP_SECRET_RESOLUTION.reset(token)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a configuration is parsed and validated.

    Loading 10,000 keys allocates millions of objects that all live until the load ends (the
    YAML nodes, then the models), none of them garbage: the collector's passes over them were
    most of the load's time (2.2 s, 0.74 s with it paused). Reference counting still frees
    whatever is dropped; the collector is switched back on (if it was on) when the load ends,
    however it ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
        problems += _untagged_key_problems(exc, raw.get("keys"))
        errors = exc.errors(include_url=False, include_input=False)
        raise ConfigError(_dedupe(_format_errors(errors) + problems)) from None
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
    10,000-key file loads in a fraction of the time): a plain file is read from its events
    (:meth:`_LimitedComposer.plain_data`), anything else composed; on a syntax error in a file
    of reasonable size, the pure-Python parser again, whose messages say where and what
    precisely. Every path is bounded in nesting and alias expansion."""
    if _FastLoader is not None:
        plain = _FastLoader(text)
        try:
            return plain.plain_data(), []
        except (_NotPlain, yaml.YAMLError):
            pass  # the composer below reads it, and says what is wrong with it
        finally:
            plain.dispose()
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


class _NotPlain(Exception):
    """The file uses something :meth:`_LimitedComposer.plain_data` leaves to the composer."""


_STR_TAG = "tag:yaml.org,2002:str"
#: The tags a plain or quoted scalar resolves to that :meth:`_LimitedComposer.plain_data`
#: constructs itself (with PyYAML's safe constructors).
_PLAIN_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)


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

    def plain_data(self) -> Any:
        """The document read straight from the parser's events, when it is plain YAML:
        mappings, sequences and scalars, with no anchor, alias, tag, merge key (``<<``), key
        given twice, or key that is not a scalar, nested at most :data:`MAX_NESTING` deep
        with at most :data:`MAX_VALUES` values. Anything else raises :class:`_NotPlain` and
        the file is composed again as a whole (:func:`_parse_yaml`), which reads those and
        reports problems where they are: this reader never reports one.

        A configuration is almost always plain, and composing it builds a node for every value
        and then constructs the value from the node: half the CPU of loading 1,000 keys
        (docs/performance.md). Values are constructed by PyYAML's own safe constructors, so
        both paths give the same document (tests/test_config.py compares them).
        """
        if self.yaml_path_resolvers:  # type: ignore[attr-defined]
            raise _NotPlain
        self.get_event()  # StreamStartEvent
        if self.check_event(yaml.StreamEndEvent):
            return None
        self.get_event()  # DocumentStartEvent
        value = self._plain_value(0)
        self.get_event()  # DocumentEndEvent
        if not self.check_event(yaml.StreamEndEvent):
            raise _NotPlain  # a second document
        return value

    def _plain_value(self, depth: int) -> Any:
        event = self.get_event()
        kind = type(event)
        if kind is yaml.ScalarEvent:
            return self._plain_scalar(event)[1]
        # An alias's name is its ``anchor``; a collection's tag (even "!") is the composer's.
        if event.anchor is not None or getattr(event, "tag", None) is not None:
            raise _NotPlain
        self._values += 1
        if self._values > MAX_VALUES or depth >= MAX_NESTING:
            raise _NotPlain
        if kind is yaml.SequenceStartEvent:
            items = []
            while not self.check_event(yaml.SequenceEndEvent):
                items.append(self._plain_value(depth + 1))
            self.get_event()
            return items
        if kind is not yaml.MappingStartEvent:
            raise _NotPlain
        mapping: dict[Any, Any] = {}
        seen: set[tuple[str, str]] = set()
        while not self.check_event(yaml.MappingEndEvent):
            if not self.check_event(yaml.ScalarEvent):
                raise _NotPlain
            key_event = self.get_event()
            tag, key = self._plain_scalar(key_event)
            # Given twice: as written (which the composer reports) or as read ("1", "01").
            if (tag, key_event.value) in seen or key in mapping:
                raise _NotPlain
            seen.add((tag, key_event.value))
            mapping[key] = self._plain_value(depth + 1)
        self.get_event()
        return mapping

    def _plain_scalar(self, event: Any) -> tuple[str, Any]:
        """A scalar's resolved tag and value; only the tags in :data:`_PLAIN_SCALAR_TAGS`
        (a merge key ``<<`` resolves to another)."""
        if event.anchor is not None or event.tag is not None:
            raise _NotPlain
        self._values += 1
        if self._values > MAX_VALUES:
            raise _NotPlain
        tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            return tag, event.value
        if tag not in _PLAIN_SCALAR_TAGS:
            raise _NotPlain
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
        try:
            return tag, self.yaml_constructors[tag](self, node)  # type: ignore[attr-defined]
        except Exception:
            raise _NotPlain from None

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
        # The items of the top-level ``keys:`` list are built as soon as each is read, and
        # their nodes dropped: the node tree of a 10,000-key file took 56 MB at its peak (5.5 KB
        # a key), left behind as fragmented memory the daemon never gave back.
        build_items = self._path == ["keys"]
        while not self.check_event(yaml.SequenceEndEvent):
            self._path.append(index)
            item = self.compose_node(node, index)
            if build_items and item is not None:
                item = self._built(item)
            node.value.append(item)
            self._path.pop()
            index += 1
        end_event = self.get_event()
        node.end_mark = end_event.end_mark
        self._leave(node, anchor, start)
        return node

    def _built(self, item: yaml.Node) -> yaml.Node:
        """``item`` constructed now, as a node that stands for the value; the item's own nodes
        are forgotten (but anchored ones, which an alias further on may still name)."""
        value = self.construct_object(item, deep=True)
        constructed: dict[yaml.Node, Any] = self.constructed_objects  # type: ignore[attr-defined]
        pending = [item]
        while pending:
            node = pending.pop()
            if id(node) not in self._sizes:  # not anchored
                constructed.pop(node, None)
            if isinstance(node, yaml.SequenceNode):
                pending.extend(node.value)
            elif isinstance(node, yaml.MappingNode):
                for pair in node.value:
                    pending.extend(pair)
        return _BuiltNode(value, item.start_mark)

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


_BUILT_TAG = "tag:keymon,2026:built"


class _BuiltNode(yaml.Node):
    """A value the composer has already constructed (see :meth:`_LimitedComposer._built`)."""

    id = "built"

    def __init__(self, value: Any, start_mark: yaml.Mark) -> None:
        super().__init__(_BUILT_TAG, value, start_mark, start_mark)


def _construct_built(loader: Any, node: yaml.Node) -> Any:
    return node.value


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


_PreciseLoader.add_constructor(_BUILT_TAG, _construct_built)

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

    _CLoader.add_constructor(_BUILT_TAG, _construct_built)
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
        if issubclass(model, ExchangesSettingsBase) and part in ALL_EXCHANGES:
            annotation: Any = EXCHANGES[part].settings_model
        elif field is None:
            return False
        else:
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
    """Policies named by keys must exist, and ``default_policy`` too if a key names none.

    Runs on the raw data when other fields are invalid (so every problem is listed at once),
    and on the validated settings otherwise (environment overrides included). A
    ``default_policy`` naming no policy is fine while every key names its own.
    """
    if not isinstance(policies, Mapping):
        return []
    defined = ", ".join(sorted(map(str, policies))) or "none"
    problems = []
    unnamed: list[str] = []  # keys that fall back to default_policy
    for index, key in enumerate(keys if isinstance(keys, list | tuple) else []):
        policy = key.get("policy") if isinstance(key, dict) else getattr(key, "policy", None)
        if isinstance(policy, str) and policy not in policies:
            problems.append(
                f"keys[{index}].policy: no policy named '{policy}' (defined: {defined})"
            )
        elif policy is None:
            name = key.get("name") if isinstance(key, dict) else getattr(key, "name", None)
            unnamed.append(f"keys[{index}] ({name})" if isinstance(name, str) else f"keys[{index}]")
    if isinstance(default, str) and default not in policies and unnamed:
        shown = ", ".join(unnamed[:5]) + (
            f" and {len(unnamed) - 5} more" if len(unnamed) > 5 else ""
        )
        problems.insert(
            0,
            f"default_policy: no policy named '{default}' (defined: {defined}), and "
            f"{shown} name no policy of their own: give each key 'policy: NAME', or set "
            "default_policy to a defined policy",
        )
    return problems


def _untagged_key_problems(exc: ValidationError, keys: object) -> list[str]:
    """The other problems of keys whose ``exchange`` is unknown or missing.

    pydantic stops at the discriminator: a key with a misspelled exchange would have its
    missing secret or bad label reported only after the exchange is fixed. Such a key is
    checked again against the fields every exchange's key has (:class:`KeyBase`); fields
    known to some exchange (a passphrase, a memo) pass, any other is unknown.
    """
    if not isinstance(keys, list):
        return []
    indices = sorted(
        {
            error["loc"][1]
            for error in exc.errors(include_url=False, include_input=False)
            if error["type"] in ("union_tag_invalid", "union_tag_not_found")
            and len(error["loc"]) == 2
            and error["loc"][0] == "keys"
            and isinstance(error["loc"][1], int)
        }
    )
    errors: list[ErrorDetails] = []
    for index in indices:
        key = keys[index] if isinstance(index, int) and index < len(keys) else None
        if not isinstance(key, dict):
            continue
        for field in key:
            if field not in _any_key_fields():
                errors.append(
                    {
                        "type": "extra_forbidden",
                        "loc": ("keys", index, field),
                        "msg": "",
                        "input": None,
                    }
                )
        common = {k: v for k, v in key.items() if k in _any_key_fields() and k != "exchange"}
        try:
            _AnyExchangeKey.model_validate({"exchange": "?", **common})
        except ValidationError as key_exc:
            errors += [
                {**error, "loc": ("keys", index, *error["loc"])}
                for error in key_exc.errors(include_url=False, include_input=False)
            ]
    return _format_errors(errors)


class _AnyExchangeKey(KeyBase):
    """A key of no known exchange: only the fields every key has are checked."""

    model_config = ConfigDict(extra="ignore", frozen=True)


@functools.cache
def _any_key_fields() -> frozenset[str]:
    """Every field some exchange's key model has (imports every adapter: messages only)."""
    return frozenset(f for name in EXCHANGE_NAMES for f in key_model(name).model_fields)


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


def _format_errors(errors: list[ErrorDetails]) -> list[str]:
    lines = []
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
            tag = str(ctx.get("tag"))
            close = difflib.get_close_matches(tag.lower(), EXCHANGE_NAMES, n=1)
            hint = f"did you mean '{close[0]}'? " if close and close[0] != tag else ""
            message = (
                f"unknown exchange '{tag[:40]}' ({hint}supported: {', '.join(EXCHANGE_NAMES)})"
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
    "exchanges": EXCHANGE_NAMES,
    "notify": tuple(NotifySettings.model_fields),
}


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1])
    parent = loc[:-1]
    if not parent:
        candidates = _FIELD_NAMES[""]
    elif len(parent) == 1 and isinstance(parent[0], str) and parent[0] in _FIELD_NAMES:
        candidates = _FIELD_NAMES[parent[0]]
    elif parent[0] == "keys":
        exchange = next((p for p in parent[1:] if p in ALL_EXCHANGES), None)
        if exchange is not None:
            candidates = tuple(key_model(str(exchange)).model_fields)
        else:
            candidates = tuple(
                dict.fromkeys(f for n in EXCHANGE_NAMES for f in key_model(n).model_fields)
            )
    elif parent[0] == "policies":
        candidates = tuple(Policy.model_fields)
    elif parent[0] == "exchanges" and len(parent) > 1 and parent[1] in ALL_EXCHANGES:
        candidates = tuple(EXCHANGES[str(parent[1])].settings_model.model_fields)
    else:
        return ""
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
