"""The in-memory store: the latest audit of every key, and what is still known after a failure.

Audits write here (:meth:`Store.record`); ``/metrics``, ``/readyz`` and notifications only
read (:meth:`Store.snapshot`). A scrape therefore never calls an exchange.

A failed audit never erases what is known: the last successful facts, and the findings they
produced, stay until a new successful audit replaces them, together with the time of that
success so their age is visible. Whether the exchange rejects the key is tracked separately,
from the latest audit that could tell. Likewise, an audit whose trading-status read failed
(``KeyFacts.trading_status_error``) keeps the last known trading lock, indicators and account
status, re-judged, so a failed read never makes a trading lock look lifted; so does an audit
that skipped those reads for want of spare budget (``KeyFacts.trading_status_skipped``).
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from keymon.changes import Change, diff_facts, diff_rejected
from keymon.config import KeyBase, Policy, Settings, key_secrets
from keymon.model import (
    AuditResult,
    Coverage,
    Evaluation,
    Finding,
    KeyFacts,
    Reason,
    Rule,
    RuleCheck,
    Severity,
)
from keymon.policy import audit_failing, evaluate
from keymon.state import StoredKey

_AUDIT_FAILING_CHECK = RuleCheck(Rule.AUDIT_FAILING, (Severity.WARNING,))
_REJECTED_CHECK = RuleCheck(Rule.KEY_REJECTED, (Severity.CRITICAL,))


@dataclass(slots=True)
class KeyState:
    """Everything keymon knows about one configured key."""

    key: KeyBase
    policy_name: str
    policy: Policy
    coverage: Coverage
    interval: timedelta
    first_attempt: datetime | None = None
    last_result: AuditResult | None = None
    last_facts: KeyFacts | None = None
    last_success: datetime | None = None
    #: The last successful audit's evaluation (fact rules), kept through failures.
    fact_evaluation: Evaluation | None = None
    #: Whether the exchange rejects the key, from the latest audit that could tell.
    rejected: bool | None = None
    rejection: Finding | None = None
    failing: Finding | None = None
    changes: Counter[str] = field(default_factory=Counter)
    #: Bumped on every change; lets renderers cache per key.
    version: int = 0

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def audited(self) -> bool:
        return self.last_result is not None

    def findings(self) -> list[Finding]:
        """Every finding that currently fires for the key."""
        found = list(self.fact_evaluation.findings) if self.fact_evaluation else []
        if self.rejection is not None:
            found.append(self.rejection)
        if self.failing is not None:
            found.append(self.failing)
        return found

    def checks(self) -> list[RuleCheck]:
        """Every rule evaluated for the key (see :class:`~keymon.model.RuleCheck`)."""
        checks: list[RuleCheck] = []
        if self.fact_evaluation is not None:
            checks += (c for c in self.fact_evaluation.checks if c.rule is not Rule.KEY_REJECTED)
        if self.rejected is not None:
            checks.append(_REJECTED_CHECK)
        if self.audited:
            checks.append(_AUDIT_FAILING_CHECK)
        return checks


class Store:
    """The latest state of every configured key. Thread-safe; readers get snapshots."""

    def __init__(self, settings: Settings, coverage: Mapping[str, Coverage]) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, KeyState] = {}
        self._coverage = coverage
        self._settings = settings
        self.configure(settings)

    def configure(self, settings: Settings, *, rejudge_all: bool = False) -> list[str]:
        """Adopt a (re)loaded configuration; returns the names of keys that are new or changed.

        Removed keys are forgotten. A key whose credentials changed starts afresh (it may be a
        different key now); one whose policy changed is re-judged on its last facts at once,
        and so is every key with ``rejudge_all`` (``trusted_ips`` changed).
        """
        fresh: list[str] = []
        with self._lock:
            self._settings = settings
            states: dict[str, KeyState] = {}
            for key in settings.keys:
                policy_name, policy = settings.policy_for(key)
                old = self._states.get(key.name)
                same_key = old is not None and _same_credentials(old.key, key)
                if old is not None and same_key:
                    state = old
                    state.key = key
                    if rejudge_all or (state.policy_name, state.policy) != (policy_name, policy):
                        state.policy_name, state.policy = policy_name, policy
                        self._rejudge(state)
                    state.interval = settings.interval_for(key)
                    state.version += 1
                else:
                    state = KeyState(
                        key,
                        policy_name,
                        policy,
                        self._coverage[key.exchange],
                        settings.interval_for(key),
                    )
                    fresh.append(key.name)
                states[key.name] = state
            self._states = states
        return fresh

    def _evaluate(self, state: KeyState, facts: KeyFacts, now: datetime) -> Evaluation:
        """The fact rules over ``facts`` for the key, at ``now``."""
        return evaluate(
            facts,
            state.policy,
            policy_name=state.policy_name,
            trusted_ips=self._settings.trusted_ips,
            now=now,
        )

    def _rejudge(self, state: KeyState) -> None:
        if state.last_facts is not None and state.last_result is not None:
            state.fact_evaluation = evaluate(
                state.last_facts,
                state.policy,
                policy_name=state.policy_name,
                trusted_ips=self._settings.trusted_ips,
                now=state.last_result.checked_at,
            )

    def restore(self, name: str, stored: StoredKey, now: datetime) -> None:
        """Seed a key with what the state database remembers from before a restart.

        Changes made while keymon was down are then seen by the first audit; the remembered
        facts and findings (a rejection included) stay exported, with their age, until that
        audit replaces them, so a restart never makes a firing alert look resolved.
        """
        with self._lock:
            state = self._states.get(name)
            if state is None:
                return
            state.last_facts, state.last_success = stored.facts, stored.success_at
            state.rejected = stored.rejected
            if stored.facts is not None and stored.success_at is not None:
                state.fact_evaluation = evaluate(
                    stored.facts,
                    state.policy,
                    policy_name=state.policy_name,
                    trusted_ips=self._settings.trusted_ips,
                    now=now,
                )
            if stored.rejected:
                state.rejection = Finding(
                    Rule.KEY_REJECTED,
                    Severity.CRITICAL,
                    stored.rejection or "the exchange rejected the key at the last audit",
                )
            state.first_attempt = now
            state.failing = audit_failing(
                last_success=state.last_success, first_attempt=now, now=now, interval=state.interval
            )
            state.version += 1

    def sweep(self, now: datetime) -> list[KeyState]:
        """Re-judge ``audit_failing`` for every key at ``now``; returns the keys that changed.

        Audits re-judge it when they finish; the sweep catches keys whose audits stopped
        finishing at all (a stalled exchange call, a scheduler that fell behind).
        """
        changed = []
        with self._lock:
            for state in self._states.values():
                if state.first_attempt is None:
                    continue
                failing = audit_failing(
                    last_success=state.last_success,
                    first_attempt=state.first_attempt,
                    now=now,
                    interval=state.interval,
                )
                if (failing is None) != (state.failing is None):
                    state.failing = failing
                    state.version += 1
                    changed.append(state)
        return changed

    def record(self, result: AuditResult) -> list[Change]:
        """Store one audit's result; returns the facts that changed since the last one."""
        with self._lock:
            state = self._states.get(result.key)
            if state is None:  # the key was removed by a reload while it was audited
                return []
            changes: list[Change] = []
            if state.first_attempt is None:
                state.first_attempt = result.checked_at
            state.last_result = result
            if result.facts is not None:
                facts, evaluation = result.facts, result.evaluation
                unread = facts.trading_status_error is not None or facts.trading_status_skipped
                if unread and state.last_facts is not None:
                    facts = _keep_trading_facts(state.last_facts, facts)
                    if facts is not result.facts:
                        evaluation = self._evaluate(state, facts, result.checked_at)
                if state.last_facts is not None:
                    changes.extend(diff_facts(state.last_facts, facts))
                state.last_facts = facts
                state.last_success = result.checked_at
                state.fact_evaluation = evaluation
            rejected = _rejected(result)
            if rejected is not None:
                changes.extend(diff_rejected(state.rejected, rejected))
                state.rejected = rejected
                state.rejection = (
                    next((f for f in result.findings if f.rule is Rule.KEY_REJECTED), None)
                    if rejected
                    else None
                )
            state.failing = audit_failing(
                last_success=state.last_success,
                first_attempt=state.first_attempt,
                now=result.checked_at,
                interval=state.interval,
            )
            for change in changes:
                state.changes[change.field] += 1
            state.version += 1
            return changes

    def checkpoint(self, name: str) -> Callable[[], None]:
        """A way back to the key's current state, should persisting the next record fail.

        Memory and the state database must not drift apart: a change kept in memory but never
        journaled would never be journaled at all.
        """
        with self._lock:
            state = self._states.get(name)
            saved = copy.copy(state) if state is not None else None
            if saved is not None:
                saved.changes = Counter(saved.changes)

        def rollback() -> None:
            with self._lock:
                if saved is not None and name in self._states:
                    saved.version += 1  # renderers must notice
                    self._states[name] = saved

        return rollback

    def snapshot(self) -> list[KeyState]:
        """The states in configuration order. Treat them as read-only."""
        with self._lock:
            return list(self._states.values())

    def get(self, name: str) -> KeyState | None:
        with self._lock:
            return self._states.get(name)

    def ready(self) -> bool:
        """True once every configured key has been audited at least once."""
        with self._lock:
            return all(state.audited for state in self._states.values())

    def names(self) -> Iterable[str]:
        with self._lock:
            return list(self._states)


def _keep_trading_facts(before: KeyFacts, after: KeyFacts) -> KeyFacts:
    """``after`` with the trading facts it could not read taken from ``before`` (stale, not
    lifted); ``after`` itself when there is nothing to keep."""
    kept: dict[str, object] = {}
    if after.trading_locked is None and before.trading_locked is not None:
        kept.update(
            trading_locked=before.trading_locked,
            trading_recover_at=before.trading_recover_at,
            trading_trigger=before.trading_trigger,
            trading_indicators=before.trading_indicators,
        )
    if after.account_status is None and before.account_status is not None:
        kept["account_status"] = before.account_status
    return replace(after, **kept) if kept else after  # type: ignore[arg-type]


def _rejected(result: AuditResult) -> bool | None:
    """True/False when this audit tells whether the exchange rejects the key; else None."""
    if result.error is None:
        return False
    if result.error.reason is Reason.KEY_REJECTED:
        return True
    return None


def _same_credentials(old: KeyBase, new: KeyBase) -> bool:
    return old.exchange == new.exchange and [s.get() for s in key_secrets(old)] == [
        s.get() for s in key_secrets(new)
    ]
