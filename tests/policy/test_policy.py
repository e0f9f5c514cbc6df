"""The policy: every rule of PRODUCT.md's table, each severity, and the three-state facts."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from keymon.config import Policy
from keymon.model import (
    AuditError,
    Coverage,
    Deadline,
    Evaluation,
    KeyFacts,
    Reason,
    Rule,
    Severity,
)
from keymon.policy import audit_failing, evaluate, evaluate_error
from keymon.policy.rules import masked_could_match

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TRUSTED = (
    ipaddress.ip_network("203.0.113.10/32"),
    ipaddress.ip_network("198.51.100.0/28"),
    ipaddress.ip_network("2001:db8::/64"),
)
GUIDE_PERMISSIONS = {
    "read": True,
    "spot_trade": True,
    "margin_loan": False,
    "futures_trade": False,
    "options_trade": False,
    "portfolio_margin": False,
    "withdraw": False,
    "internal_transfer": False,
    "universal_transfer": False,
    "fix_trade": False,
    "fix_read": False,
}


def facts(**overrides: object) -> KeyFacts:
    permissions = dict(GUIDE_PERMISSIONS)
    permissions.update(overrides.pop("permissions", {}))  # type: ignore[call-overload]
    base: dict[str, object] = {
        "coverage": Coverage.INTROSPECTION,
        "permissions": permissions,
        "ip_restricted": True,
        "ip_list": None,
        "created_at": NOW - timedelta(days=30),
        "deadlines": (),
    }
    base.update(overrides)
    return KeyFacts(**base)  # type: ignore[arg-type]


def judge(f: KeyFacts, policy: Policy | None = None) -> Evaluation:
    return evaluate(f, policy or Policy(), policy_name="market-maker", trusted_ips=TRUSTED, now=NOW)


def fired(evaluation: Evaluation) -> set[tuple[str, str, str | None]]:
    return {(str(f.rule), str(f.severity), f.permission) for f in evaluation.findings}


def test_guide_compliant_key_has_no_findings() -> None:
    """A key set up exactly as the client guide asks raises nothing."""
    assert judge(facts()).findings == ()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"permissions": {"withdraw": True}}, {("withdraw_enabled", "critical", None)}),
        ({"ip_restricted": False}, {("ip_unrestricted", "critical", None)}),
        (
            {"permissions": {"internal_transfer": True}},
            {("forbidden_permission", "critical", "internal_transfer")},
        ),
        (
            {"permissions": {"universal_transfer": True}},
            {("forbidden_permission", "critical", "universal_transfer")},
        ),
        (
            {"permissions": {"futures_trade": True}},
            {("forbidden_permission", "warning", "futures_trade")},
        ),
        (
            {"permissions": {"options_trade": True}},
            {("forbidden_permission", "warning", "options_trade")},
        ),
        (
            {"permissions": {"margin_loan": True}},
            {("forbidden_permission", "warning", "margin_loan")},
        ),
        (
            {"permissions": {"portfolio_margin": True}},
            {("forbidden_permission", "warning", "portfolio_margin")},
        ),
        ({"permissions": {"spot_trade": False}}, {("missing_permission", "warning", "spot_trade")}),
        ({"permissions": {"read": False}}, {("missing_permission", "warning", "read")}),
        ({"ip_list": ("203.0.113.10", "192.0.2.55")}, {("untrusted_ip", "critical", None)}),
    ],
    ids=[
        "withdraw",
        "ip-unrestricted",
        "internal-transfer",
        "universal-transfer",
        "futures",
        "options",
        "margin-loan",
        "portfolio-margin",
        "spot-trade-off",
        "read-off",
        "untrusted-ip",
    ],
)
def test_each_rule_fires_with_its_default_severity(
    overrides: dict[str, object], expected: set[tuple[str, str, str | None]]
) -> None:
    """Each rule fires alone, at the severity PRODUCT.md's default policy gives it."""
    assert fired(judge(facts(**overrides))) == expected


def test_withdraw_is_checked_whatever_the_policy() -> None:
    """withdraw_enabled fires even under a policy that forbids and requires nothing."""
    lax = Policy(require=(), forbid={}, require_ip_restriction=False)
    evaluation = judge(facts(permissions={"withdraw": True}, ip_restricted=False), lax)
    assert fired(evaluation) == {("withdraw_enabled", "critical", None)}


def test_forbid_severity_comes_from_the_policy() -> None:
    """A policy that makes futures critical gets a critical finding for futures."""
    strict = Policy(forbid={"futures_trade": Severity.CRITICAL})
    evaluation = judge(facts(permissions={"futures_trade": True}), strict)
    assert fired(evaluation) == {("forbidden_permission", "critical", "futures_trade")}


def test_ip_unrestricted_is_not_evaluated_when_the_policy_allows_it() -> None:
    """With require_ip_restriction false, an open key raises nothing and no check exists."""
    policy = Policy(require_ip_restriction=False)
    evaluation = judge(facts(ip_restricted=False), policy)
    assert evaluation.findings == ()
    assert Rule.IP_UNRESTRICTED not in {c.rule for c in evaluation.checks}


def test_ip_unrestricted_carries_the_exchanges_note() -> None:
    """An adapter's note on what the exchange does to an unrestricted key ends the message."""
    note = "BingX deletes such a key after 14 days without use"
    (finding,) = judge(facts(ip_restricted=False, ip_unrestricted_note=note)).findings
    assert finding.rule is Rule.IP_UNRESTRICTED
    assert finding.message.endswith(f"(no IP whitelist); {note}")
    assert judge(facts(ip_unrestricted_note=note)).findings == ()  # restricted: no finding


def test_invisible_ip_list_means_no_untrusted_ip_check() -> None:
    """Where the exchange hides the IP list (Binance), untrusted_ip is absent, not passed."""
    evaluation = judge(facts(ip_list=None))
    assert Rule.UNTRUSTED_IP not in {c.rule for c in evaluation.checks}
    assert Rule.IP_UNRESTRICTED in {c.rule for c in evaluation.checks}


@pytest.mark.parametrize(
    ("ip_list", "bad"),
    [
        (("203.0.113.10",), False),
        (("198.51.100.3", "198.51.100.0/29"), False),
        (("198.51.100.0/24",), True),  # a wider network than trusted
        (("2001:db8::1",), False),
        (("2001:db9::1",), True),
        (("not-an-ip",), True),
    ],
    ids=["exact", "inside-cidr", "wider-network", "ipv6-inside", "ipv6-outside", "garbage"],
)
def test_untrusted_ip_compares_addresses_and_networks(ip_list: tuple[str, ...], bad: bool) -> None:
    """An entry is trusted only when it lies inside a trusted network, IPv4 or IPv6."""
    evaluation = judge(facts(ip_list=ip_list))
    assert (("untrusted_ip", "critical", None) in fired(evaluation)) is bad
    assert Rule.UNTRUSTED_IP in {c.rule for c in evaluation.checks}


def test_invisible_permissions_are_not_judged() -> None:
    """A permission the exchange does not show raises no finding and has no check."""
    f = KeyFacts(
        coverage=Coverage.INTROSPECTION, permissions={"withdraw": False}, ip_restricted=True
    )
    evaluation = judge(f)
    assert evaluation.findings == ()
    permissions_checked = {c.permission for c in evaluation.checks if c.permission}
    assert permissions_checked == set()


@pytest.mark.parametrize(
    ("left", "severity"),
    [
        (timedelta(days=20), None),
        (timedelta(days=10), "warning"),
        (timedelta(days=2), "critical"),
        (timedelta(hours=-1), "critical"),
    ],
    ids=["far", "within-warning", "within-critical", "passed"],
)
def test_review_deadline_windows(left: timedelta, severity: str | None) -> None:
    """The trading-authority deadline warns inside 14d, is critical inside 3d or passed."""
    f = facts(ip_restricted=False, deadlines=(Deadline("trading_authority", NOW + left),))
    found = {s for r, s, _ in fired(judge(f)) if r == "review_deadline"}
    assert found == ({severity} if severity else set())


def test_passed_deadline_message_says_passed() -> None:
    """A deadline in the past is reported as passed, with the date."""
    f = facts(deadlines=(Deadline("trading_authority", NOW - timedelta(days=1)),))
    (finding,) = [x for x in judge(f).findings if x.rule is Rule.REVIEW_DEADLINE]
    assert "passed" in finding.message
    assert "2026-11-22" in finding.message


def test_no_deadline_means_no_review_check() -> None:
    """An IP-restricted Binance key has no deadline, and that is fine: no check, no finding."""
    evaluation = judge(facts())
    assert Rule.REVIEW_DEADLINE not in {c.rule for c in evaluation.checks}


def test_key_too_old_only_with_max_age() -> None:
    """key_too_old fires past max_age, and is not evaluated without one."""
    old = facts(created_at=NOW - timedelta(days=400))
    assert ("key_too_old", "warning", None) in fired(
        judge(old, Policy(max_age=timedelta(days=365)))
    )
    assert Rule.KEY_TOO_OLD not in {c.rule for c in judge(old).checks}
    young = facts(created_at=NOW - timedelta(days=10))
    assert fired(judge(young, Policy(max_age=timedelta(days=365)))) == set()


def test_rejected_key_is_critical_never_healthy() -> None:
    """A key the exchange rejects is a critical key_rejected finding with the refused IP."""
    error = AuditError(
        Reason.KEY_REJECTED, "binance rejects the key; refused 203.0.113.7", -2015, "203.0.113.7"
    )
    evaluation = evaluate_error(error)
    assert [(f.rule, f.severity) for f in evaluation.findings] == [
        (Rule.KEY_REJECTED, Severity.CRITICAL)
    ]
    assert "203.0.113.7" in evaluation.findings[0].message


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.KEY_REJECTED], ids=str)
def test_other_failures_have_no_findings_and_no_checks(reason: Reason) -> None:
    """A failed audit for any other reason is unknown: nothing passes, nothing is judged."""
    evaluation = evaluate_error(AuditError(reason, "boom"))
    assert evaluation == Evaluation((), ())


def test_audit_failing_after_three_intervals() -> None:
    """audit_failing fires once three intervals pass without a successful audit."""
    interval = timedelta(minutes=5)
    last = NOW - timedelta(minutes=14)
    assert audit_failing(last_success=last, first_attempt=last, now=NOW, interval=interval) is None
    last = NOW - timedelta(minutes=15)
    finding = audit_failing(last_success=last, first_attempt=last, now=NOW, interval=interval)
    assert finding is not None
    assert finding.severity is Severity.WARNING
    never = audit_failing(
        last_success=None, first_attempt=NOW - timedelta(hours=1), now=NOW, interval=interval
    )
    assert never is not None
    assert "since keymon started" in never.message


def test_checks_list_every_evaluated_rule_and_severity() -> None:
    """The checks name each evaluated rule with the severities it can take (for metrics)."""
    f = facts(deadlines=(Deadline("trading_authority", NOW + timedelta(days=30)),))
    checks = {(str(c.rule), c.permission): tuple(map(str, c.severities)) for c in judge(f).checks}
    assert checks[("review_deadline", None)] == ("warning", "critical")
    assert checks[("forbidden_permission", "futures_trade")] == ("warning",)
    assert checks[("withdraw_enabled", None)] == ("critical",)
    assert checks[("key_rejected", None)] == ("critical",)


@pytest.mark.parametrize(
    ("entry", "network", "fits"),
    [
        ("203.**.10", "203.0.113.10/32", True),
        ("203.**.10", "203.0.113.11/32", False),
        ("203.**.10", "203.0.113.0/24", True),
        ("203.**.10", "204.0.0.0/24", False),
        ("203.**.10", "200.0.0.0/5", True),  # wider than /24: only the first octet can rule out
        ("203.**.10", "10.0.0.0/8", False),
        ("203.**.10", "2001:db8::/32", False),
        ("**", "0.0.0.0/0", False),  # nothing visible: cannot vouch for it
    ],
)
def test_masked_entries_match_on_their_visible_parts(entry: str, network: str, fits: bool) -> None:
    """KuCoin's masked whitelist entries are compared on the first and last octet only."""
    assert masked_could_match(entry, ipaddress.ip_network(network)) is fits


def test_keys_under_different_policies_keep_their_own_checks() -> None:
    """Keys judged in turn under two policies (the rule sets are shared between equal ones):
    each key's checks and findings are its own policy's, whatever was judged before it."""
    strict = Policy(forbid={"futures_trade": Severity.CRITICAL}, require=("spot_trade",))
    lax = Policy(forbid={"futures_trade": Severity.WARNING}, require=())
    same = facts(permissions={"futures_trade": True})
    judged = [(name, judge(same, policy)) for name, policy in [("a", strict), ("b", lax)] * 3]
    for name, evaluation in judged:
        checks = {(str(c.rule), c.severities, c.permission) for c in evaluation.checks}
        if name == "a":
            assert fired(evaluation) == {("forbidden_permission", "critical", "futures_trade")}
            assert ("forbidden_permission", (Severity.CRITICAL,), "futures_trade") in checks
            assert ("missing_permission", (Severity.WARNING,), "spot_trade") in checks
        else:
            assert fired(evaluation) == {("forbidden_permission", "warning", "futures_trade")}
            assert ("forbidden_permission", (Severity.WARNING,), "futures_trade") in checks
            assert not any(rule == "missing_permission" for rule, _, _ in checks)
    # Same policy, same visible facts: the same verdict, key after key.
    assert judged[0][1] == judged[2][1] == judged[4][1]
    assert judged[1][1] == judged[3][1] == judged[5][1]
