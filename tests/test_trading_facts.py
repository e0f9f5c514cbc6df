"""The trading-readiness facts outside the exchange: the policy's ``lock_risk``, the rules'
words, the state file, the change journal and the store's handling of a failed read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from keymon.app import _warn_if_budget_short
from keymon.changes import diff_facts
from keymon.config import Policy, load
from keymon.errors import ConfigError
from keymon.model import AuditError, Coverage, KeyFacts, Reason, Rule, TradingIndicator
from keymon.policy import evaluate
from keymon.state import facts_from_json, facts_to_json
from tests.conftest import make_settings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _facts(**extra: Any) -> KeyFacts:
    return KeyFacts(
        coverage=Coverage.INTROSPECTION,
        permissions={"read": True, "spot_trade": True, "withdraw": False},
        ip_restricted=True,
        **extra,
    )


def _findings(facts: KeyFacts, policy: Policy | None = None) -> dict[Rule, str]:
    evaluation = evaluate(facts, policy or Policy(), policy_name="mm", trusted_ips=(), now=NOW)
    return {f.rule: f.message for f in evaluation.findings}


@pytest.mark.parametrize(
    ("written", "share"),
    [("80%", 0.8), ("0.8", 0.8), (0.9, 0.9), ("100%", 1.0), (" 75 % ".replace(" ", ""), 0.75)],
    ids=["percent", "fraction-text", "fraction", "hundred", "seventy-five"],
)
def test_lock_risk_reads_a_percentage_or_a_fraction(written: object, share: float) -> None:
    """``lock_risk`` is written 80% or 0.8."""
    assert Policy(lock_risk=written).lock_risk == pytest.approx(share)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (80, "80 is out of range"),
        ("0%", "out of range"),
        ("high", "'high' is not a share"),
        (True, "is not a share"),
    ],
    ids=["bare-80", "zero", "word", "bool"],
)
def test_a_bad_lock_risk_says_where_and_what(tmp_path: Path, written: object, message: str) -> None:
    """A bad ``lock_risk`` is a configuration error naming the field, never a guess."""
    value = {True: "true"}.get(written, written) if isinstance(written, bool) else written
    path = tmp_path / "keymon.yaml"
    path.write_text(f"policies:\n  market-maker:\n    lock_risk: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    problems = "\n".join(caught.value.problems)
    assert "policies.market-maker.lock_risk" in problems
    assert message in problems


def test_lock_risk_default_and_the_risk_rule_boundary() -> None:
    """80 % by default; an indicator exactly at it warns, one just below does not; while
    locked, the warning yields to trading_locked."""
    assert Policy().lock_risk == 0.8
    at = _facts(trading_locked=False, trading_indicators=(TradingIndicator("IFER", "X", 0.8, 1),))
    below = _facts(
        trading_locked=False, trading_indicators=(TradingIndicator("IFER", "X", 0.79, 1),)
    )
    assert "IFER on X is at 80% of its trigger" in _findings(at)[Rule.TRADING_LOCK_RISK]
    assert Rule.TRADING_LOCK_RISK not in _findings(below)
    locked = _facts(
        trading_locked=True, trading_indicators=(TradingIndicator("IFER", "X", 1.0, 1),)
    )
    assert Rule.TRADING_LOCK_RISK not in _findings(locked)
    assert "IFER 1 >= 1 on X" in _findings(locked)[Rule.TRADING_LOCKED]


def test_the_lock_message_without_recovery_time_or_trigger() -> None:
    """A lock with nothing more said still fires, and says what is missing."""
    message = _findings(_facts(trading_locked=True))[Rule.TRADING_LOCKED]
    assert "no planned recovery time given" in message
    assert "trigger: not stated by the exchange" in message


def test_unknown_trading_facts_evaluate_no_trading_rule() -> None:
    """Not shown (None) is not evaluated: no check, so no series, rather than a false OK."""
    evaluation = evaluate(_facts(), Policy(), policy_name="mm", trusted_ips=(), now=NOW)
    checked = {c.rule for c in evaluation.checks}
    assert not checked & {Rule.TRADING_LOCKED, Rule.TRADING_LOCK_RISK, Rule.ACCOUNT_RESTRICTED}


def test_state_file_round_trips_the_trading_facts() -> None:
    """Every trading fact survives a restart; rows written before them read as not shown."""
    facts = _facts(
        trading_locked=True,
        trading_recover_at=NOW + timedelta(hours=2),
        trading_trigger={"GCR": 150.0, "IFER": 150.0, "UFR": 300.0},
        trading_indicators=(TradingIndicator("UFR", "BTCUSDT", 0.995, 0.99),),
        account_status="Normal",
        trading_status_error=AuditError(Reason.TIMEOUT, "binance: read timeout"),
    )
    assert facts_from_json(facts_to_json(facts)) == facts
    old = facts_from_json(facts_to_json(_facts()))
    assert old.trading_locked is None
    assert old.trading_indicators is None
    assert old.account_status is None
    assert old.trading_status_error is None


def test_the_journal_records_lock_and_status_changes_not_indicators() -> None:
    """trading_locked and account_status are journaled; indicators (they move with every
    order) and a read that failed (unknown, not changed) are not."""
    before = _facts(
        trading_locked=False,
        account_status="Normal",
        trading_indicators=(TradingIndicator("UFR", "X", 0.1, 1),),
    )
    after = _facts(
        trading_locked=True,
        account_status="Restricted",
        trading_indicators=(TradingIndicator("UFR", "X", 0.9, 1),),
    )
    assert [str(c) for c in diff_facts(before, after)] == [
        "trading_locked: off -> on",
        "account_status: Normal -> Restricted",
    ]
    assert diff_facts(after, _facts()) == []


def test_the_budget_warning_counts_the_trading_status_reads() -> None:
    """Three weight per Binance audit with the trading-status reads: a budget that fits the
    audits' apiRestrictions calls but not all three draws budget_too_small; without the
    reads it fits."""
    keys = [
        {"name": f"k{n}", "client": "c", "exchange": "binance", "api_key": "k", "api_secret": "s"}
        for n in range(10)
    ]
    for reads, warned in ((True, True), (False, False)):
        settings = make_settings(
            *keys,
            audit={"interval": "1m", "jitter": "1s"},
            exchanges={
                "binance": {
                    "base_url": "https://binance.test",
                    "max_weight_per_minute": 20,
                    "trading_status": reads,
                }
            },
        )
        with capture_logs() as logs:
            _warn_if_budget_short(settings)
        events = [e for e in logs if e["event"] == "budget_too_small"]
        assert bool(events) is warned
        if warned:
            assert events[0]["needed_weight_per_minute"] == 30
            assert events[0]["mandatory_weight_per_minute"] == 10
            assert "trading status" in events[0]["detail"]
            assert "skipped first" in events[0]["detail"]


def test_auto_keys_are_planned_without_the_trading_status_reads() -> None:
    """1,000 Binance keys on `interval: auto` and the default budget: the interval is planned
    on the restriction reads alone (under a minute), and no budget_too_small: the trading
    status is read from what is left."""
    keys = [
        {"name": f"k{n}", "client": "c", "exchange": "binance", "api_key": "k", "api_secret": "s"}
        for n in range(1000)
    ]
    settings = make_settings(*keys, audit={"interval": "auto"})
    assert settings.interval_for(settings.keys[0]).total_seconds() < 60
    with capture_logs() as logs:
        _warn_if_budget_short(settings)
    assert [e for e in logs if e["event"] == "budget_too_small"] == []
