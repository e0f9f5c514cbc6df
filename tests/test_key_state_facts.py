"""The key's own state as facts: lock, account kind, third-party binding, last use.

Three-state like every fact (None: the exchange does not show it): in ``check --format json``,
in the state file (rows written before these fields existed read as None), in the change
journal (not the last use: it changes with every call), in the metrics and in the
``key_locked`` rule.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from keymon.audit import facts_mapping
from keymon.changes import diff_facts
from keymon.config import Policy
from keymon.metrics import key_samples
from keymon.model import Coverage, KeyFacts, Rule, Severity
from keymon.policy import evaluate
from keymon.state import facts_from_json, facts_to_json

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
USED = NOW - timedelta(hours=3)


def _facts(**extra: Any) -> KeyFacts:
    return KeyFacts(
        coverage=Coverage.INTROSPECTION,
        permissions={"read": True, "spot_trade": True},
        ip_restricted=True,
        **extra,
    )


FULL = _facts(key_locked=True, account_kind="sub", third_party_app=False, last_used_at=USED)


def test_json_facts_carry_the_new_fields_three_state() -> None:
    shown = facts_mapping(FULL)
    assert shown["key_locked"] is True
    assert shown["account_kind"] == "sub"
    assert shown["third_party_app"] is False
    assert shown["last_used_at"] == "2026-11-23T09:00:00Z"
    hidden = facts_mapping(_facts())
    for name in ("key_locked", "account_kind", "third_party_app", "last_used_at"):
        assert hidden[name] is None
        assert facts_mapping(None)[name] is None


def test_state_round_trip_and_old_rows_read_as_not_visible() -> None:
    assert facts_from_json(facts_to_json(FULL)) == FULL
    old_row = json.loads(facts_to_json(_facts()))
    for name in ("key_locked", "account_kind", "third_party_app", "last_used_at"):
        del old_row[name]
    restored = facts_from_json(json.dumps(old_row))
    assert restored.key_locked is None
    assert restored.account_kind is None
    assert restored.third_party_app is None
    assert restored.last_used_at is None


def test_journal_notes_lock_kind_and_binding_but_not_last_use() -> None:
    before = _facts(key_locked=False, account_kind="master", third_party_app=False)
    after = _facts(key_locked=True, account_kind="sub", third_party_app=True, last_used_at=USED)
    changes = {c.field: (c.before, c.after) for c in diff_facts(before, after)}
    assert changes == {
        "key_locked": ("off", "on"),
        "account_kind": ("master", "sub"),
        "third_party_app": ("off", "on"),
    }
    assert diff_facts(_facts(last_used_at=USED), _facts(last_used_at=NOW)) == []


def _judge(facts: KeyFacts) -> Any:
    return evaluate(facts, Policy(), policy_name="p", trusted_ips=(), now=NOW)


def test_key_locked_rule_fires_only_where_the_lock_is_shown() -> None:
    locked = _judge(_facts(key_locked=True))
    assert [(f.rule, f.severity) for f in locked.findings if f.rule is Rule.KEY_LOCKED] == [
        (Rule.KEY_LOCKED, Severity.CRITICAL)
    ]
    unlocked = _judge(_facts(key_locked=False))
    assert Rule.KEY_LOCKED in {c.rule for c in unlocked.checks}
    assert not [f for f in unlocked.findings if f.rule is Rule.KEY_LOCKED]
    hidden = _judge(_facts())
    assert Rule.KEY_LOCKED not in {c.rule for c in hidden.checks}


def _state(facts: KeyFacts) -> Any:
    key = SimpleNamespace(
        name="k", client="c", exchange="gate", labels={}, api_key=SimpleNamespace(get=lambda: "x")
    )
    policy = Policy()
    return SimpleNamespace(
        key=key,
        policy_name="p",
        policy=policy,
        coverage=Coverage.INTROSPECTION,
        interval=timedelta(minutes=5),
        last_facts=facts,
        findings=list,
        checks=list,
        changes={},
        last_result=None,
        last_success=None,
    )


def test_metrics_export_what_is_shown_and_nothing_else() -> None:
    samples = {f.name: v for f, _labels, v in key_samples(_state(FULL), ())}
    assert samples["keymon_key_locked"] == 1.0
    assert samples["keymon_key_sub_account"] == 1.0
    assert samples["keymon_key_third_party_app"] == 0.0
    assert samples["keymon_key_last_used_timestamp_seconds"] == USED.timestamp()
    hidden = {f.name for f, _labels, _v in key_samples(_state(_facts()), ())}
    assert not hidden & {
        "keymon_key_locked",
        "keymon_key_sub_account",
        "keymon_key_third_party_app",
        "keymon_key_last_used_timestamp_seconds",
    }
