"""The deployment artefacts: Dockerfile, compose demo, Kubernetes manifests, Grafana dashboard.

No Docker engine and no cluster are needed: the Dockerfile is checked by hadolint and by reading
it, the compose stack and the manifests by reading them and by running their pieces without a
container (keymon's configuration with its demo secrets, the simulator's keys, the
Prometheus and Alertmanager configurations with promtool and amtool), and every dashboard
query by a real Prometheus scraping a real, in-process keymon.
"""

from __future__ import annotations

import asyncio
import io
import json
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from keymon.app import App
from keymon.cli import check
from keymon.config import load
from keymon.simulator.__main__ import build_binance
from keymon.simulator.binance import BinanceSimulator
from keymon.simulator.mexc import MexcSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET
from tests.deploy import ALERTMANAGER_CONFIG, DEPLOY, ROOT, RULES, require_tool
from tests.test_app import write_config

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
COMPOSE_KEYMON_CONFIG = COMPOSE_DIR / "keymon.yaml"
SIMULATOR_KEYS = COMPOSE_DIR / "simulator" / "keys.yaml"
WEBHOOK_SINK = COMPOSE_DIR / "webhook-sink.py"
DASHBOARD = DEPLOY / "grafana" / "keymon-dashboard.json"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS_RULE = KUBERNETES / "monitoring" / "prometheusrule.yaml"
RULE_GENERATOR = KUBERNETES / "monitoring" / "generate-prometheusrule.py"
BASE_DEPLOYMENT = KUBERNETES / "base" / "deployment.yaml"
OVERLAYS = sorted(p for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
DEPLOY_README = DEPLOY / "README.md"

CONFIG_PATH = "/etc/keymon/keymon.yaml"
DATA_DIR = "/var/lib/keymon"
#: The port the artifacts publish (EXPOSE, probes, scrape targets); compared, never bound.
PORT = 9877
KEYMON = [sys.executable, "-m", "keymon"]
#: What Grafana substitutes for the dashboard's variables, for running a query by hand.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$client": ".*", "$exchange": ".*"}
#: Labels Prometheus adds to every scraped series (and `le` of histogram buckets).
PROMETHEUS_LABELS = {"instance", "job", "le"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
SECRET_WORDS = re.compile(
    r"SECRET|PASSW|TOKEN|API_?KEY|PRIVATE|PASSPHRASE|CREDENTIAL|AUTH", re.IGNORECASE
)
#: A compose network address: what the simulator sees as keymon's egress IP in the demo.
COMPOSE_CLIENT_IP = "172.18.0.5"
#: Service attributes of the Compose specification that compose.yaml may use (typos fail).
COMPOSE_SERVICE_KEYS = {
    "image",
    "build",
    "read_only",
    "cap_drop",
    "cap_add",
    "security_opt",
    "restart",
    "user",
    "command",
    "entrypoint",
    "volumes",
    "secrets",
    "ports",
    "depends_on",
    "healthcheck",
    "environment",
    "tmpfs",
    "networks",
    "labels",
    "init",
    "stop_grace_period",
    "working_dir",
}
#: What each demo key of the compose stack must show: (status, rules that fire).
DEMO_FINDINGS = {
    "acme-binance-main": ("ok", set()),
    "bravo-binance": ("critical", {"withdraw_enabled"}),
    "charlie-binance": ("critical", {"ip_unrestricted", "review_deadline", "missing_permission"}),
    "delta-binance": ("critical", {"key_rejected"}),
    "echo-binance": ("warning", {"forbidden_permission"}),
    "foxtrot-binance": ("critical", {"key_rejected"}),
    "golf-binance": ("critical", {"trading_locked"}),
    "hotel-binance": ("warning", {"trading_lock_risk"}),
}


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _no_stray_files() -> Iterator[None]:
    """The tests leave no file behind under deploy/ (bytecode aside)."""
    before = {p for p in DEPLOY.rglob("*") if "__pycache__" not in p.parts}
    yield
    after = {p for p in DEPLOY.rglob("*") if "__pycache__" not in p.parts}
    assert after == before, sorted(map(str, after ^ before))


# ============================================================================ Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its build stage (0 = first FROM), keyword and arguments."""

    stage: int
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    stage, pending = -1, ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            keyword, _, args = pending.strip().partition(" ")
            if keyword.upper() == "FROM":
                stage += 1
            instructions.append(Instruction(stage, keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def final_stage() -> list[Instruction]:
    """The instructions of the image's last stage (what ships)."""
    instructions = dockerfile()
    last = instructions[-1].stage
    return [i for i in instructions if i.stage == last]


def image_user() -> str:
    """The final stage's last USER."""
    users = [i.args for i in final_stage() if i.keyword == "USER"]
    assert users, "the final stage has no USER"
    return users[-1]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not an exec-form JSON array: {args}"
    return [str(v) for v in value]


def _env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", instruction.args))
    return env


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else require_tool("hadolint")


def test_hadolint_passes_on_the_dockerfile() -> None:
    """hadolint finds nothing in the Dockerfile, at its strictest threshold and with no ignores."""
    result = _run(_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:  # allowed only with a rule id and a reason
            assert re.search(r"hadolint ignore=(DL|SC)\d+.*\S{10,}", line), line


def test_image_runs_as_a_numeric_non_root_user() -> None:
    """The final stage switches to a numeric non-root UID:GID, the one it creates."""
    match = re.fullmatch(r"(\d+)(?::(\d+))?", image_user())
    assert match, f"USER {image_user()} is not numeric: Kubernetes' runAsNonRoot cannot check it"
    assert int(match.group(1)) != 0
    runs = " ".join(i.args for i in final_stage() if i.keyword == "RUN")
    assert f"--uid {match.group(1)}" in runs


def test_image_health_check_is_keymon_healthcheck_in_its_light_form() -> None:
    """HEALTHCHECK runs ``python -m keymon.healthcheck`` (no curl in the slim image), which
    follows the configured listen: KEYMON_CONFIG is set, so it finds the file."""
    (healthcheck,) = [i.args for i in final_stage() if i.keyword == "HEALTHCHECK"]
    command = _exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command == ["python", "-m", "keymon.healthcheck"]
    assert _env(final_stage())["KEYMON_CONFIG"] == CONFIG_PATH
    assert [i.args for i in final_stage() if i.keyword == "EXPOSE"] == [str(PORT)]


def test_dependencies_are_installed_with_hashes() -> None:
    """Every pip install of the builder checks hashes, or installs the local wheel offline."""
    installs = [
        part
        for i in dockerfile()
        if i.keyword == "RUN"
        for part in i.args.split("&&")
        if re.search(r"pip install\b", part)
    ]
    assert any("--require-hashes" in p and "requirements/runtime.lock" in p for p in installs)
    for part in installs:
        assert "--require-hashes" in part or "--no-index" in part, part
    # Building the wheel must not fetch an unpinned build backend (pip's build isolation).
    wheels = [i.args for i in dockerfile() if i.keyword == "RUN" and "pip wheel" in i.args]
    assert wheels
    for wheel in wheels:
        assert "--no-build-isolation" in wheel
        assert "--no-index" in wheel


def test_no_secret_is_baked_into_the_image() -> None:
    """No ENV or ARG is named like a secret, and only the build inputs are copied in."""
    for instruction in dockerfile():
        if instruction.keyword in {"ENV", "ARG"}:
            for name in re.findall(r"(\w+)(?==|\s|$)", instruction.args):
                assert not SECRET_WORDS.search(name), f"{instruction.keyword} {name}"
    sources = [
        word
        for i in dockerfile()
        if i.keyword == "COPY" and "--from=" not in i.args
        for word in i.args.split()[:-1]
    ]
    allowed = ("requirements/", "pyproject.toml", "README.md", "keymon/")
    assert sources
    for source in sources:
        assert source.startswith(allowed), source


def test_image_contract_matches_the_documented_paths() -> None:
    """Entrypoint, command, data volume, environment and OCI labels are what the docs say."""
    final = final_stage()
    (entrypoint,) = [_exec_form(i.args) for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [_exec_form(i.args) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["keymon"]
    assert cmd == ["run", "--config", CONFIG_PATH]
    env = _env(final)
    assert env["KEYMON_DATA_DIR"] == DATA_DIR
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/keymon/bin:")
    volumes = [_exec_form(i.args) for i in final if i.keyword == "VOLUME"]
    assert [DATA_DIR] in volumes
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    for field in ("title", "description", "source", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{field}=" in labels, field
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels


def test_both_stages_use_the_same_base_image_build_argument() -> None:
    """Both stages are FROM ${BASE_IMAGE}, which defaults to an explicitly tagged python slim
    image (the venv needs the same Python in both); a desk passes its mirror or a digest."""
    instructions = dockerfile()
    bases = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert bases == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    first_from = next(
        n for n, i in enumerate(DOCKERFILE.read_text().splitlines()) if i.startswith("FROM")
    )
    declared = re.findall(
        r"^ARG BASE_IMAGE=(\S+)$", "\n".join(DOCKERFILE.read_text().splitlines()[:first_from]), re.M
    )
    assert len(declared) == 1
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim-bookworm(@sha256:[0-9a-f]{64})?", declared[0])
    assert "digest" in DOCKERFILE.read_text()  # says why it is not pinned by digest
    labels = " ".join(i.args for i in final_stage() if i.keyword == "LABEL")
    assert 'org.opencontainers.image.base.name="${BASE_IMAGE}"' in labels
    assert "ARG BASE_IMAGE" in {f"{i.keyword} {i.args}" for i in final_stage()}


def _dockerignore() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether the Docker build context leaves ``path`` out (no `!` exceptions supported)."""
    parts = path.strip("/").split("/")
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        for raw in patterns:
            assert not raw.startswith("!"), "exceptions are not supported by this check"
            pattern = raw.strip("/")
            if fnmatch(prefix, pattern):
                return True
            if pattern.startswith("**/") and (
                fnmatch(prefix, pattern[3:]) or fnmatch(prefix, "*/" + pattern[3:])
            ):
                return True
    return False


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in() -> None:
    """.dockerignore drops the venv, git, caches and data, and none of the files the image needs."""
    patterns = _dockerignore()
    for unwanted in (".venv", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", "data"):
        assert _ignored(unwanted, patterns), unwanted
    assert _ignored("keymon/__pycache__/app.cpython-311.pyc", patterns)
    needed = ["pyproject.toml", "README.md", "requirements/runtime.lock", "requirements/dev.lock"]
    needed += [
        str(p.relative_to(ROOT))
        for p in (ROOT / "keymon").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not _ignored(path, patterns), f"{path} is needed by the build but ignored"


# ============================================================================ Grafana


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of the dashboard."""
    return [(p["title"], t) for p in panels() for t in p.get("targets", [])]


def promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, as Grafana sends it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in PROMQL_KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    labels: set[str] = set()
    for selector in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
    for group in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    return labels


def test_dashboard_is_importable_as_is() -> None:
    """The dashboard has its uid and title, no __inputs, and a Prometheus datasource variable."""
    data = dashboard()
    assert data["uid"] == "keymon"
    assert data["title"] == "keymon"
    assert isinstance(data["schemaVersion"], int)
    assert data["schemaVersion"] >= 36
    assert "__inputs" not in data
    assert data.get("id") is None  # a fixed id would clash on import
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("client", "exchange"):
        query = variables[name]["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert re.fullmatch(rf"label_values\(keymon_key_info(\{{[^}}]*\}})?, {name}\)", query)
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"


def test_every_panel_queries_the_datasource_variable() -> None:
    """Panels have unique ids, positions and descriptions, and every query goes to ${datasource}."""
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_covers_the_fleet_findings_deadlines_audits_exchanges_and_keymon() -> None:
    """The dashboard has every view the operators need, each built on its metric."""
    exprs = " ".join(t["expr"] for _, t in targets())
    used = set().union(*(metric_names(t["expr"]) for _, t in targets()))
    assert {
        "keymon_key_info",
        "keymon_key_finding",
        "keymon_key_audit_ok",
        "keymon_key_deadline_timestamp_seconds",
        "keymon_key_created_timestamp_seconds",
        "keymon_key_last_audit_success_timestamp_seconds",
        "keymon_key_audit_interval_seconds",
        "keymon_key_audit_error",
        "keymon_audit_errors_total",
        "keymon_exchange_request_duration_seconds_bucket",
        "keymon_exchange_weight_used",
        "keymon_notifications_total",
        "keymon_config_last_reload_success",
        "keymon_key_trading_locked",
        "keymon_key_account_restricted",
        "keymon_key_trading_recover_timestamp_seconds",
        "keymon_key_trading_indicator_ratio",
        "up",
    } <= used
    assert "histogram_quantile(" in exprs
    assert re.search(r"count by \(coverage\) \(keymon_key_info", exprs)
    assert re.search(r"sum by \(outcome\) \(rate\(keymon_notifications_total", exprs)
    assert re.search(r"count by \(client, exchange\)", exprs)
    titles = {p["title"] for p in panels()}
    for title in ("Critical", "Warning", "Audit failing", "OK", "Current findings"):
        assert title in titles
    # Liveness-only keys are never counted OK; they have their own stat and table.
    by_title = {p["title"]: p for p in panels()}
    assert 'coverage="liveness"' in by_title["OK"]["targets"][0]["expr"]
    assert (
        "unless on (key, client, exchange) keymon_key_info" in by_title["OK"]["targets"][0]["expr"]
    )
    assert 'coverage="liveness"' in by_title["Liveness only"]["targets"][0]["expr"]
    assert any(
        'coverage="liveness"' in t["expr"] and title.startswith("Liveness-only keys")
        for title, t in targets()
    )


def test_per_key_queries_follow_the_client_and_exchange_variables() -> None:
    """Every selector of a per-key metric is narrowed by $client and $exchange."""
    for title, target in targets():
        for name, selector in re.findall(r"\b(keymon_key_\w+)(\{[^}]*\})?", target["expr"]):
            assert 'client=~"$client"' in selector, f"{title}: {name}{selector}"
            assert 'exchange=~"$exchange"' in selector, f"{title}: {name}{selector}"


async def _audited_app(tmp_path: Path, *, serve_http: bool) -> App:
    """A keymon with findings firing, a deadline, a rejected key and exchange calls made."""
    sim = BinanceSimulator()
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    expires_ms = int((time.time() + 2 * 86400) * 1000)
    sim.update_key(
        DOC_API_KEY,
        ipRestrict=False,
        tradingAuthorityExpirationTime=expires_ms,
        enableWithdrawals=True,
    )
    # Trading-rule indicators and a locked account, for the trading-readiness panels.
    sim.set_trading_status(
        DOC_API_KEY, indicators={"BTCUSDT": [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}]}
    )
    sim.add_key("lockedKey0123456789", hmac_secret="lockedSecret01")
    sim.set_trading_status("lockedKey0123456789", isLocked=True, plannedRecoverTime=expires_ms)
    config = write_config(
        tmp_path,
        [
            ("doc-key", DOC_API_KEY, DOC_SECRET),
            ("gone-key", "goneKey0123456789", "goneSecret01"),
            ("locked-key", "lockedKey0123456789", "lockedSecret01"),
        ],
        policies={"mm": {"max_age": "365d"}},
        default_policy="mm",
    )
    # A key on a liveness-only exchange, for the coverage panels.
    mexc = MexcSimulator()
    mexc.add_key("mx0dashboardKey01", "mexcDashboardSecret")
    data = yaml.safe_load(config.read_text())
    data["keys"].append(
        {
            "name": "live-key",
            "client": "acme",
            "exchange": "mexc",
            "api_key": "mx0dashboardKey01",
            "api_secret": "mexcDashboardSecret",
        }
    )
    config.write_text(yaml.safe_dump(data))
    transports = {"binance": sim.transport(), "mexc": mexc.transport()}
    app = App(load(config), transport_factory=transports.get)
    await app.start(serve_http=serve_http, schedule=False)
    await app.audit_all()
    return app


async def test_dashboard_uses_only_metrics_and_labels_a_real_keymon_exports(
    tmp_path: Path,
) -> None:
    """Every metric and label the dashboard queries appears in a real keymon's scrape."""
    app = await _audited_app(tmp_path, serve_http=False)
    try:
        text = app.render_metrics().decode()
    finally:
        await app.stop()
    names: set[str] = {"up"}
    labels: set[str] = set(PROMETHEUS_LABELS)
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        for sample in family.samples:
            names.add(sample.name)
            labels |= set(sample.labels)
    for title, target in targets():
        expr = target["expr"]
        used = metric_names(promql(expr))
        assert used, f"{title}: no metric in {expr}"
        assert used <= names, f"{title}: {sorted(used - names)} not exported by keymon"
        assert label_names(expr) <= labels, f"{title}: {sorted(label_names(expr) - labels)}"


async def _poll(what: str, probe: Callable[[], Awaitable[bool]], until: float, logs: Path) -> None:
    """Await ``probe()`` until it is true, or fail at ``until`` with the program's log."""
    while not await probe():
        if time.monotonic() > until:
            tail = (await asyncio.to_thread(logs.read_text))[-3000:]
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(90)
async def test_dashboard_queries_parse_and_return_data_from_a_real_keymon(tmp_path: Path) -> None:
    """A real Prometheus scraping a real keymon answers every dashboard query, no panel empty."""
    prometheus_bin = require_tool("prometheus")
    app = await _audited_app(tmp_path, serve_http=True)
    port = _free_port()
    scrape = {"job_name": "keymon", "static_configs": [{"targets": [f"127.0.0.1:{app.port}"]}]}
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]})
    )
    logs = tmp_path / "prometheus.log"
    with logs.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}/api/v1/query"
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def query(expr: str) -> dict[str, Any]:
                try:
                    response = await client.get(url, params={"query": expr})
                    body = response.json()
                except (httpx.HTTPError, ValueError):
                    return {}
                return body if isinstance(body, dict) else {}

            async def scraped_enough() -> bool:
                # Three scrapes: rate() and histogram_quantile() have samples to work on.
                body = await query("count_over_time(keymon_build_info[1m])")
                result = body.get("data", {}).get("result", [])
                return bool(result) and float(result[0]["value"][1]) >= 3

            await _poll("three scrapes of keymon", scraped_enough, time.monotonic() + 60, logs)
            for panel in panels():
                if panel["type"] == "row":
                    continue
                answers = []
                for target in panel["targets"]:
                    body = await query(promql(target["expr"]))
                    assert body.get("status") == "success", (panel["title"], target["expr"], body)
                    result = body["data"]["result"]
                    answers.append(result)
                    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                        for series in result:
                            assert label in series["metric"], (panel["title"], label, series)
                assert any(answers), f"{panel['title']}: no data from a keymon with findings"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await app.stop()


# ============================================================================ compose


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts (short syntax)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE_DIR / source).resolve(), target))
    return mounts


def _compose_secret_files() -> dict[str, Path]:
    """{secret name: host file} of compose.yaml's secrets."""
    secrets = compose()["secrets"]
    return {name: (COMPOSE_DIR / spec["file"]).resolve() for name, spec in secrets.items()}


def test_compose_file_parses_and_everything_it_mounts_exists() -> None:
    """Every bind mount, secret file and build context of compose.yaml exists."""
    data = compose()
    top = {k for k in data if not k.startswith("x-")}
    assert top <= {"services", "volumes", "secrets", "networks", "name"}
    named_volumes = set(data.get("volumes") or {})
    secrets = _compose_secret_files()
    for path in secrets.values():
        assert path.is_file(), path
    for name, service in data["services"].items():
        unknown = set(service) - COMPOSE_SERVICE_KEYS
        assert not unknown, f"{name}: {unknown}"
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for host, _ in _bind_mounts(service):
            assert host.exists(), f"{name}: {host} does not exist"
        for secret in service.get("secrets", []):
            assert secret in secrets, f"{name}: secret {secret} is not declared"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} published beyond localhost"
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] in {"service_started", "service_healthy"}
        allowed = {"test", "interval", "timeout", "retries", "start_period"}
        assert set(service.get("healthcheck", {})) <= allowed, name


def test_compose_keymon_is_read_only_and_runs_the_images_user() -> None:
    """The keymon service is read-only, runs as the image's non-root user, as the image says."""
    keymon = compose()["services"]["keymon"]
    assert keymon["read_only"] is True
    assert keymon.get("user", image_user()) == image_user()
    assert keymon["cap_drop"] == ["ALL"]
    assert "build" in keymon
    (cmd,) = [_exec_form(i.args) for i in final_stage() if i.keyword == "CMD"]
    assert keymon.get("command", cmd) == cmd
    mounted = {target for _, target in _bind_mounts(keymon)}
    assert CONFIG_PATH in mounted
    assert any(v.split(":")[1] == DATA_DIR for v in keymon["volumes"])
    assert "environment" not in keymon, "secrets come as files, not variables"


def test_compose_simulator_runs_from_the_keymon_image_with_its_keys() -> None:
    """The simulator uses keymon's image, serves the keys file it mounts, and keymon calls it."""
    services = compose()["services"]
    simulator = services["simulator"]
    assert simulator["image"] == services["keymon"]["image"]
    command = simulator["entrypoint"] + simulator["command"]
    assert command[:4] == ["python", "-m", "keymon.simulator", "binance"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    keys = command[command.index("--keys") + 1]
    assert (SIMULATOR_KEYS.resolve(), keys) in _bind_mounts(simulator)
    assert simulator["read_only"] is True
    assert services["keymon"]["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert f":{port}/" in simulator["healthcheck"]["test"][-1]
    config = yaml.safe_load(COMPOSE_KEYMON_CONFIG.read_text())
    assert config["exchanges"]["binance"]["base_url"] == f"http://simulator:{port}"


def _compose_keymon_config(tmp_path: Path) -> Path:
    """compose/keymon.yaml with /run/secrets/<name> pointing at compose's secret files."""
    secrets = _compose_secret_files()
    listed = set(compose()["services"]["keymon"]["secrets"])
    text = COMPOSE_KEYMON_CONFIG.read_text()
    used = set(re.findall(r"/run/secrets/([\w.-]+)", text))
    assert used, "the demo reads its secrets from compose secret files"
    assert used <= listed, f"not given to the keymon service: {sorted(used - listed)}"
    text = re.sub(r"/run/secrets/([\w.-]+)", lambda m: str(secrets[m.group(1)]), text)
    data = yaml.safe_load(text)
    data["data_dir"] = str(tmp_path / "data")
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_compose_keymon_config_validates_with_its_demo_secrets(tmp_path: Path) -> None:
    """`keymon validate-config` accepts the demo configuration with its demo secret files."""
    result = _run(*KEYMON, "validate-config", "--config", str(_compose_keymon_config(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (8 key(s)" in result.stdout
    assert "warning" not in result.stderr  # no literal secret in the demo either


def test_compose_demo_secrets_are_clearly_fake() -> None:
    """Every demo secret says it is a demo value, and a README next to them says so."""
    for name, path in _compose_secret_files().items():
        value = path.read_text().strip()
        assert value.startswith(("DEMO", "json://webhook-sink")), name
        if name.endswith(("_api_key", "_api_secret")):
            assert "FAKE" in value, name
    assert "fake" in (COMPOSE_DIR / "secrets" / "README.md").read_text()


def test_compose_demo_keys_produce_the_documented_findings(tmp_path: Path) -> None:
    """Audited from a compose network address, the demo keys show the states the README lists."""
    simulator = build_binance(SIMULATOR_KEYS, 0.0)
    out = io.StringIO()
    status = check(
        _compose_keymon_config(tmp_path),
        fmt="json",
        transport_factory=lambda _n: simulator.transport(client_ip=COMPOSE_CLIENT_IP),
        out=out,
    )
    report = json.loads(out.getvalue())
    assert status == 2
    found = {k["key"]: (k["status"], {f["rule"] for f in k["findings"]}) for k in report["keys"]}
    assert found == DEMO_FINDINGS
    (foxtrot,) = [k for k in report["keys"] if k["key"] == "foxtrot-binance"]
    assert foxtrot["error"]["refused_ip"] == COMPOSE_CLIENT_IP
    readme = DEPLOY_README.read_text()
    for key in DEMO_FINDINGS:
        assert f"| `{key}` |" in readme, f"deploy/README.md does not describe {key}"


def test_compose_prometheus_loads_the_shipped_rules(tmp_path: Path) -> None:
    """promtool accepts compose's prometheus.yml laid out as mounted, with the shipped rules."""
    promtool = require_tool("promtool")
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = {target: host for host, target in _bind_mounts(prometheus)}
    assert mounts["/etc/prometheus/keymon-rules.yml"] == RULES.resolve()
    for target, host in mounts.items():  # the container's /etc/prometheus, rebuilt here
        local = tmp_path / target.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(host, local)
    config_file = "/etc/prometheus/prometheus.yml"
    assert f"--config.file={config_file}" in prometheus["command"]
    result = _run(promtool, "check", "config", str(tmp_path / config_file.lstrip("/")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    config = yaml.safe_load(mounts[config_file].read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "keymon"
    assert job["static_configs"][0]["targets"] == [f"keymon:{PORT}"]
    (alertmanager,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager.split(":")[0] in services


def test_compose_alertmanager_routes_like_production_to_the_demo_sink() -> None:
    """amtool accepts compose's alertmanager.yml, grouped and inhibited like the real one."""
    amtool = require_tool("amtool")
    services = compose()["services"]
    ((host, _),) = _bind_mounts(services["alertmanager"])
    result = _run(amtool, "check-config", str(host))
    assert result.returncode == 0, result.stdout + result.stderr
    demo = yaml.safe_load(host.read_text())
    production = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert demo["route"]["group_by"] == production["route"]["group_by"]
    assert demo["inhibit_rules"] == production["inhibit_rules"]
    for receiver in demo["receivers"]:
        assert set(receiver) == {"name", "webhook_configs"}, "no token-bearing receiver"
        for hook in receiver["webhook_configs"]:
            assert hook["url"].startswith("http://webhook-sink:8080/")
    assert "webhook-sink" in services


def test_compose_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    """Grafana gets the Prometheus service as datasource and loads the shipped dashboard."""
    grafana = compose()["services"]["grafana"]
    mounts = {target: host for host, target in _bind_mounts(grafana)}
    dashboards = [t for t, h in mounts.items() if h == DASHBOARD.resolve()]
    assert dashboards, "the dashboard is not mounted"
    datasource_dir = mounts["/etc/grafana/provisioning/datasources"]
    datasources = yaml.safe_load(next(datasource_dir.glob("*.yaml")).read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    provider_dir = mounts["/etc/grafana/provisioning/dashboards"]
    (provider,) = yaml.safe_load(next(provider_dir.glob("*.yaml")).read_text())["providers"]
    assert str(Path(dashboards[0]).parent) == provider["options"]["path"]


class _Lines:
    """A subprocess's output lines, read on a thread so that every wait has a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def next(self, timeout: float = 10) -> str:
        try:
            return self._queue.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s") from None


def test_webhook_sink_prints_alertmanager_and_keymon_notifications() -> None:
    """The demo's webhook-sink prints one line per alert and per built-in notification."""
    proc = subprocess.Popen(
        [sys.executable, str(WEBHOOK_SINK), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _Lines(proc)
        port = int(lines.next().rsplit(":", 1)[1])
        url = f"http://127.0.0.1:{port}"
        alert = {
            "status": "firing",
            "labels": {"alertname": "KeymonKeyWithdrawEnabled", "severity": "critical", "key": "k"},
            "annotations": {"summary": "Withdrawals are enabled on key k"},
        }
        assert httpx.post(f"{url}/alertmanager", json={"alerts": [alert]}).status_code == 200
        body = {"title": "[CRITICAL] k: withdraw_enabled", "message": "a\nb", "type": "failure"}
        assert httpx.post(f"{url}/keymon", json=body).status_code == 200
        assert httpx.get(url).status_code == 200
        assert lines.next() == (
            "alertmanager FIRING critical KeymonKeyWithdrawEnabled key=k: "
            "Withdrawals are enabled on key k"
        )
        assert lines.next() == "keymon failure: [CRITICAL] k: withdraw_enabled | a"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0  # SIGTERM is a clean stop (it runs as PID 1 in its container)


# ============================================================================ Kubernetes


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def base_deployment() -> dict[str, Any]:
    (deployment,) = _yaml_documents(BASE_DEPLOYMENT)
    return deployment


def test_kubernetes_yaml_parses() -> None:
    """Every YAML file under deploy/kubernetes parses and every manifest has a kind."""
    files = sorted(KUBERNETES.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        documents = _yaml_documents(path)
        assert documents, path
        if path.name == "keymon.yaml":
            continue  # keymon's configuration, put into a ConfigMap by the overlay
        for document in documents:
            assert document.get("apiVersion"), path
            assert document.get("kind"), path


def test_every_file_a_kustomization_lists_exists() -> None:
    """Resources, patches and generator files of every kustomization.yaml exist."""
    for path in sorted(KUBERNETES.rglob("kustomization.yaml")):
        data = yaml.safe_load(path.read_text())
        here = path.parent
        for resource in data.get("resources", []) + data.get("components", []):
            target = here / resource
            assert target.exists(), f"{path}: {resource}"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{path}: {resource}"
        for patch in data.get("patches", []):
            if "path" in patch:
                assert (here / patch["path"]).is_file(), f"{path}: {patch['path']}"
        for generator in data.get("configMapGenerator", []) + data.get("secretGenerator", []):
            for file in generator.get("files", []):
                assert (here / file.split("=")[-1]).is_file(), f"{path}: {file}"
    top = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    for overlay in OVERLAYS:
        assert str(overlay.relative_to(KUBERNETES)) in top["resources"], overlay.name


def test_prometheusrule_embeds_the_same_groups_as_the_rules_file() -> None:
    """The PrometheusRule holds exactly keymon-rules.yml's groups, as its generator writes it."""
    (rule,) = _yaml_documents(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    result = _run(sys.executable, str(RULE_GENERATOR), "--check")
    assert result.returncode == 0, result.stderr


def test_deployment_security_context_is_locked_down() -> None:
    """Non-root 10001, read-only root, no privilege escalation, no capabilities, RuntimeDefault."""
    deployment = base_deployment()
    spec = deployment["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert image_user().split(":")[0] == str(context["runAsUser"])
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert deployment["spec"]["replicas"] == 1


def test_deployment_probes_hit_healthz_and_readyz() -> None:
    """Liveness asks /healthz and readiness /readyz, on keymon's port."""
    (container,) = base_deployment()["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    for probe in (liveness, readiness):
        assert ports.get(probe["port"], probe["port"]) == PORT


def test_deployment_mounts_config_secrets_and_data_where_keymon_looks() -> None:
    """Config directory, secret files and data volume are mounted at the image's paths."""
    spec = base_deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["config"]["mountPath"] == str(Path(CONFIG_PATH).parent)
    assert "subPath" not in mounts["config"], "a subPath mount never sees ConfigMap updates"
    assert "configMap" in volumes["config"]
    assert "secret" in volumes["secrets"]
    assert mounts["secrets"]["mountPath"].startswith("/run/secrets/")
    assert mounts["data"]["mountPath"] == DATA_DIR
    assert {"name": "KEYMON_DATA_DIR", "value": DATA_DIR} in container["env"]
    for name, mount in mounts.items():
        assert mount.get("readOnly", False) is (name != "data"), name


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[o.name for o in OVERLAYS])
def test_overlay_keymon_config_validates(overlay: Path, tmp_path: Path) -> None:
    """Each overlay's keymon.yaml is valid and reads its secrets from the mounted Secret."""
    (container,) = base_deployment()["spec"]["template"]["spec"]["containers"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["secrets"]
    text = (overlay / "keymon.yaml").read_text()
    files = re.findall(r"\{file: ([^}]+)\}", text)
    assert files
    for file in files:
        assert file.startswith(mount + "/"), f"{file} is not under the Secret's mount {mount}"
        (tmp_path / Path(file).name).write_text("x" * 64 + "\n")
    data = yaml.safe_load(text.replace(mount + "/", f"{tmp_path}/"))
    data["data_dir"] = str(tmp_path / "data")
    config = tmp_path / "keymon.yaml"
    config.write_text(yaml.safe_dump(data))
    result = _run(*KEYMON, "validate-config", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_overlay_runs_its_own_keymon_on_its_own_egress() -> None:
    """Overlays differ in name, egress label, node pool, Secret and keys."""
    seen: dict[str, set[str]] = {"suffix": set(), "pool": set(), "secret": set(), "keys": set()}
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert kustomization["resources"] == ["../../base"]
        assert kustomization["nameSuffix"] == f"-{overlay.name}"
        (labels,) = kustomization["labels"]
        assert labels["pairs"] == {"keymon.io/egress": overlay.name}
        assert labels["includeSelectors"] is True
        (generator,) = kustomization["configMapGenerator"]
        assert generator["name"] == "keymon-config"
        (patch,) = _yaml_documents(overlay / kustomization["patches"][0]["path"])
        spec = patch["spec"]["template"]["spec"]
        (secrets,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
        config = yaml.safe_load((overlay / "keymon.yaml").read_text())
        keys = {key["name"] for key in config["keys"]}
        for kind, value in (
            ("suffix", kustomization["nameSuffix"]),
            ("pool", spec["nodeSelector"]["keymon.io/egress-pool"]),
            ("secret", secrets["secret"]["secretName"]),
        ):
            assert value not in seen[kind], f"{overlay.name}: {kind} {value} is shared"
            seen[kind].add(value)
        assert not keys & seen["keys"], f"{overlay.name}: watched twice: {keys & seen['keys']}"
        seen["keys"] |= keys
    assert len(OVERLAYS) >= 2


def test_servicemonitor_scrapes_every_keymon_as_job_keymon() -> None:
    """The ServiceMonitor selects the keymon Services and names the job "keymon" for the rules."""
    (monitor,) = _yaml_documents(KUBERNETES / "monitoring" / "servicemonitor.yaml")
    (service,) = _yaml_documents(KUBERNETES / "base" / "service.yaml")
    base = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    service_labels = {**service["metadata"].get("labels", {}), **base["labels"][0]["pairs"]}
    assert service_labels[monitor["spec"]["jobLabel"]] == "keymon"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert 'up{job="keymon"}' in RULES.read_text()


def _kustomize() -> list[str]:
    """A kustomize command, or skip: kubectl is optional (CI need not have it)."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("neither kubectl nor kustomize is installed (optional)")


def test_kustomize_builds_one_keymon_per_overlay_with_working_references() -> None:
    """kustomize builds the whole tree: every reference resolves and nothing loses its hardening."""
    result = _run(*_kustomize(), str(KUBERNETES))
    assert result.returncode == 0, result.stderr
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for document in yaml.safe_load_all(result.stdout):
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "keymon", document["metadata"]["name"]
    assert len(by_kind["Deployment"]) == len(OVERLAYS)
    assert len(by_kind["ServiceMonitor"]) == 1
    assert len(by_kind["PrometheusRule"]) == 1
    for name, deployment in by_kind["Deployment"].items():
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        config_map = volumes["config"]["configMap"]["name"]
        assert "keymon.yaml" in by_kind["ConfigMap"][config_map]["data"], name
        claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
        assert claim in by_kind["PersistentVolumeClaim"], name
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert ":" in container["image"], name
        assert not container["image"].endswith(":latest"), name
        selector = deployment["spec"]["selector"]["matchLabels"].items()
        services = [
            s for s in by_kind["Service"].values() if s["spec"]["selector"].items() <= selector
        ]
        assert len(services) == 1, f"{name}: {len(services)} Services select it"


# ============================================================================ README


def test_deploy_readme_lists_every_alert_with_its_severity_and_wait() -> None:
    """deploy/README.md has one row per alert, with the rule's severity and `for:`."""
    rows = {
        name: (severity.strip(), wait.strip())
        for name, severity, wait in re.findall(
            r"^\| `(Keymon\w+)` \|([^|]+)\|([^|]+)\|", DEPLOY_README.read_text(), re.MULTILINE
        )
    }
    rules = [
        rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert set(rows) == {rule["alert"] for rule in rules}
    for rule in rules:
        severity, wait = rows[rule["alert"]]
        expected = rule["labels"]["severity"]
        assert severity == ("from the policy" if "$labels" in expected else expected), rule["alert"]
        assert wait == (f"after {rule['for']}" if "for" in rule else "at once"), rule["alert"]


def test_deploy_readme_shows_docker_compose_and_kubernetes() -> None:
    """The README runs the image read-only with its mounts, the demo, and the manifests."""
    text = DEPLOY_README.read_text()
    (docker_run,) = re.findall(r"docker run -d .*?keymon:\S+\n", text, re.DOTALL)
    assert "--read-only" in docker_run
    assert f":{CONFIG_PATH}:ro" in docker_run
    assert f":{DATA_DIR}" in docker_run
    assert ":/run/secrets/" in docker_run
    assert "docker compose -f deploy/compose/compose.yaml up --build" in text
    assert "kubectl apply -k deploy/kubernetes" in text
    assert "egress IP" in text
    assert "emptyDir" in text
