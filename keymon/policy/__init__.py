"""The policy: facts in, findings out. Pure functions of (facts or error, policy, now).

:func:`evaluate` judges a successful audit, :func:`evaluate_error` a failed one (a key the
exchange rejects is a critical ``key_rejected`` finding; any other failure has no findings,
and the key is *unknown*, never healthy), and :func:`audit_failing` judges a key's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from keymon.config import Policy, TrustedNetwork
from keymon.model import (
    AuditError,
    Evaluation,
    Finding,
    KeyFacts,
    Reason,
    Rule,
    RuleCheck,
    Severity,
)
from keymon.policy.rules import FACT_RULES, Context, untrusted_ip_count

__all__ = [
    "AUDIT_FAILING_INTERVALS",
    "audit_failing",
    "evaluate",
    "evaluate_error",
    "untrusted_ip_count",
]

#: ``audit_failing`` fires after this many intervals without a successful audit.
AUDIT_FAILING_INTERVALS = 3

_REJECTED_CHECK = RuleCheck(Rule.KEY_REJECTED, (Severity.CRITICAL,))

#: Every distinct set of checks seen, each kept once: the keys under one policy whose exchange
#: shows the same facts share one tuple (and its RuleChecks) instead of each holding its own
#: (#16 counted 12.5 MB of them at 10,000 keys). Equal tuples are interchangeable: RuleCheck
#: is frozen.
_CHECK_SETS: dict[tuple[RuleCheck, ...], tuple[RuleCheck, ...]] = {}
#: More distinct sets than this (policies changed by many reloads) starts the sharing afresh.
_MAX_CHECK_SETS = 4096


def _shared(checks: tuple[RuleCheck, ...]) -> tuple[RuleCheck, ...]:
    shared = _CHECK_SETS.get(checks)
    if shared is None:
        if len(_CHECK_SETS) >= _MAX_CHECK_SETS:
            _CHECK_SETS.clear()
        shared = _CHECK_SETS[checks] = checks
    return shared


def evaluate(
    facts: KeyFacts,
    policy: Policy,
    *,
    policy_name: str,
    trusted_ips: Sequence[TrustedNetwork],
    now: datetime,
) -> Evaluation:
    """Judge the facts of a successful audit."""
    ctx = Context(policy_name=policy_name, trusted_ips=trusted_ips, now=now)
    checks: list[RuleCheck] = [_REJECTED_CHECK]
    findings: list[Finding] = []
    for rule in FACT_RULES:
        outcome = rule(facts, policy, ctx)
        for check, finding in outcome or ():
            checks.append(check)
            if finding is not None:
                findings.append(finding)
    return Evaluation(tuple(findings), _shared(tuple(checks)))


def evaluate_error(error: AuditError) -> Evaluation:
    """Judge a failed audit: ``key_rejected`` when the exchange refuses the key."""
    if error.reason is Reason.KEY_REJECTED:
        finding = Finding(Rule.KEY_REJECTED, Severity.CRITICAL, error.message)
        return Evaluation((finding,), (_REJECTED_CHECK,))
    return Evaluation((), ())


def audit_failing(
    *, last_success: datetime | None, first_attempt: datetime, now: datetime, interval: timedelta
) -> Finding | None:
    """``audit_failing``: no successful audit for :data:`AUDIT_FAILING_INTERVALS` intervals."""
    since = last_success or first_attempt
    if now - since < AUDIT_FAILING_INTERVALS * interval:
        return None
    what = "no successful audit" if last_success is None else "no successful audit since"
    stamp = since.strftime("%Y-%m-%d %H:%M:%S UTC")
    message = (
        f"{what} {stamp}" if last_success else f"{what} since keymon started watching ({stamp})"
    )
    return Finding(Rule.AUDIT_FAILING, Severity.WARNING, message)
