"""The neutral data model: what an audit learns about a key and what the policy makes of it.

Nothing here does I/O. Exchange adapters produce :class:`KeyFacts`, the policy turns facts
into :class:`Finding` values, and every audit ends as one :class:`AuditResult`, success or
not: errors are data, so a failed audit is never mistaken for a healthy key.

Facts are three-state. A permission absent from ``KeyFacts.permissions``, an
``ip_restricted``, ``ip_list``, ``key_locked``, ``account_kind``, ``third_party_app``,
``last_used_at``, ``trading_locked``, ``trading_indicators`` or ``account_status`` of ``None``:
the exchange does not show it (or, for the trading-readiness facts, the call that reads them
failed: ``trading_status_error`` says why, or was skipped for want of spare budget), so the
rules that need it are not evaluated (not passed).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args


class Reason(enum.StrEnum):
    """Why an audit did not produce facts. Values double as the ``reason`` label: a contract."""

    KEY_REJECTED = "key_rejected"
    CLOCK_SKEW = "clock_skew"
    RATE_LIMITED = "rate_limited"
    BANNED = "banned"
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"
    TIMEOUT = "timeout"
    NETWORK = "network"
    BAD_RESPONSE = "bad_response"
    INTERNAL = "internal"


class Severity(enum.StrEnum):
    """How urgent a finding is. Ordered: ``Severity.CRITICAL > Severity.WARNING``."""

    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.WARNING: 1, Severity.CRITICAL: 2}


class Coverage(enum.StrEnum):
    """How much the exchange lets a key see of itself."""

    INTROSPECTION = "introspection"
    LIVENESS = "liveness"


#: The one permission vocabulary every adapter maps its exchange's flags onto (the type a
#: policy's ``require``/``forbid`` entries are checked against).
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
PERMISSIONS: tuple[str, ...] = get_args(Permission)


#: The values of :attr:`KeyFacts.account_kind`.
ACCOUNT_KINDS: tuple[str, ...] = ("master", "sub")


class Rule(enum.StrEnum):
    """The rules of PRODUCT.md's table. Values are the ``rule`` label: a contract."""

    WITHDRAW_ENABLED = "withdraw_enabled"
    IP_UNRESTRICTED = "ip_unrestricted"
    UNTRUSTED_IP = "untrusted_ip"
    FORBIDDEN_PERMISSION = "forbidden_permission"
    MISSING_PERMISSION = "missing_permission"
    REVIEW_DEADLINE = "review_deadline"
    KEY_TOO_OLD = "key_too_old"
    KEY_REJECTED = "key_rejected"
    AUDIT_FAILING = "audit_failing"
    KEY_LOCKED = "key_locked"
    TRADING_LOCKED = "trading_locked"
    TRADING_LOCK_RISK = "trading_lock_risk"
    ACCOUNT_RESTRICTED = "account_restricted"


#: The trading-rule indicators of Binance's quantitative order rules, the values of the
#: ``indicator`` label: unfilled ratio, IOC/FOK expiration ratio, GTC cancellation ratio.
TRADING_INDICATORS: tuple[str, ...] = ("UFR", "IFER", "GCR")


@dataclass(frozen=True, slots=True)
class Deadline:
    """A moment after which the key (or one of its permissions) stops working."""

    kind: str  # "trading_authority", "key_expiry", ...
    at: datetime


@dataclass(frozen=True, slots=True)
class AuditError:
    """Why an audit failed, with the exchange's own code and message where it gave one."""

    reason: Reason
    message: str
    code: int | str | None = None
    refused_ip: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class TradingIndicator:
    """One trading-rule indicator of one symbol: its current value and its trigger value."""

    kind: str  # one of TRADING_INDICATORS
    symbol: str
    value: float
    trigger: float

    @property
    def ratio(self) -> float | None:
        """value / trigger (1.0: the lock trips); None when the trigger is not positive."""
        return self.value / self.trigger if self.trigger > 0 else None


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the exchange says about a key, three-state (see the module docstring)."""

    coverage: Coverage
    permissions: Mapping[str, bool] = field(default_factory=dict)
    ip_restricted: bool | None = None
    ip_list: tuple[str, ...] | None = None
    created_at: datetime | None = None
    deadlines: tuple[Deadline, ...] = ()
    #: What the exchange does to this key *because* it has no IP restriction, in words, for the
    #: ``ip_unrestricted`` finding (e.g. the exchange deletes such a key after some days unused).
    #: Not a fact of its own: no metric, no change journal (kept with the facts in ``data_dir``
    #: so the finding reads the same after a restart).
    ip_unrestricted_note: str | None = None
    #: The exchange has locked or frozen this key itself (the exchange modules say which field
    #: shows it): it is accepted for reads but cannot trade. None: not shown.
    key_locked: bool | None = None
    #: Whose key it is: :data:`ACCOUNT_KINDS` (``"master"`` or ``"sub"``). None: not shown.
    account_kind: str | None = None
    #: The key is bound to a third-party application. None: not shown.
    third_party_app: bool | None = None
    #: When the key was last used, as the exchange shows it. Not journaled: it changes with
    #: every call. None: not shown.
    last_used_at: datetime | None = None
    #: The exchange has locked the account's API trading (Binance ``apiTradingStatus``
    #: ``isLocked``). None: not shown, or not read (see ``trading_status_error``).
    trading_locked: bool | None = None
    #: The planned end of the lock (only while locked, where the exchange says).
    trading_recover_at: datetime | None = None
    #: The lock's trigger condition as the exchange states it (Binance ``triggerCondition``:
    #: indicator -> the order count from which the rule applies). None: not shown.
    trading_trigger: Mapping[str, float] | None = None
    #: The worst symbol of each trading-rule indicator (highest value/trigger), at most one per
    #: kind of :data:`TRADING_INDICATORS`. None: not shown; empty: shown, no indicator yet.
    trading_indicators: tuple[TradingIndicator, ...] | None = None
    #: The account's status as the exchange words it (Binance ``account/status`` ``data``,
    #: ``"Normal"`` when all is well; HTX ``/v1/account/accounts``: the spot account's
    #: ``state``, ``"working"`` when all is well). None: not shown.
    account_status: str | None = None
    #: Why the trading-readiness facts above could not be read in this audit (the rest of the
    #: audit succeeded). None: read, or not asked for.
    trading_status_error: AuditError | None = None
    #: The trading-readiness reads were not sent in this audit: the daemon's budget had no
    #: spare room for them (they are optional; the key's restrictions come first). Not an
    #: error: the store keeps the last known trading facts.
    trading_status_skipped: bool = False

    @property
    def account_restricted(self) -> bool | None:
        """The account status is not normal; None when the status is not shown."""
        if self.account_status is None:
            return None
        return self.account_status.strip().lower() not in NORMAL_ACCOUNT_STATUSES


#: The account statuses that mean "all is well", lower case: Binance ``account/status``
#: ``Normal`` (https://developers.binance.com/docs/wallet/account/account-status), HTX
#: ``/v1/account/accounts`` ``state`` ``working``
#: (https://huobiapi.github.io/docs/spot/v1/en/#get-all-accounts-of-the-current-user).
NORMAL_ACCOUNT_STATUSES: frozenset[str] = frozenset({"normal", "working"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired for a key."""

    rule: Rule
    severity: Severity
    message: str
    permission: str | None = None


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """A rule that was evaluated for a key, and the severities it can take there.

    Metrics export one ``keymon_key_finding`` series per check and severity, so that a rule
    that was evaluated and did not fire reads 0, and one that could not be evaluated is absent.
    """

    rule: Rule
    severities: tuple[Severity, ...]
    permission: str | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The policy's verdict over one audit."""

    findings: tuple[Finding, ...]
    checks: tuple[RuleCheck, ...]


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The outcome of one audit of one key: facts and findings, or an error. Never raises."""

    key: str
    checked_at: datetime
    duration: float
    facts: KeyFacts | None
    error: AuditError | None
    evaluation: Evaluation

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.evaluation.findings


def worst(findings: tuple[Finding, ...] | list[Finding]) -> Severity | None:
    """The highest severity among ``findings``, or None when there are none."""
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)
