"""The shipped alert rules, their unit tests, the Alertmanager configuration and the runbook."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from keymon.app import App
from keymon.config import load
from keymon.metrics import KEY_FAMILIES, NOTIFY_OUTCOMES, SelfMetrics
from keymon.model import Reason, Rule
from keymon.simulator.binance import BinanceSimulator
from keymon.simulator.gate import GateSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET
from tests.deploy import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_TEMPLATES,
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES,
    RUNBOOK,
    RUNBOOK_BASE,
    require_tool,
)
from tests.test_app import write_config

SEVERITIES = {"info", "warning", "critical"}
#: The one alert whose severity comes from the series (the policy's severity for the permission).
SEVERITY_FROM_SERIES = {"KeymonKeyForbiddenPermission": "{{ $labels.severity }}"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
#: Rules never evaluated for a Binance key (it does not show its own IP list).
NOT_ON_BINANCE = {str(Rule.UNTRUSTED_IP), str(Rule.KEY_LOCKED)}
#: The security alerts and the finding each reports: held through keymon outages.
SECURITY = {
    "KeymonKeyWithdrawEnabled": str(Rule.WITHDRAW_ENABLED),
    "KeymonKeyIpUnrestricted": str(Rule.IP_UNRESTRICTED),
    "KeymonKeyUntrustedIp": str(Rule.UNTRUSTED_IP),
    "KeymonKeyRejected": str(Rule.KEY_REJECTED),
    "KeymonKeyForbiddenPermission": str(Rule.FORBIDDEN_PERMISSION),
}
#: The recording rule the security alerts read.
HELD = "keymon:key_security_finding:held"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def all_rules() -> list[dict[str, Any]]:
    """Every rule of the shipped rules file, alerting and recording, in order."""
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped rules file."""
    return [rule for rule in all_rules() if "alert" in rule]


def recorded_names() -> set[str]:
    """The names the recording rules of the shipped rules file record."""
    return {rule["record"] for rule in all_rules() if "record" in rule}


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> dict[str, str]:
    """{anchor: heading} for every heading of RUNBOOK.md."""
    anchors = {}
    for line in RUNBOOK.read_text().splitlines():
        match = re.match(r"#{1,6}\s+(.+)", line)
        if match:
            anchors[_slug(match.group(1))] = match.group(1).strip()
    return anchors


def _names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: keymon's, recorded ``keymon:...`` ones, ``up``."""
    names = set(re.findall(r"\bkeymon_[a-z0-9_]+\b", expr))
    names |= set(re.findall(r"\bkeymon:[a-z0-9_:]+", expr))
    return names | set(re.findall(r"\b(up)\s*\{", expr))


def _matchers(expr: str) -> Iterator[tuple[str, str]]:
    """(label, value) of every equality matcher in a PromQL expression.

    A regular-expression matcher of plain alternatives (``rule=~"a|b"``) counts as one
    matcher per alternative; any other regular expression fails the test that uses it.
    """
    for selector in re.findall(r"\{([^}]*)\}", expr):
        yield from re.findall(r'(\w+)\s*=\s*"([^"]*)"', selector)
        for label, pattern in re.findall(r'(\w+)\s*=~\s*"([^"]*)"', selector):
            assert re.fullmatch(r"\w+(\|\w+)*", pattern), f"{label}=~{pattern!r}: not plain"
            for value in pattern.split("|"):
                yield label, value


def _grouping_labels(expr: str) -> set[str]:
    """Label names in ``by (...)``, ``without (...)``, ``on (...)`` and ``group_left (...)``."""
    labels: set[str] = set()
    for group in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    return labels


def declared_metric_names() -> set[str]:
    """Every sample name keymon.metrics can export."""
    names = {family.sample_name for family in KEY_FAMILIES}
    registry = CollectorRegistry()
    SelfMetrics(registry, ["binance"])
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for metric in registry.collect():
        # Labelled families have no samples until first used: derive the names from the type.
        names |= {metric.name + suffix for suffix in suffixes.get(metric.type, ("",))}
        names |= {sample.name for sample in metric.samples}
    return names


# ----------------------------------------------------------------------------- the tools


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts the rules file."""
    promtool = require_tool("promtool")
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes every unit test of the rules."""
    promtool = require_tool("promtool")
    result = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_example_prometheus_config() -> None:
    """`promtool check config` accepts the example prometheus.yml and the rules it loads."""
    promtool = require_tool("promtool")
    result = _run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_amtool_check_config() -> None:
    """`amtool check-config` accepts alertmanager.yml with its templates and inhibit rule."""
    amtool = require_tool("amtool")
    result = _run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout
    assert "1 templates" in result.stdout


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    """Whether Alertmanager ``matchers`` (``a="b"``, ``a=~"re"``) all match ``labels``."""
    for matcher in matchers:
        match = re.fullmatch(r'(\w+)(=~|=)"([^"]*)"', matcher)
        assert match, f"matcher {matcher!r} not understood by this test"
        name, op, value = match.groups()
        actual = labels.get(name, "")
        if not (re.fullmatch(value, actual) if op == "=~" else actual == value):
            return False
    return True


def muted_by(source: dict[str, str], target: dict[str, str]) -> bool:
    """Whether alertmanager.yml's inhibit rules let alert ``source`` mute alert ``target``."""
    rules = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["inhibit_rules"]
    return any(
        _matches(rule["source_matchers"], source)
        and _matches(rule["target_matchers"], target)
        and all(source.get(label) == target.get(label) for label in rule.get("equal", []))
        for rule in rules
    )


def _static_labels(rule: dict[str, Any]) -> dict[str, str]:
    """An alert's name, severity and, for a per-key alert, a `key` (its other labels vary)."""
    labels = {"alertname": rule["alert"], "severity": rule["labels"]["severity"]}
    if rule["alert"].startswith(("KeymonKey", "KeymonAudits")):
        labels["key"] = "acme-main"
    if labels["severity"].startswith("{{"):
        labels["severity"] = "warning"  # the policy's: the weaker one, the one muted more
    return labels


def test_keymon_down_mutes_every_keys_audit_health_alerts_and_nothing_else_per_key() -> None:
    """KeymonDown/KeymonAbsent (no `key`) mute per-key audit-health alerts, never security ones.

    And the critical-mutes-same-key-warnings rule still holds.
    """
    rules = {rule["alert"]: _static_labels(rule) for rule in alert_rules()}
    down = {"alertname": "KeymonDown", "severity": "critical", "job": "keymon", "instance": "k"}
    absent = {"alertname": "KeymonAbsent", "severity": "critical", "job": "keymon"}
    per_key = {name for name, labels in rules.items() if "key" in labels}
    muted = {name for name in per_key if muted_by(down, rules[name])}
    assert muted == {"KeymonAuditsStale", "KeymonAuditsFailing"}
    assert {name for name in per_key if muted_by(absent, rules[name])} == muted
    assert not muted & set(SECURITY)
    # keymon's own warnings (no key) are moot while it is down, as before.
    assert muted_by(down, rules["KeymonConfigReloadFailed"])
    # A key's critical alert mutes that key's warnings, not another key's.
    withdraw = rules["KeymonKeyWithdrawEnabled"]
    assert muted_by(withdraw, rules["KeymonKeyReviewDeadlineNear"])
    assert not muted_by(withdraw, {**rules["KeymonKeyReviewDeadlineNear"], "key": "other"})
    assert not muted_by(withdraw, rules["KeymonKeyIpUnrestricted"])


def test_outage_unit_tests_fire_only_held_security_and_muted_alerts() -> None:
    """In the promtool outage cases, every alert that fires is KeymonDown/KeymonAbsent, a held
    security alert, or one that Alertmanager mutes while KeymonDown/KeymonAbsent fires."""
    rules = {rule["alert"]: _static_labels(rule) for rule in alert_rules()}
    down = {"alertname": "KeymonDown", "severity": "critical", "job": "keymon", "instance": "k"}
    allowed = {"KeymonDown", "KeymonAbsent", *SECURITY}
    allowed |= {name for name, labels in rules.items() if muted_by(down, labels)}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    outages = [case for case in tests if case["name"].startswith("outage")]
    assert len(outages) >= 3
    for case in outages:
        checks = [
            check
            for check in case.get("promql_expr_test", [])
            if "ALERTS" in check["expr"] and check["exp_samples"]
        ]
        assert checks, f"{case['name']}: list what fires during the outage"
        for check in checks:
            firing = {
                name
                for sample in check["exp_samples"]
                for name in re.findall(r'alertname="(\w+)"', sample["labels"])
            }
            assert firing & {"KeymonDown", "KeymonAbsent"}, (case["name"], check["eval_time"])
            assert firing <= allowed, (case["name"], check["eval_time"], firing - allowed)


def test_notification_templates_render(tmp_path: Path) -> None:
    """The Slack and Telegram templates render a firing and a resolved alert, HTML-escaped."""
    amtool = require_tool("amtool")
    labels = {"severity": "critical", "key": "acme-main", "client": "acme", "exchange": "binance"}
    url = RUNBOOK_BASE + "keymonkeywithdrawenabled"

    def alert(status: str, name: str, summary: str) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {"alertname": name, **labels},
            "annotations": {"summary": summary, "description": "a <b> & c", "runbook_url": url},
            "startsAt": "2026-11-23T22:57:10Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": name,
        }

    data = {
        "receiver": "ops-telegram",
        "status": "firing",
        "alerts": [
            alert("firing", "KeymonKeyWithdrawEnabled", "Withdrawals are enabled"),
            alert("resolved", "KeymonKeyIpUnrestricted", "Any IP"),
        ],
        "groupLabels": {"key": "acme-main"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
    }
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))

    def render(name: str) -> str:
        result = _run(
            amtool,
            "template",
            "render",
            f"--template.glob={ALERTMANAGER_TEMPLATES}",
            f"--template.data={data_file}",
            f'--template.text={{{{ template "{name}" . }}}}',
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert render("keymon.title").strip() == "[FIRING:1] acme-main (acme, binance)"
    slack = render("keymon.slack.text")
    assert "*CRITICAL* Withdrawals are enabled" in slack
    assert "*RESOLVED* Any IP" in slack
    assert f"Runbook: {url}" in slack
    telegram = render("keymon.telegram.message")
    assert "<b>CRITICAL</b> Withdrawals are enabled" in telegram
    assert "a &lt;b&gt; &amp; c" in telegram  # annotations cannot break parse_mode HTML
    assert f'<a href="{url}">Runbook</a>' in telegram


# ----------------------------------------------------------------------------- the contract


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    """Each alert has a severity label and summary, description and runbook_url annotations."""
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        assert severity in SEVERITIES or severity == SEVERITY_FROM_SERIES.get(name), name
        annotations = rule.get("annotations", {})
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        for field in ("summary", "description"):
            assert annotations[field].strip(), f"{name}: empty {field}"
        if name.startswith(("KeymonKey", "KeymonAudits")):
            for label in ("key", "client", "exchange"):
                assert f"$labels.{label}" in annotations["description"], (name, label)


def test_runbook_urls_point_at_runbook_sections() -> None:
    """Every runbook_url is RUNBOOK.md's anchor of a heading named after the alert."""
    anchors = runbook_anchors()
    for rule in alert_rules():
        name, url = rule["alert"], rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), name
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor in anchors, f"{name}: no heading for #{anchor} in RUNBOOK.md"
        assert anchors[anchor] == name, f"{name}: #{anchor} is the section {anchors[anchor]!r}"
    # Links inside the runbook itself lead somewhere too.
    for anchor in re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text()):
        assert anchor in anchors, f"RUNBOOK.md links to #{anchor}, which has no heading"


def test_security_alerts_fire_without_waiting() -> None:
    """Withdrawals, IP restriction, untrusted IP and rejected key alerts have no `for:`."""
    security = {
        "KeymonKeyWithdrawEnabled",
        "KeymonKeyIpUnrestricted",
        "KeymonKeyUntrustedIp",
        "KeymonKeyRejected",
    }
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert security <= set(rules)
    for name in security:
        assert "for" not in rules[name], name
        assert rules[name]["labels"]["severity"] == "critical", name


def test_security_alerts_read_the_held_findings() -> None:
    """Security alerts read keymon:key_security_finding:held, never a window that runs out.

    The record is evaluated in the alerts' group, before them, holds exactly the security
    findings, reads its own previous value (the hold) and ``up`` (to tell a keymon that is
    down from one that dropped the key). ``keep_firing_for`` would also hold the real fix.
    """
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (group,) = [g for g in groups if any(r.get("record") == HELD for r in g["rules"])]
    order = [rule.get("record") or rule.get("alert") for rule in group["rules"]]
    assert all(order.index(HELD) < order.index(name) for name in SECURITY), order
    (record,) = [rule for rule in group["rules"] if rule.get("record") == HELD]
    held_rules = {value for label, value in _matchers(record["expr"]) if label == "rule"}
    assert held_rules == set(SECURITY.values())
    assert HELD in record["expr"].split("\n", 1)[1], "the record must read its own last value"
    assert 'up{job="keymon"} == 1' in record["expr"]
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, finding in SECURITY.items():
        expr = rules[name]["expr"]
        assert f'{HELD}{{rule="{finding}"}}' in expr, name
        assert "_over_time" not in expr, name
        assert "keep_firing_for" not in rules[name], name
        assert "for" not in rules[name], name


def test_rule_groups_follow_the_users_evaluation_interval() -> None:
    """No group pins an `interval:`: the user's `evaluation_interval` decides, as documented."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert not [group["name"] for group in groups if "interval" in group]
    assert "interval: 30s" not in RULES.read_text()


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    """The promtool tests make each alert fire, stay quiet, and cover the no-series case."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= firing, f"never tested firing: {sorted(names - firing)}"
    assert names <= quiet, f"never tested quiet: {sorted(names - quiet)}"
    (empty,) = [case for case in tests if not case.get("input_series")]
    checked = {check["alertname"]: check["exp_alerts"] for check in empty["alert_rule_test"]}
    assert set(checked) == names, "the no-series test must cover every alert"
    assert [name for name, exp in checked.items() if exp] == ["KeymonAbsent"]


def test_audits_stale_follows_each_keys_own_interval() -> None:
    """KeymonAuditsStale compares each key's last success with 3 times that key's interval."""
    (rule,) = [rule for rule in alert_rules() if rule["alert"] == "KeymonAuditsStale"]
    expr = " ".join(rule["expr"].split())
    assert "3 * max by (key, client, exchange) (" in expr
    assert "last_over_time(keymon_key_audit_interval_seconds[15m])" in expr
    assert "last_over_time(keymon_key_last_audit_success_timestamp_seconds[15m])" in expr
    assert not re.search(r"[<>]=?\s*\d", expr), "no fixed threshold: the key's interval decides"
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    stale = [
        case
        for case in tests
        if any(
            c["alertname"] == "KeymonAuditsStale" and c["exp_alerts"]
            for c in case.get("alert_rule_test", [])
        )
    ]
    intervals = {
        series["values"].split("x")[0]
        for case in stale
        for series in case["input_series"]
        if series["series"].startswith("keymon_key_audit_interval_seconds{")
    }
    assert len(intervals) >= 3, f"test several per-key intervals, not only {sorted(intervals)}"


def test_rules_use_only_metrics_and_label_values_keymon_exports() -> None:
    """Metric names, `rule`/`outcome`/`reason` values in the rules exist in keymon.metrics."""
    declared = declared_metric_names() | {"up"}
    allowed_values = {
        "rule": {str(rule) for rule in Rule},
        "outcome": set(NOTIFY_OUTCOMES),
        "reason": {str(reason) for reason in Reason},
        "job": {"keymon"},
    }
    declared |= recorded_names()
    for rule in all_rules():
        expr, name = rule["expr"], rule.get("alert") or rule["record"]
        names = _names_in(expr)
        assert names, name
        assert names <= declared, f"{name}: {sorted(names - declared)} not exported by keymon"
        for label, value in _matchers(expr):
            assert label in allowed_values, f"{name}: unexpected matcher {label}"
            assert value in allowed_values[label], f"{name}: {label}={value!r} does not exist"
        text = " ".join(rule.get("annotations", {}).values())
        mentioned = set(re.findall(r"\bkeymon_[a-z0-9_]+\b", text))
        assert mentioned <= declared, f"{name}: annotations name {sorted(mentioned - declared)}"


async def test_rules_match_a_real_scrape(tmp_path: Path) -> None:
    """Each metric, `rule` value and grouping label the rules use appears in a real scrape."""
    sim = BinanceSimulator()
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    # Unrestricted, so it has a trading-authority deadline; max_age, so key_too_old is judged.
    expires_ms = int((time.time() + 2 * 86400) * 1000)
    sim.update_key(DOC_API_KEY, ipRestrict=False, tradingAuthorityExpirationTime=expires_ms)
    # Indicators shown, so trading_lock_risk is judged; a second key whose account/status read
    # fails, so keymon_key_trading_status_error is exported.
    sim.set_trading_status(
        DOC_API_KEY, indicators={"BTCUSDT": [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}]}
    )
    sim.add_key("secondKey0001", hmac_secret="secondSecret0001")
    sim.fail_next(1, status=503, path="/sapi/v1/account/status")
    config = write_config(
        tmp_path,
        [("doc-key", DOC_API_KEY, DOC_SECRET), ("second-key", "secondKey0001", "secondSecret0001")],
        policies={"mm": {"max_age": "365d"}},
        default_policy="mm",
    )
    app = App(load(config), transport_factory=lambda _n: sim.transport())
    await app.start(serve_http=False, schedule=False)
    try:
        await app.audit_all()
        text = app.render_metrics().decode()
    finally:
        await app.stop()
    names: set[str] = set()
    labels: set[str] = set()
    rule_values: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
            if sample.name == "keymon_key_finding":
                rule_values.add(sample.labels["rule"])
    for rule in all_rules():
        expr, name = rule["expr"], rule.get("alert") or rule["record"]
        missing = _names_in(expr) - names - {"up"} - recorded_names()
        assert not missing, f"{name}: {sorted(missing)} not in a real scrape"
        grouping = _grouping_labels(expr) - TARGET_LABELS
        assert grouping <= labels, f"{name}: labels {sorted(grouping - labels)} never exported"
        used = {value for label, value in _matchers(expr) if label == "rule"} - NOT_ON_BINANCE
        assert used <= rule_values, f"{name}: rule {sorted(used - rule_values)} not in a scrape"


async def test_key_locked_is_in_a_real_gate_scrape(tmp_path: Path) -> None:
    """Binance shows no lock: a Gate key locked at the exchange (``state`` 2) exports the
    `key_locked` finding KeymonKeyLocked reads, with the labels it groups by."""
    sim = GateSimulator()
    api_key, secret = "c5dcfbf1f3a7d00dfeedbeef", "gateSecret0001"
    sim.add_key(api_key, secret)
    sim.update_key(api_key, state=2)
    config = tmp_path / "keymon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": "127.0.0.1:0",
                "data_dir": str(tmp_path / "data"),
                "exchanges": {"gate": {"base_url": "https://gate.test"}},
                "trusted_ips": ["127.0.0.1/32"],
                "keys": [
                    {
                        "name": "locked",
                        "client": "acme",
                        "exchange": "gate",
                        "api_key": api_key,
                        "api_secret": secret,
                    }
                ],
            }
        )
    )
    app = App(load(config), transport_factory=lambda _n: sim.transport())
    await app.start(serve_http=False, schedule=False)
    try:
        await app.audit_all()
        text = app.render_metrics().decode()
    finally:
        await app.stop()
    found = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "keymon_key_finding" and sample.labels["rule"] == "key_locked"
    ]
    assert len(found) == 1
    assert found[0].value == 1
    assert {"key", "client", "exchange"} <= set(found[0].labels)
    assert found[0].labels["severity"] == "critical"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("KeymonKeyWithdrawEnabled", "keymonkeywithdrawenabled"),
        ("How the rules behave", "how-the-rules-behave"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    """The anchor helper turns a heading into GitHub's anchor for it."""
    assert _slug(heading) == anchor
