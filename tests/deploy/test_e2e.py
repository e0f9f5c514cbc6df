"""End to end with the real programs: simulator -> keymon -> Prometheus -> Alertmanager -> webhook.

And the shipped Alertmanager configuration's inhibition, with a real Alertmanager.

Everything listens on 127.0.0.1 on free ports and is stopped in a ``finally``; every wait polls
against one overall deadline, so a broken link fails the test in bounded time with the
programs' logs in the message instead of hanging it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
import yaml

from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET
from tests.deploy import ALERTMANAGER_CONFIG, RULES, require_tool
from tests.test_app import write_config

#: The whole test, start-up to shutdown, stays within this many seconds.
OVERALL_DEADLINE = 90.0
ALERT = "KeymonKeyWithdrawEnabled"
KEYMON = [sys.executable, "-m", "keymon"]
T = TypeVar("T")


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all held open at once, so never the same twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Webhook:
    """An Alertmanager webhook receiver on 127.0.0.1 that records every POSTed body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        received = self._received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def _received(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.bodies.append(body)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification received so far, in order."""
        with self._lock:
            return [alert for body in self.bodies for alert in body.get("alerts", [])]

    def find(self, alertname: str, status: str) -> dict[str, Any] | None:
        """The first received alert with this name and status, if any."""
        for alert in self.alerts():
            if alert["labels"].get("alertname") == alertname and alert["status"] == status:
                return alert
        return None


@contextmanager
def webhook() -> Iterator[Webhook]:
    """Serve a :class:`Webhook` on a background thread."""
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
        thread.join(5)


class Programs:
    """The subprocesses of one test, their logs, and one deadline for every wait."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.deadline = time.monotonic() + OVERALL_DEADLINE
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, args: list[str]) -> None:
        log = (self.tmp_path / f"{name}.log").open("wb")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def logs(self) -> str:
        """The tail of every program's output, for failure messages."""
        parts = []
        for name in self.procs:
            text = (self.tmp_path / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} (last lines)\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll ``probe`` until it returns something, within ``timeout`` and the deadline."""
        until = min(time.monotonic() + timeout, self.deadline)
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({proc.returncode})\n{self.logs()}")
            result = probe()
            if result is not None:
                return result
            if time.monotonic() > until:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate every program, kill what does not exit in 5 s, close the logs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self._logs:
            log.close()


def _get_json(url: str) -> Any:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _ready(url: str) -> bool | None:
    try:
        return True if httpx.get(url, timeout=2).status_code == 200 else None
    except httpx.HTTPError:
        return None


def _query(prometheus: str, expr: str) -> list[dict[str, Any]] | None:
    """The result of an instant query (None while Prometheus cannot answer it)."""
    body = _get_json(f"{prometheus}/api/v1/query?{httpx.QueryParams(query=expr)}")
    return body["data"]["result"] if body and body.get("status") == "success" else None


def _shipped_rules(path: Path) -> Path:
    """The shipped rules, unchanged: their groups run at Prometheus's evaluation_interval."""
    data = yaml.safe_load(RULES.read_text())
    assert all("interval" not in group for group in data["groups"])
    path.write_text(RULES.read_text())
    return path


def _alertmanager_config(path: Path, webhook_url: str) -> Path:
    """Everything to the webhook at once, resolved alerts too, and no waiting to group."""
    config = {
        "global": {"resolve_timeout": "5s"},
        "route": {
            "receiver": "hook",
            "group_by": ["key"],
            "group_wait": "100ms",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _prometheus_config(path: Path, rules: Path, keymon_port: int, alertmanager_port: int) -> Path:
    """Scrape keymon (job "keymon") and evaluate every second; alerts to the Alertmanager."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {"job_name": "keymon", "static_configs": [{"targets": [f"127.0.0.1:{keymon_port}"]}]}
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.timeout(OVERALL_DEADLINE + 30)
def test_withdrawals_switched_on_reach_the_receiver_and_resolve(tmp_path: Path) -> None:
    """Withdrawals switched on at the exchange reach a webhook firing, and switched off resolved."""
    prometheus_bin = require_tool("prometheus")
    alertmanager_bin = require_tool("alertmanager", "prometheus-alertmanager")
    keymon_port, prometheus_port, alertmanager_port = _free_ports(3)
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    sim = BinanceSimulator()  # real clock: Prometheus's time() and keymon's timestamps agree
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    programs = Programs(tmp_path)
    with sim.serve_in_thread() as sim_url, webhook() as hook:
        try:
            keymon_config = write_config(
                tmp_path,
                [("doc-key", DOC_API_KEY, DOC_SECRET)],
                listen=f"127.0.0.1:{keymon_port}",
                exchanges={"binance": {"base_url": sim_url}},
                audit={"interval": "1s", "jitter": "200ms"},
                log={"format": "json", "level": "info"},
            )
            rules = _shipped_rules(tmp_path / "keymon-rules.yml")
            am_config = _alertmanager_config(tmp_path / "alertmanager.yml", hook.url)
            prom_config = _prometheus_config(
                tmp_path / "prometheus.yml", rules, keymon_port, alertmanager_port
            )
            programs.start("keymon", [*KEYMON, "run", "--config", str(keymon_config)])
            programs.start(
                "alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                    "--cluster.listen-address=",  # no clustering, no gossip port
                ],
            )
            programs.start(
                "prometheus",
                [
                    prometheus_bin,
                    f"--config.file={prom_config}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--rules.alert.resend-delay=1s",
                ],
            )
            programs.wait_for(
                "keymon /readyz", lambda: _ready(f"http://127.0.0.1:{keymon_port}/readyz")
            )
            programs.wait_for(
                "alertmanager /-/ready",
                lambda: _ready(f"http://127.0.0.1:{alertmanager_port}/-/ready"),
            )
            programs.wait_for(
                "prometheus to know the alertmanager",
                lambda: (
                    (_get_json(f"{prometheus}/api/v1/alertmanagers") or {})
                    .get("data", {})
                    .get("activeAlertmanagers")
                    or None
                ),
            )
            # Prometheus has scraped the healthy key: the finding is there, and 0.
            baseline = programs.wait_for(
                "a scrape with the withdraw finding",
                lambda: _query(prometheus, 'keymon_key_finding{rule="withdraw_enabled"}') or None,
            )
            assert [sample["value"][1] for sample in baseline] == ["0"]

            sim.update_key(DOC_API_KEY, enableWithdrawals=True)
            switched_on = time.monotonic()
            firing = programs.wait_for("the firing alert", lambda: hook.find(ALERT, "firing"))
            fired_after = time.monotonic() - switched_on
            assert firing["labels"] == {
                "alertname": ALERT,
                "severity": "critical",
                "key": "doc-key",
                "client": "acme",
                "exchange": "binance",
            }
            annotations = firing["annotations"]
            assert annotations["runbook_url"].endswith(
                "/deploy/RUNBOOK.md#keymonkeywithdrawenabled"
            )
            assert "doc-key" in annotations["description"]

            sim.update_key(DOC_API_KEY, enableWithdrawals=False)
            switched_off = time.monotonic()
            resolved = programs.wait_for("the resolved alert", lambda: hook.find(ALERT, "resolved"))
            resolved_after = time.monotonic() - switched_off
            assert resolved["labels"] == firing["labels"]
            # A healthy key and a healthy keymon raise nothing else.
            assert {alert["labels"]["alertname"] for alert in hook.alerts()} == {ALERT}
            # keymon audits, Prometheus scrapes and evaluates every 1 s: seconds, not minutes.
            assert fired_after < 15, fired_after
            assert resolved_after < 15, resolved_after
        finally:
            programs.stop()


# ----------------------------------------------------------------------------- inhibition


def _shipped_routing_to(path: Path, webhook_url: str) -> Path:
    """alertmanager.yml's routes and inhibit rules as shipped; its receivers post to a webhook.

    Only what needs a secret or a channel changes: the receivers (same names) and the
    templates they used; the route tree keeps its matchers, only with waits of a second.
    """
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config.pop("templates", None)
    config["global"] = {"resolve_timeout": "5m"}
    hook = [{"url": webhook_url, "send_resolved": True}]
    config["receivers"] = [
        {"name": receiver["name"], "webhook_configs": hook} for receiver in config["receivers"]
    ]

    def quick(route: dict[str, Any]) -> None:
        for field, value in (("group_wait", "200ms"), ("group_interval", "1s")):
            if field in route:
                route[field] = value
        for child in route.get("routes", []):
            quick(child)

    quick(config["route"])
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, **labels}, "annotations": {}}


KEY = {"client": "acme", "exchange": "binance"}
KEYMON_DOWN = _alert("KeymonDown", "critical", job="keymon", instance="keymon:9877")
KEYMON_ABSENT = _alert("KeymonAbsent", "critical", job="keymon")
#: alertname -> an alert firing beside KeymonDown, and whether Alertmanager must mute it.
BESIDE_KEYMON_DOWN = {
    "KeymonAuditsStale": (_alert("KeymonAuditsStale", "warning", key="delta-main", **KEY), True),
    "KeymonAuditsFailing": (
        _alert("KeymonAuditsFailing", "warning", key="bravo-main", **KEY),
        True,
    ),
    "KeymonConfigReloadFailed": (
        _alert("KeymonConfigReloadFailed", "warning", job="keymon", instance="keymon:9877"),
        True,
    ),
    "KeymonKeyWithdrawEnabled": (
        _alert("KeymonKeyWithdrawEnabled", "critical", key="acme-main", **KEY),
        False,
    ),
    "KeymonKeyForbiddenPermission": (
        _alert(
            "KeymonKeyForbiddenPermission",
            "warning",
            key="acme-main",
            permission="futures_trade",
            **KEY,
        ),
        True,  # by acme-main's critical alert, as before
    ),
    "KeymonKeyTooOld": (_alert("KeymonKeyTooOld", "warning", key="charlie-main", **KEY), False),
}


@pytest.mark.timeout(OVERALL_DEADLINE + 30)
def test_alertmanager_mutes_audit_warnings_while_keymon_is_down(tmp_path: Path) -> None:
    """The shipped inhibit rules, in a real Alertmanager: KeymonDown (no `key` label) mutes
    every key's KeymonAuditsStale/KeymonAuditsFailing, KeymonAbsent too, and only while it
    fires; security alerts and other keys' warnings still reach the receiver."""
    alertmanager_bin = require_tool("alertmanager", "prometheus-alertmanager")
    amtool = require_tool("amtool")
    (port,) = _free_ports(1)
    base = f"http://127.0.0.1:{port}"
    programs = Programs(tmp_path)
    with webhook() as hook:
        try:
            config = _shipped_routing_to(tmp_path / "alertmanager.yml", hook.url)
            checked = subprocess.run(
                [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            programs.start(
                "alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={config}",
                    f"--storage.path={tmp_path / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                ],
            )
            programs.wait_for("alertmanager /-/ready", lambda: _ready(f"{base}/-/ready"))

            def post(*alerts: dict[str, Any]) -> None:
                response = httpx.post(f"{base}/api/v2/alerts", json=list(alerts), timeout=5)
                assert response.status_code == 200, response.text

            def muted() -> dict[str, bool] | None:
                """alertname -> inhibited, once Alertmanager has every alert posted."""
                body = _get_json(f"{base}/api/v2/alerts")
                if body is None:
                    return None
                state = {
                    alert["labels"]["alertname"]: bool(alert["status"]["inhibitedBy"])
                    for alert in body
                }
                return state if set(BESIDE_KEYMON_DOWN) <= set(state) else None

            def settled(expected: dict[str, bool]) -> Callable[[], dict[str, bool] | None]:
                def probe() -> dict[str, bool] | None:
                    state = muted()
                    if state is None:
                        return None
                    got = {name: state[name] for name in expected}
                    return got if got == expected else None

                return probe

            # KeymonDown first, so that the per-key warnings arrive muted, as they would.
            post(KEYMON_DOWN)
            programs.wait_for(
                "KeymonDown in Alertmanager",
                lambda: _get_json(f"{base}/api/v2/alerts") or None,
            )
            post(*(alert for alert, _ in BESIDE_KEYMON_DOWN.values()))
            expected = {name: mute for name, (_, mute) in BESIDE_KEYMON_DOWN.items()}
            programs.wait_for("inhibition by KeymonDown", settled(expected))
            # The receiver got the unmuted alerts, and never a muted one.
            programs.wait_for(
                "the unmuted notifications",
                lambda: (
                    hook.find("KeymonKeyTooOld", "firing")
                    and hook.find("KeymonKeyWithdrawEnabled", "firing")
                    and hook.find("KeymonDown", "firing")
                ),
            )
            time.sleep(1.5)  # a group_interval more: anything muted would have gone out now
            notified = {alert["labels"]["alertname"] for alert in hook.alerts()}
            assert notified == {"KeymonDown", "KeymonKeyWithdrawEnabled", "KeymonKeyTooOld"}

            # KeymonDown resolves: the audit warnings are no longer muted; keymon's own
            # warning neither; the key's critical alert still mutes its warning.
            post({**KEYMON_DOWN, "endsAt": "2000-01-01T00:00:00Z"})
            unmuted = {**expected, "KeymonAuditsStale": False, "KeymonAuditsFailing": False}
            unmuted["KeymonConfigReloadFailed"] = False
            programs.wait_for("no inhibition without KeymonDown", settled(unmuted))

            # KeymonAbsent mutes them as KeymonDown does.
            post(KEYMON_ABSENT)
            programs.wait_for(
                "inhibition by KeymonAbsent",
                settled({"KeymonAuditsStale": True, "KeymonAuditsFailing": True}),
            )
        finally:
            programs.stop()
