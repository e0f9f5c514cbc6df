"""``keymon check``: exit statuses, table and JSON output, the --key filter, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keymon.cli import check, main
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET
from tests.test_mixed_fleet import EXPECTED

OTHER_KEY = "otherKey0123456789abcdef"
OTHER_SECRET = "otherSecret0123456789"


def write_config(tmp_path: Path, base_url: str = "https://binance.test", **extra: Any) -> Path:
    """A two-key configuration; secrets come from files."""
    (tmp_path / "doc.secret").write_text(DOC_SECRET + "\n")
    (tmp_path / "other.secret").write_text(OTHER_SECRET + "\n")
    config = {
        "data_dir": str(tmp_path / "data"),  # bans.json: never the working directory's
        "exchanges": {"binance": {"base_url": base_url}},
        "keys": [
            {
                "name": "doc-key",
                "client": "acme",
                "exchange": "binance",
                "api_key": DOC_API_KEY,
                "api_secret": {"file": str(tmp_path / "doc.secret")},
            },
            {
                "name": "other-key",
                "client": "bravo",
                "exchange": "binance",
                "api_key": OTHER_KEY,
                "api_secret": {"file": str(tmp_path / "other.secret")},
            },
        ],
        **extra,
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_check(
    sim: BinanceSimulator, config: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    keys = [a for a in args if a != "--json"]
    fmt = "json" if "--json" in args else "table"
    status = check(config, keys=keys, fmt=fmt, transport_factory=lambda _n: sim.transport())
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def two_keys(sim: BinanceSimulator) -> BinanceSimulator:
    """The simulator with both configured keys, healthy."""
    sim.add_key(OTHER_KEY, hmac_secret=OTHER_SECRET)
    return sim


@pytest.mark.parametrize(
    ("change", "status", "word"),
    [
        ({}, 0, "OK"),
        ({"enableFutures": True}, 1, "WARNING"),
        ({"enableWithdrawals": True}, 2, "CRITICAL"),
    ],
    ids=["ok", "warning", "critical"],
)
def test_exit_status_follows_the_worst_finding(
    two_keys: BinanceSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    status: int,
    word: str,
) -> None:
    """0 when clean, 1 for a warning, 2 for a critical finding; the summary line agrees."""
    if change:
        two_keys.update_key(OTHER_KEY, **change)
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys)
    assert code == status
    assert out.strip().splitlines()[-1].startswith(f"{word}: 2 key(s)")


def test_failed_audit_is_unknown_never_ok(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key whose audit cannot complete makes the run UNKNOWN (3), not OK."""
    two_keys.fail_next(10, status=503)
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys, "--json")
    assert code == 3
    report = json.loads(out)
    assert report["status"] == "unknown"
    assert all(k["audit_ok"] is False for k in report["keys"])
    assert all(k["error"]["reason"] == "exchange_unavailable" for k in report["keys"])


def test_critical_beats_unknown(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One rejected key and one unauditable key: CRITICAL, so the rejection is not hidden."""
    two_keys.delete_key(OTHER_KEY)
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys, "--json")
    assert code == 2
    (other,) = [k for k in json.loads(out)["keys"] if k["key"] == "other-key"]
    assert other["findings"][0]["rule"] == "key_rejected"


def test_json_report_has_the_documented_shape(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json prints PRODUCT.md's object: status, checked_at, keys with facts."""
    two_keys.update_key(OTHER_KEY, enableFutures=True)
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys, "--json")
    report = json.loads(out)
    assert code == 1
    assert report["status"] == "warning"
    assert report["checked_at"].endswith("Z")
    doc, other = report["keys"]
    assert {"key", "client", "exchange", "key_id", "audit_ok", "error", "facts", "findings"} <= set(
        doc
    )
    assert doc["key"] == "doc-key"
    assert doc["client"] == "acme"
    assert doc["exchange"] == "binance"
    assert doc["key_id"] == "vmPU...Eh8A"
    assert doc["audit_ok"] is True
    assert doc["error"] is None
    assert doc["facts"]["permissions"]["spot_trade"] is True
    assert doc["facts"]["ip_restricted"] is True
    assert doc["facts"]["ip_list"] is None
    assert doc["facts"]["created_at"].endswith("Z")
    assert doc["facts"]["deadlines"] == []
    assert other["findings"] == [
        {
            "rule": "forbidden_permission",
            "severity": "warning",
            "message": "futures_trade is enabled; policy market-maker forbids it",
            "permission": "futures_trade",
        }
    ]


def test_key_filter_audits_only_the_named_keys(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--key limits the audit (and the exchange calls) to the named keys."""
    two_keys.update_key(OTHER_KEY, enableWithdrawals=True)
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys, "doc-key", "--json")
    assert code == 0
    assert [k["key"] for k in json.loads(out)["keys"]] == ["doc-key"]
    assert two_keys.request_count(OTHER_KEY) == 0


def test_unknown_key_name_is_unknown(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--key with a name not in the configuration exits 3 with a message, auditing nothing."""
    code, _out, err = run_check(two_keys, write_config(tmp_path), capsys, "nope")
    assert code == 3
    assert "--key nope: no key of that name" in err
    assert two_keys.request_log == []


def test_table_names_rule_permission_and_refused_ip(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows each finding on its own line, with the refused egress IP."""
    two_keys.update_key(DOC_API_KEY, enableFutures=True, enableWithdrawals=True)
    two_keys.set_ip_whitelist(OTHER_KEY, ["203.0.113.10"])
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys)
    assert code == 2
    assert "withdraw_enabled (critical)" in out
    assert "forbidden_permission[futures_trade] (warning)" in out
    assert "refused egress IP 127.0.0.1" in out


def test_usage_error_of_check_is_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong check command line exits 3 (UNKNOWN), as monitoring plugins do."""
    with pytest.raises(SystemExit) as exc:
        main(["check", "--format", "xml"])
    assert exc.value.code == 3


def test_check_against_real_server_as_subprocess(
    two_keys: BinanceSimulator, tmp_path: Path
) -> None:
    """The installed command audits a real local server and exits by the findings."""
    two_keys.update_key(OTHER_KEY, enableWithdrawals=True)
    with two_keys.serve_in_thread() as url:
        config = write_config(tmp_path, base_url=url)
        proc = subprocess.run(
            [sys.executable, "-m", "keymon", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    assert proc.returncode == 2, proc.stderr
    assert "withdraw_enabled (critical)" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_demo_runs_and_shows_each_state() -> None:
    """`keymon demo` serves a simulator per exchange and reports each demo key's state."""
    proc = subprocess.run(
        [sys.executable, "-m", "keymon", "demo", "--once", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rules = {k["key"]: {f["rule"] for f in k["findings"]} for k in report["keys"]}
    assert rules == EXPECTED
    exchanges = {k["key"]: k["exchange"] for k in report["keys"]}
    from keymon.simulator import SIMULATORS

    assert set(exchanges.values()) == set(SIMULATORS)  # every simulated exchange shows a key
    assert all(name.split("-")[1] == exchange for name, exchange in exchanges.items())


def test_demo_daemon_serves_metrics_and_stops_on_ctrl_c() -> None:
    """`keymon demo` runs the daemon: ready, findings in /metrics, exit 0 on Ctrl-C."""
    import signal
    import socket

    import httpx

    from tests.conftest import wait_until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "keymon", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=30)
        text = httpx.get(f"{base}/metrics", timeout=5).text
        assert (
            'keymon_key_finding{key="bravo-binance",client="bravo",exchange="binance",'
            'rule="withdraw_enabled",severity="critical",permission=""} 1.0'
        ) in text
        assert (
            'keymon_key_finding{key="india-bitget",client="india",exchange="bitget",'
            'rule="withdraw_enabled",severity="critical",permission=""} 1.0'
        ) in text
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"{base}/metrics" in out
    assert "check --config" in out
    assert "Traceback" not in err


def _hold(port: int) -> Any:
    """Hold 127.0.0.1:``port`` listening if it is free (it may already be held: the session's
    conftest holds 9877, and so does a developer's running demo); return the socket or None."""
    import socket

    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
    except OSError:
        holder.close()
        return None
    return holder


def test_demo_falls_back_to_a_free_port_when_its_default_is_taken() -> None:
    """With 9877 taken, `keymon demo` serves on a free port, says so, and prints that URL."""
    import re
    import signal

    import httpx

    from keymon.demo import DEMO_LISTEN, port_in_use
    from tests.conftest import DEFAULT_PORT

    holder = _hold(DEFAULT_PORT)
    try:
        assert port_in_use(DEMO_LISTEN)
        proc = subprocess.Popen(
            [sys.executable, "-m", "keymon", "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # "keymon is auditing ...", once it serves
            second = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", second)
            assert match, (first, second)
            port = int(match.group(1))
            assert port != DEFAULT_PORT
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert response.status_code == 200
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    finally:
        if holder is not None:
            holder.close()
    assert proc.returncode == 0, err
    assert f"keymon demo: {DEMO_LISTEN} is in use" in err
    assert "serving on a free port instead" in err
    assert "Traceback" not in err


def test_demo_refuses_a_taken_address_it_was_asked_for() -> None:
    """`keymon demo --listen` on a taken address exits 1 and says what to do, at once."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        proc = subprocess.run(
            [sys.executable, "-m", "keymon", "demo", "--listen", listen],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr == (
        f"keymon demo: cannot listen on {listen}: the address is in use (another keymon demo "
        "or keymon run?); pass another --listen, or leave --listen out to have a free port "
        "picked\n"
    )
    assert proc.stdout == ""


def test_bootstrap_is_silent_once_the_venv_is_set_up() -> None:
    """scripts/bootstrap says nothing when .venv already matches the lock (scripts/demo's path)."""
    root = Path(__file__).resolve().parents[1]
    if not list((root / ".venv").glob(".installed-*")):
        pytest.skip("no .venv made by scripts/bootstrap here")
    proc = subprocess.run(
        [str(root / "scripts" / "bootstrap")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    text = (root / "scripts" / "bootstrap").read_text()
    assert "setting up .venv from $lock ($why, about a minute)..." in text


def test_json_report_of_one_key_in_full(
    two_keys: BinanceSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole --format json entry of a key, every field: facts, findings, status (what
    scripts read; keymon keeps no raw exchange answer, and none shows here)."""
    two_keys.update_key(OTHER_KEY, enableFutures=True, ipRestrict=False)
    code, out, _ = run_check(two_keys, write_config(tmp_path), capsys, "--json")
    assert code == 2
    (other,) = [k for k in json.loads(out)["keys"] if k["key"] == "other-key"]
    created = other["facts"].pop("created_at")
    assert created.endswith("Z")
    assert other == {
        "key": "other-key",
        "client": "bravo",
        "exchange": "binance",
        "key_id": "othe...cdef",
        "policy": "market-maker",
        "coverage": "introspection",
        "status": "critical",
        "audit_ok": True,
        "error": None,
        "facts": {
            "permissions": {
                "read": True,
                "withdraw": False,
                "internal_transfer": False,
                "margin_loan": False,
                "futures_trade": True,
                "universal_transfer": False,
                "options_trade": False,
                "spot_trade": True,
                "fix_trade": False,
                "fix_read": False,
                "portfolio_margin": False,
            },
            "ip_restricted": False,
            "ip_list": None,
            "deadlines": [],
            "key_locked": None,
            "account_kind": None,
            "third_party_app": None,
            "last_used_at": None,
            # GET /sapi/v1/account/apiTradingStatus (the simulator's default: not locked,
            # the doc page's triggerCondition, no indicators) and /sapi/v1/account/status.
            "trading_locked": False,
            "trading_recover_at": None,
            "trading_trigger": {"GCR": 150.0, "IFER": 150.0, "UFR": 300.0},
            "trading_indicators": None,
            "account_status": "Normal",
            "account_restricted": False,
            "trading_status_error": None,
        },
        "findings": [
            {
                "rule": "ip_unrestricted",
                "severity": "critical",
                "message": "the key accepts calls from any IP address (no IP whitelist)",
            },
            {
                "rule": "forbidden_permission",
                "severity": "warning",
                "message": "futures_trade is enabled; policy market-maker forbids it",
                "permission": "futures_trade",
            },
        ],
    }
