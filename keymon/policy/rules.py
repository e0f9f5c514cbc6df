"""The rules of PRODUCT.md, each a small pure function of (facts, policy, context).

A rule returns ``None`` when it cannot be evaluated (the exchange does not show the fact it
needs): the rule is then absent, never passed. Otherwise it returns the check it made and the
findings it raised (possibly none).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from keymon.config import Policy, TrustedNetwork, format_duration
from keymon.model import Finding, KeyFacts, Rule, RuleCheck, Severity

W, C = Severity.WARNING, Severity.CRITICAL


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule may use besides the facts and the policy."""

    policy_name: str
    trusted_ips: Sequence[TrustedNetwork]
    now: datetime


Outcome = list[tuple[RuleCheck, Finding | None]] | None
RuleFn = Callable[[KeyFacts, Policy, Context], Outcome]


def withdrawals_enabled(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``withdraw_enabled``: always checked, always critical, whatever the policy."""
    enabled = facts.permissions.get("withdraw")
    if enabled is None:
        return None
    finding = (
        Finding(Rule.WITHDRAW_ENABLED, C, "withdrawals are enabled on this key")
        if enabled
        else None
    )
    return [(RuleCheck(Rule.WITHDRAW_ENABLED, (C,)), finding)]


def ip_unrestricted(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``ip_unrestricted``: the key accepts calls from any IP, and the policy forbids that."""
    if not policy.require_ip_restriction or facts.ip_restricted is None:
        return None
    finding = None
    if not facts.ip_restricted:
        message = "the key accepts calls from any IP address (no IP whitelist)"
        if facts.ip_unrestricted_note:
            message += f"; {facts.ip_unrestricted_note}"
        finding = Finding(Rule.IP_UNRESTRICTED, C, message)
    return [(RuleCheck(Rule.IP_UNRESTRICTED, (C,)), finding)]


def untrusted_ips(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``untrusted_ip``: the visible IP list holds an address outside ``trusted_ips``."""
    if facts.ip_list is None:
        return None
    outside = [entry for entry in facts.ip_list if not _trusted(entry, ctx.trusted_ips)]
    finding = None
    if outside:
        finding = Finding(
            Rule.UNTRUSTED_IP,
            C,
            f"the IP whitelist holds {len(outside)} address(es) outside trusted_ips: "
            + ", ".join(outside)
            + (
                " (masked entries: no trusted address fits their visible parts; masked entries"
                " that some trusted address fits are counted as probably trusted)"
                if any("*" in entry for entry in outside)
                else ""
            ),
        )
    return [(RuleCheck(Rule.UNTRUSTED_IP, (C,)), finding)]


def untrusted_ip_count(facts: KeyFacts, trusted: Sequence[TrustedNetwork]) -> int | None:
    """How many whitelist entries lie outside ``trusted``; None when the list is not visible."""
    if facts.ip_list is None:
        return None
    return sum(1 for entry in facts.ip_list if not _trusted(entry, trusted))


def masked_could_match(entry: str, network: TrustedNetwork) -> bool:
    """Whether some address of ``network`` fits a masked IPv4 entry such as ``203.**.154``.

    Some exchanges show a key's whitelist masked: only the first octet and the last segment
    are visible, the ``*`` part hides the rest. An entry no trusted address can fit is certainly
    untrusted; one that some trusted address fits is counted as (probably) trusted.
    """
    parts = entry.strip().split(".")
    if (
        network.version != 4
        or len(parts) < 2
        or not all(p.isdigit() for p in (parts[0], parts[-1]))
    ):
        return False
    first, last = int(parts[0]), int(parts[-1])
    if network.prefixlen >= 24:  # at most 256 addresses: try them
        return any(a.packed[0] == first and a.packed[3] == last for a in network)
    # A /23 or wider spans every last octet; only the first octet can rule it out.
    return network.network_address.packed[0] <= first <= network.broadcast_address.packed[0]


def _trusted(entry: str, trusted: Sequence[TrustedNetwork]) -> bool:
    if "*" in entry:
        return any(masked_could_match(entry, t) for t in trusted)
    try:
        network = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return False  # something we cannot read is not something we can vouch for
    return any(
        network.version == t.version and network.subnet_of(t)  # type: ignore[arg-type]
        for t in trusted
    )


def forbidden_permissions(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``forbidden_permission``: one check per forbidden permission the exchange shows."""
    out: list[tuple[RuleCheck, Finding | None]] = []
    for permission, severity in policy.forbid.items():
        enabled = facts.permissions.get(permission)
        if enabled is None:
            continue
        finding = None
        if enabled:
            finding = Finding(
                Rule.FORBIDDEN_PERMISSION,
                severity,
                f"{permission} is enabled; policy {ctx.policy_name} forbids it",
                permission=permission,
            )
        out.append((RuleCheck(Rule.FORBIDDEN_PERMISSION, (severity,), permission), finding))
    return out or None


def missing_permissions(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``missing_permission``: a permission the policy requires is off (warning)."""
    out: list[tuple[RuleCheck, Finding | None]] = []
    for permission in policy.require:
        enabled = facts.permissions.get(permission)
        if enabled is None:
            continue
        finding = None
        if not enabled:
            finding = Finding(
                Rule.MISSING_PERMISSION,
                W,
                f"{permission} is off; policy {ctx.policy_name} requires it",
                permission=permission,
            )
        out.append((RuleCheck(Rule.MISSING_PERMISSION, (W,), permission), finding))
    return out or None


_DEADLINE_WORDS = {
    "trading_authority": "spot & margin trading permission expires",
    "key_expiry": "the key expires",
}


def review_deadline(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``review_deadline``: the nearest deadline is within the policy's windows, or passed."""
    if not facts.deadlines:
        return None
    nearest = min(facts.deadlines, key=lambda d: d.at)
    left = nearest.at - ctx.now
    what = _DEADLINE_WORDS.get(nearest.kind, f"{nearest.kind} deadline")
    when = nearest.at.strftime("%Y-%m-%d %H:%M UTC")
    finding = None
    if left <= timedelta(0):
        finding = Finding(
            Rule.REVIEW_DEADLINE, C, f"{what}: deadline passed {_ago(-left)} ago ({when})"
        )
    elif left < policy.review_critical:
        finding = Finding(Rule.REVIEW_DEADLINE, C, f"{what} in {_ago(left)} ({when})")
    elif left < policy.review_warning:
        finding = Finding(Rule.REVIEW_DEADLINE, W, f"{what} in {_ago(left)} ({when})")
    return [(RuleCheck(Rule.REVIEW_DEADLINE, (W, C)), finding)]


def key_too_old(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``key_too_old``: the key is older than the policy's ``max_age`` (rotate it)."""
    if policy.max_age is None or facts.created_at is None:
        return None
    age = ctx.now - facts.created_at
    finding = None
    if age > policy.max_age:
        finding = Finding(
            Rule.KEY_TOO_OLD,
            W,
            f"the key is {age.days} days old (max_age {format_duration(policy.max_age)}); "
            "rotate it",
        )
    return [(RuleCheck(Rule.KEY_TOO_OLD, (W,)), finding)]


def key_locked(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``key_locked``: the exchange has locked or frozen the key itself (critical).

    Evaluated only where the exchange shows the key's own state (``KeyFacts.key_locked`` is
    not None): a locked key still answers reads but cannot trade.
    """
    if facts.key_locked is None:
        return None
    finding = None
    if facts.key_locked:
        finding = Finding(
            Rule.KEY_LOCKED,
            C,
            "the exchange has locked (frozen) this API key: it cannot trade until the "
            "account owner unlocks it on the exchange",
        )
    return [(RuleCheck(Rule.KEY_LOCKED, (C,)), finding)]


def trading_locked(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``trading_locked``: the exchange has locked the account's API trading (critical).

    Names the planned recovery time and the trigger: the indicators at or over their trigger
    value where shown, and the exchange's trigger condition.
    """
    if facts.trading_locked is None:
        return None
    finding = None
    if facts.trading_locked:
        if facts.trading_recover_at is not None:
            left = facts.trading_recover_at - ctx.now
            when = facts.trading_recover_at.strftime("%Y-%m-%d %H:%M UTC")
            recovery = (
                f"planned recovery {when} (in {_ago(left)})"
                if left > timedelta(0)
                else f"planned recovery {when} (passed {_ago(-left)} ago)"
            )
        else:
            recovery = "no planned recovery time given"
        finding = Finding(
            Rule.TRADING_LOCKED,
            C,
            f"the exchange has locked API trading on this key's account: {recovery}; "
            f"trigger: {_trigger_words(facts)}",
        )
    return [(RuleCheck(Rule.TRADING_LOCKED, (C,)), finding)]


def _trigger_words(facts: KeyFacts) -> str:
    tripped = sorted(
        (i for i in facts.trading_indicators or () if i.ratio is not None and i.ratio >= 1),
        key=lambda i: -(i.ratio or 0.0),
    )
    parts = [f"{i.kind} {i.value:g} >= {i.trigger:g} on {i.symbol}" for i in tripped]
    if facts.trading_trigger:
        condition = ", ".join(f"{k} {v:g}" for k, v in sorted(facts.trading_trigger.items()))
        parts.append(f"trigger condition {condition}")
    return "; ".join(parts) if parts else "not stated by the exchange"


def trading_lock_risk(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``trading_lock_risk``: a trading-rule indicator has reached ``lock_risk`` of its
    trigger value (warning); names every indicator at risk, worst first, with its symbol.

    While the account is locked the warning yields to ``trading_locked``, which names the
    indicators that tripped: the risk it warns of has come true.
    """
    if facts.trading_indicators is None:
        return None
    if facts.trading_locked:
        return [(RuleCheck(Rule.TRADING_LOCK_RISK, (W,)), None)]
    at_risk = sorted(
        (
            i
            for i in facts.trading_indicators
            if i.ratio is not None and i.ratio >= policy.lock_risk
        ),
        key=lambda i: -(i.ratio or 0.0),
    )
    finding = None
    if at_risk:
        words = "; ".join(
            f"{i.kind} on {i.symbol} is at {(i.ratio or 0.0):.0%} of its trigger "
            f"({i.value:g} of {i.trigger:g})"
            for i in at_risk
        )
        finding = Finding(
            Rule.TRADING_LOCK_RISK,
            W,
            f"{words}; policy {ctx.policy_name} warns from {policy.lock_risk:.0%} "
            "(at 100% the exchange locks API trading)",
        )
    return [(RuleCheck(Rule.TRADING_LOCK_RISK, (W,)), finding)]


def account_restricted(facts: KeyFacts, policy: Policy, ctx: Context) -> Outcome:
    """``account_restricted``: the account's status is not normal (critical); quotes it."""
    restricted = facts.account_restricted
    if restricted is None:
        return None
    finding = None
    if restricted:
        finding = Finding(
            Rule.ACCOUNT_RESTRICTED,
            C,
            f'the exchange reports the account status "{facts.account_status}" (not normal)',
        )
    return [(RuleCheck(Rule.ACCOUNT_RESTRICTED, (C,)), finding)]


def _ago(delta: timedelta) -> str:
    """A short human duration: ``2d 3h``, ``5h 12m``, ``42m``."""
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


#: Every rule that judges facts, in the order findings are listed.
FACT_RULES: tuple[RuleFn, ...] = (
    withdrawals_enabled,
    ip_unrestricted,
    untrusted_ips,
    forbidden_permissions,
    missing_permissions,
    review_deadline,
    key_too_old,
    key_locked,
    trading_locked,
    trading_lock_risk,
    account_restricted,
)
