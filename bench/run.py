"""keymon's benchmarks: ``scripts/bench`` (or ``python -m bench.run``) runs them all.

Three phases, each against simulators in their own processes on 127.0.0.1 with 20 ms latency
(Binance's for (a) and (b), every exchange's for (c)), so that their CPU and memory never
count against keymon's:

(a) ``keymon check`` of 1,000 keys as a real subprocess, beside a hand-signed aiohttp
    reference client and with each httpx transport (:mod:`bench.check_bench`);
(b) the daemon, ``keymon run``, at 1,000 and then 10,000 keys with more demand than weight
    budget: the budget delivered, 429/418 answers, CPU per audit, peak RSS, ``/metrics``
    scrape time and size (:mod:`bench.daemon_bench`);
(c) the daemon auditing a mixed fleet: 1,000 keys spread evenly over every simulated
    exchange, each simulator in its own process, each exchange at keymon's default budget:
    audits delivered per exchange against what its budget or schedule allows, audit errors by
    reason, CPU per audit, peak RSS, scrape time, stop time (:mod:`bench.mixed_bench`).

(d) time to ready (``/readyz`` 200) at 1,000 and 10,000 keys, and time to detect a withdrawal
    switched on (``/metrics`` and a webhook channel) with ``interval: auto`` at 1,000 keys
    (:mod:`bench.detect_bench`). Not part of the default run (it takes about ten minutes):
    ``--only detect``.

``--only check|daemon|mixed|detect`` runs one phase (to iterate on it quickly).

Every figure is printed next to its target with PASS or MISS, and everything is written as
JSON to ``bench/results/latest.json``. The run is bounded (:data:`TIME_BOUND` seconds for
the phases; each wait and loop has its own bound) and stops every process it starts.

Before measuring, the children's bytecode caches are primed (``PYTHONDONTWRITEBYTECODE`` is
dropped from their environment): a deployed keymon runs from compiled modules, and compiling
them again at every start would add about half a second of CPU to every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import check_bench, daemon_bench, detect_bench, mixed_bench
from bench.common import PYTHON, REPO, BenchError, child_env, run_measured

RESULTS = REPO / "bench" / "results" / "latest.json"
#: Seconds the phases may take together (scripts/bench adds the bootstrap's second or two).
#: 330 s for (a) and (b), and phase (c)'s own slice after them (:data:`MIXED_SLICE`).
TIME_BOUND = 470.0
#: Seconds kept for phase (c) (about 95 s when the machine is idle): (a) and (b) must finish
#: before the last MIXED_SLICE seconds of TIME_BOUND, so a slow (a) or (b) cannot crowd it out.
MIXED_SLICE = 140.0
PHASES = ("check", "daemon", "mixed", "detect")
#: The phases a run without ``--only`` runs.
DEFAULT_PHASES = ("check", "daemon", "mixed")
#: Seconds phase (d) may take (``--only detect``): two readiness runs and five detections.
DETECT_TIME_BOUND = 1200.0
#: Phase (c): keys, interval (s), warm-up before the window (s).
MIXED_RUN = (1_000, 30, 20.0)
#: Phase (b) sizes: keys, budget (weight/min), interval (s), warm-up before the window (s).
DAEMON_RUNS = (
    (1_000, 1_200, 30, 20.0),
    # Scaled up from the default 1,200: at 10,000 keys the first round must finish within
    # the run. 9,000 stays under keymon's own back-off point (80 % of the 12,000 IP limit).
    (10_000, 9_000, 60, 20.0),
)
PRIME = (
    "import keymon.cli, keymon.app, keymon.demo, keymon.simulator.__main__, "
    "bench.reference, bench.check_runner, bench.mixed_bench, httpx_aiohttp"
)
#: The figures before issue #16's memory and check-CPU work, printed beside today's:
#: (value, where it comes from). README "Benchmarks" (f3610be, 38b79ae) and #16's own text.
PREVIOUS: dict[str, tuple[float, str]] = {
    "check_cpu_ms_per_key": (3.42, "README, 38b79ae"),
    "check_rss_mb": (63.8, "README, 38b79ae"),
    # One call per key on both sides (keymon made one then; now trading_status: false).
    "check_vs_python_binance": (1.9 / 1.3, "#16: 1.9 s vs 1.3 s CPU"),
    "rss_after_scrapes_mb_1000": (80.0, "#16"),
    "rss_after_scrapes_mb_10000": (229.0, "#16"),
    "rss_per_key_kb_10000": (13.0 * 1.024, "#16: 13 KB"),
    "rss_peak_mb_1000": (85.0, "README, f3610be"),
    "rss_peak_mb_10000": (240.0, "README, f3610be"),
    "scrape_rss_rise_max_mb_10000": (33.0, "#16: whole body held"),
    "scrape_plain_ms_1000": (14.0, "README, f3610be"),
    "scrape_gzip_ms_1000": (19.0, "README, f3610be"),
    "scrape_plain_ms_10000": (170.0, "README, f3610be"),
    "scrape_gzip_ms_10000": (223.0, "README, f3610be"),
    "cpu_ms_per_audit_1000": (3.2, "README, f3610be"),
    "cpu_ms_per_audit_10000": (2.3, "README, f3610be"),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    figure: str
    value: float | None
    unit: str
    op: str  # "<=", "<" or ">="
    limit: float
    digits: int = 2

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        if self.op == "<":
            return self.value < self.limit
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def row(self) -> tuple[str, str, str, str]:
        value = "n/a" if self.value is None else f"{self.value:,.{self.digits}f} {self.unit}"
        sign = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        limit = f"{sign} {self.limit:,.{self.digits}f} {self.unit}"
        return (self.figure, value, limit, "PASS" if self.passed else "MISS")

    def as_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "target": f"{self.op} {self.limit}",
            "result": "PASS" if self.passed else "MISS",
        }


def _get(data: dict[str, Any] | None, *path: str) -> float | None:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def targets(results: dict[str, Any]) -> list[Target]:
    check = results.get("check")
    out = []
    if check is not None or "check_error" in results:
        out += [
            Target(
                "check: CPU per audit, 1,000 keys",
                _get(check, "runs", "keymon", "cpu_ms_per_key"),
                "ms",
                "<=",
                1.0,
            ),
            Target(
                "check: peak RSS, 1,000 keys",
                _get(check, "runs", "keymon", "maxrss_mb"),
                "MB",
                "<=",
                60,
                1,
            ),
        ]
    ratio = _get(check, "vs_python_binance", "ratio")
    if check is not None and ratio is not None:
        out.append(Target("check: CPU / python-binance's CPU, 3 calls", ratio, "", "<", 1.0, 2))
    ratio_1 = _get(check, "vs_python_binance", "one_call", "ratio")
    if check is not None and ratio_1 is not None:
        out.append(Target("check: CPU / python-binance's CPU, 1 call", ratio_1, "", "<", 1.0, 2))
    for keys, rss in ((1_000, 60.0), (10_000, 100.0)) if results.get("daemon") else ():
        daemon = results["daemon"].get(str(keys))
        share = _get(daemon, "budget_share")
        name = f"daemon {keys:,} keys"
        out += [
            Target(
                f"{name}: budget delivered",
                None if share is None else share * 100,
                "%",
                ">=",
                95,
                1,
            ),
            Target(f"{name}: 429 answers", _get(daemon, "count_429"), "", "<=", 0, 0),
            Target(f"{name}: 418 answers", _get(daemon, "count_418"), "", "<=", 0, 0),
            Target(f"{name}: peak RSS", _get(daemon, "rss_peak_mb"), "MB", "<=", rss, 1),
        ]
        if keys == 10_000:
            out += [
                Target(
                    f"{name}: RSS after scrapes",
                    _get(daemon, "rss_after_scrapes_mb"),
                    "MB",
                    "<=",
                    150,
                    1,
                ),
                Target(
                    f"{name}: RSS rise during a scrape, max",
                    _get(daemon, "scrape_rss_rise_max_mb"),
                    "MB",
                    "<=",
                    10,
                    1,
                ),
            ]
            for kind in ("plain", "gzip"):
                for stat in ("median", "max"):
                    value = _get(daemon, f"scrape_{kind}", f"{stat}_ms")
                    out.append(
                        Target(f"{name}: /metrics {kind}, {stat}", value, "ms", "<=", 100, 0)
                    )
    detect = results.get("detect")
    if detect is not None:
        out += [
            Target(
                "ready: 1,000 keys, default budget, from process start",
                _get(detect, "ready", "1000", "ready_after_start_s"),
                "s",
                "<=",
                5,
                1,
            ),
            Target(
                "detect (auto): withdrawal on /metrics, max",
                _get(detect, "detect", "metrics_s", "max"),
                "s",
                "<=",
                60,
                1,
            ),
            Target(
                "detect (auto): withdrawal at the ops channel, max",
                _get(detect, "detect", "notify_s", "max"),
                "s",
                "<=",
                65,
                1,
            ),
        ]
    mixed = results.get("mixed")
    if mixed is not None:
        name = "mixed 1,000 keys"
        rows = mixed.get("per_exchange", {})
        for exchange in mixed.get("exchanges", []):
            share = _get(rows, exchange, "share")
            out.append(
                Target(
                    f"{name}, {exchange}: delivered",
                    None if share is None else share * 100,
                    "%",
                    ">=",
                    95,
                    1,
                )
            )
        out += [
            # No target on keymon's own rate_limited refusals: demand exceeds the budgets by
            # design here (as in phase b), and declining to overspend is the budget's job. The
            # exchanges' own 429/418 answers are what must stay at 0.
            Target(f"{name}: banned errors", _get(mixed, "banned"), "", "<=", 0, 0),
            Target(f"{name}: 429 answers", _get(mixed, "count_429"), "", "<=", 0, 0),
            Target(f"{name}: 418 answers", _get(mixed, "count_418"), "", "<=", 0, 0),
            Target(f"{name}: peak RSS", _get(mixed, "rss_peak_mb"), "MB", "<=", 60, 1),
        ]
    return out


# ----------------------------------------------------------------------------- report


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i])
            for i, c in enumerate(row)
        ]
        return "  " + "  ".join(cells).rstrip()

    return [fmt(header), "  " + "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def render(results: dict[str, Any], checks: list[Target]) -> str:
    env = results["environment"]
    lines = [
        f"keymon benchmarks — {results['started_at']}, git {env['git']}, Python "
        f"{env['python']}, {env['cpus']} CPUs; simulator in its own process, "
        f"{results['latency_ms']:.0f} ms latency, 127.0.0.1",
        "",
    ]
    check = results.get("check")
    if check:
        lines.append(
            f"(a) keymon check, {check['keys']:,} keys, at most {check['concurrency']} at once"
            f" and {check.get('per_exchange', '?')} per exchange (python-binance too), "
            f"median of {check['rounds']} rounds (each its own process)"
        )
        rows: list[tuple[str, ...]] = []
        for run in [*check["runs"].values(), check["startup"]]:
            rows.append(
                (
                    run["label"],
                    f"{run['wall_s']:.2f}",
                    f"{run['cpu_s']:.2f}",
                    f"{run['cpu_ms_per_key']:.3f}",
                    f"{run['cpu_ms_per_key_min']:.3f}-{run['cpu_ms_per_key_max']:.3f}",
                    f"{run['maxrss_mb']:.1f}",
                    f"{run['ok_min']}/{run['keys']}",
                )
            )
        header: tuple[str, ...] = (
            "run",
            "wall s",
            "CPU s",
            "CPU ms/key",
            "range",
            "peak RSS MB",
            "audits ok",
        )
        lines += _table(header, rows, {1, 2, 3, 4, 5, 6})
        lines.append(
            "  CPU = user + system time of the child process (wait4), / keys; peak RSS = ru_maxrss"
        )
        lines.append(
            f"  keymon's marginal CPU per key (1,000-key run minus 1-key run, / 999): "
            f"{check['keymon_marginal_cpu_ms_per_key']:.3f} ms"
        )
        lines.append("")
    daemons = results.get("daemon", {})
    if daemons:
        lines.append(
            "(b) keymon run (daemon): demand over budget; budget delivered over a 60 s window "
            "after warm-up (requests counted at the simulator)"
        )
        rows = []
        for d in daemons.values():
            if "error" in d:
                rows.append((f"{d['keys']:,}", "error: " + d["error"], "", "", "", "", "", "", ""))
                continue
            rows.append(
                (
                    f"{d['keys']:,}",
                    f"{d['interval_s']}s",
                    f"{d['budget_per_min']:,}",
                    f"{d['demand_per_min']:,.0f}",
                    f"{d['weight_per_min']:,.0f} ({d['budget_share'] * 100:.1f} %)",
                    f"{d['count_429']}/{d['count_418']}",
                    f"{d['cpu_ms_per_audit']:.2f}",
                    f"{d['rss_after_start_mb']:.0f} / {d['rss_before_scrape_mb']:.0f} / "
                    f"{d['rss_peak_mb']:.0f}",
                    f"{d['startup_s']:.1f} / {d['stop_s']:.1f}"
                    + ("" if d["stopped_cleanly"] else " killed"),
                )
            )
        header = (
            "keys",
            "interval",
            "budget/min",
            "demand/min",
            "delivered/min",
            "429/418",
            "CPU ms/audit",
            "RSS MB start/pre-scrape/peak",
            "start/stop s",
        )
        lines += _table(header, rows, {2, 3, 4, 5, 6})
        rows = []
        for d in daemons.values():
            if "error" in d:
                continue
            plain, gz, m = d["scrape_plain"], d["scrape_gzip"], d["metrics"]
            rows.append(
                (
                    f"{d['keys']:,}",
                    f"{plain['median_ms']:.1f} / {plain['max_ms']:.1f}",
                    f"{plain['bytes'] / 1e6:.2f} MB",
                    f"{gz['median_ms']:.1f} / {gz['max_ms']:.1f}",
                    f"{gz['bytes'] / 1e6:.2f} MB",
                    f"{m['sample_lines']:,}",
                    f"{m['keys_with_result']:,} ({m['keys_audit_ok']:,} ok)",
                )
            )
        header = (
            "keys",
            "scrape ms median/max",
            "size",
            "gzip ms median/max",
            "gzip size",
            "samples",
            "keys with a result",
        )
        lines += ["", *_table(header, rows, {1, 2, 3, 4, 5})]
        lines += [
            "  budget/min is max_weight_per_minute: the 1,200 default at 1,000 keys; at 10,000",
            "  keys scaled up to 9,000 so that the first round reaches every key within the run",
            "  (under keymon's own back-off at 80 % of the 12,000 SAPI IP limit).",
            "  demand/min = keys x 60 / (interval - jitter); delivered = weight (requests) the",
            "  simulator received in the window; CPU ms/audit = daemon CPU in the window / those",
            "  requests; RSS peak = VmHWM before SIGTERM, scrapes included; stop = SIGTERM to exit",
            "  (killed after 20 s).",
        ]
        lines.append("")
    mixed = results.get("mixed")
    if mixed:
        lines += _render_mixed(mixed)
    detect = results.get("detect")
    if detect:
        lines += _render_detect(detect)
    lines += _render_beside(results)
    lines.append("Targets")
    lines += _table(("figure", "value", "target", "result"), [t.row() for t in checks], {1})
    misses = sum(not t.passed for t in checks)
    lines.append("")
    lines.append(
        f"{len(checks) - misses} PASS, {misses} MISS; "
        f"phases took {results['elapsed_s']:.0f} s; load average (1/5/15 min) at start "
        f"{_loads(env['load_average_at_start'])}, at end {_loads(env['load_average_at_end'])}; "
        f"JSON: {RESULTS.relative_to(REPO)}"
    )
    return "\n".join(lines) + "\n"


def _beside_rows(results: dict[str, Any]) -> list[tuple[str, float | None, str, str]]:
    """(figure, today's value, unit, key in PREVIOUS) for the #16 figures."""
    check = results.get("check")
    rows: list[tuple[str, float | None, str, str]] = []
    if check is not None:
        rows += [
            (
                "check 1,000 keys: CPU per key",
                _get(check, "runs", "keymon", "cpu_ms_per_key"),
                "ms",
                "check_cpu_ms_per_key",
            ),
            (
                "check 1,000 keys: peak RSS",
                _get(check, "runs", "keymon", "maxrss_mb"),
                "MB",
                "check_rss_mb",
            ),
            (
                "check CPU / python-binance CPU (3 calls)",
                _get(check, "vs_python_binance", "ratio"),
                "x",
                "check_vs_python_binance_3calls",
            ),
            (
                "check CPU / python-binance CPU (1 call)",
                _get(check, "vs_python_binance", "one_call", "ratio"),
                "x",
                "check_vs_python_binance",
            ),
        ]
    for size, daemon in results.get("daemon", {}).items():
        keys = f"{int(size):,}"
        rows += [
            (
                f"daemon {keys}: RSS after scrapes",
                _get(daemon, "rss_after_scrapes_mb"),
                "MB",
                f"rss_after_scrapes_mb_{size}",
            ),
            (
                f"daemon {keys}: RSS after scrapes per key",
                _get(daemon, "rss_per_key_kb"),
                "KiB",
                f"rss_per_key_kb_{size}",
            ),
            (f"daemon {keys}: peak RSS", _get(daemon, "rss_peak_mb"), "MB", f"rss_peak_mb_{size}"),
            (
                f"daemon {keys}: RSS rise during a scrape, max",
                _get(daemon, "scrape_rss_rise_max_mb"),
                "MB",
                f"scrape_rss_rise_max_mb_{size}",
            ),
            (
                f"daemon {keys}: /metrics plain, median",
                _get(daemon, "scrape_plain", "median_ms"),
                "ms",
                f"scrape_plain_ms_{size}",
            ),
            (
                f"daemon {keys}: /metrics gzip, median",
                _get(daemon, "scrape_gzip", "median_ms"),
                "ms",
                f"scrape_gzip_ms_{size}",
            ),
            (
                f"daemon {keys}: CPU per audit",
                _get(daemon, "cpu_ms_per_audit"),
                "ms",
                f"cpu_ms_per_audit_{size}",
            ),
        ]
    return rows


def _render_beside(results: dict[str, Any]) -> list[str]:
    rows = []
    for figure, value, unit, key in _beside_rows(results):
        before = PREVIOUS.get(key)
        rows.append(
            (
                figure,
                "n/a" if value is None else f"{value:,.2f} {unit}",
                "" if before is None else f"{before[0]:,.2f} {unit}",
                "" if before is None else before[1],
            )
        )
    if not rows:
        return []
    lines = ["Beside the figures before #16 (memory, scrapes, check CPU)"]
    lines += _table(("figure", "now", "before", "before: source"), rows, {1, 2})
    check = results.get("check") or {}
    skipped = (check.get("vs_python_binance") or {}).get("skipped")
    if skipped:
        lines.append(f"  {skipped}; to include it: {check_bench.PYBINANCE_HOWTO}")
    lines.append("")
    return lines


def _render_mixed(mixed: dict[str, Any]) -> list[str]:
    if "error" in mixed:
        return [f"(c) keymon run, mixed fleet: error: {mixed['error']}", ""]
    lines = [
        f"(c) keymon run (daemon), mixed fleet: {mixed['keys']:,} keys over "
        f"{len(mixed['exchanges'])} exchanges, interval {mixed['interval_s']} s, each "
        f"exchange at keymon's default budget; {mixed['window_s']:.0f} s window after "
        f"{mixed['warmup_s']:.0f} s warm-up (counted in keymon's /metrics)"
    ]
    rows: list[tuple[str, ...]] = []
    for exchange, r in mixed["per_exchange"].items():
        wpa = r["weight_per_audit"]
        rows.append(
            (
                exchange,
                f"{r['keys']}",
                f"{r['budget_per_min']:,}",
                f"{wpa}",
                f"{r['demand_audits_per_min']:.0f}",
                f"{r['expected_audits_per_min']:.1f} ({r['bound']})",
                f"{r['audits_per_min']:.1f}",
                f"{r['failed_audits_per_min']:.1f}",
                f"{r['weight_per_min']:.0f}",
                f"{r['share'] * 100:.1f} %",
                f"{r.get('count_429', 0)}/{r.get('count_418', 0)}",
                ", ".join(f"{k} {v}" for k, v in r.get("errors", {}).items()) or "none",
            )
        )
    header = (
        "exchange",
        "keys",
        "budget/min",
        "weight/audit",
        "demand/min",
        "expected/min",
        "audits ok/min",
        "failed/min",
        "weight/min",
        "delivered",
        "429/418",
        "audit errors (whole run)",
    )
    lines += _table(header, rows, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
    plain = mixed["scrape_plain"]
    lines += [
        f"  daemon: {mixed['cpu_ms_per_audit']:.2f} ms CPU per audit "
        f"({mixed['cpu_ms_per_attempted_audit']:.2f} per attempt); RSS start / pre-scrape / "
        f"peak {mixed['rss_after_start_mb']:.0f} / {mixed['rss_before_scrape_mb']:.0f} / "
        f"{mixed['rss_peak_mb']:.0f} MB; /metrics plain median / max "
        f"{plain['median_ms']:.1f} / {plain['max_ms']:.1f} ms, {plain['bytes'] / 1e6:.2f} MB; "
        f"start {mixed['startup_s']:.1f} s, stop {mixed['stop_s']:.1f} s"
        + ("" if mixed["stopped_cleanly"] else " (killed)"),
        "  demand = keys x 60 / (interval - jitter) audits; expected = demand, or budget /",
        "  weight/audit (the adapter's endpoint weights but the clock sync's) where the",
        "  schedule asks for more than the budget allows; delivered = audits ok/min / expected;",
        "  weight/min = weight keymon spent. Where demand exceeds the budget, due audits wait",
        "  for it in due order (keymon/schedule.py); failed/min counts audits that failed",
        "  (e.g. rate_limited while a 429 window outlasts max_wait), no target; the exchanges'",
        "  own 429/418 must stay 0. CPU per audit = daemon CPU in the window / audits ok",
        "  (/ attempted).",
        "",
    ]
    return lines


def _render_detect(detect: dict[str, Any]) -> list[str]:
    lines = ["(d) keymon run: time to ready and time to detect (20 ms simulator latency)"]
    rows: list[tuple[str, ...]] = []
    for r in detect.get("ready", {}).values():
        if "error" in r:
            rows.append((f"{r['keys']:,}", "error", r["error"], "", "", "", "", ""))
            continue
        rows.append(
            (
                f"{r['keys']:,}",
                f"{r['budget_per_min']:,}",
                f"{r['startup_s']:.1f}",
                f"{r['ready_after_up_s']:.1f}",
                f"{r['ready_after_start_s']:.1f}",
                f"{r['cpu_s_at_ready']:.1f}" if "cpu_s_at_ready" in r else "",
                f"{r['budget_bound_s']:.0f}",
                r.get("load_average", ""),
            )
        )
    header = (
        "keys",
        "budget/min",
        "start s",
        "ready after up s",
        "ready s",
        "CPU s",
        "budget wait s",
        "load",
    )
    lines += _table(header, rows, {1, 2, 3, 4, 5, 6})
    found = detect.get("detect")
    if found and "error" not in found:
        lines.append(
            f"  detect, {found['keys']:,} keys, interval auto (computed "
            f"{found['computed_interval_s']:.1f} s, gauge {found.get('interval_gauge_s', 0):.1f} "
            f"s), {len(found['trials'])} trials: /metrics median / max "
            f"{_opt(found['metrics_s']['median'])} / {_opt(found['metrics_s']['max'])} s, "
            f"ops channel {_opt(found['notify_s']['median'])} / "
            f"{_opt(found['notify_s']['max'])} s (polled every {found['metrics_poll_s']} s; "
            f"trials from {found.get('settle_s', 0):.0f} s after ready); "
            f"load {found.get('load_average', '')}"
        )
    elif found:
        lines.append(f"  detect: error: {found['error']}")
    lines += [
        "  ready s = process start to /readyz 200; CPU s = the daemon's CPU until then (on an",
        "  idle core, about its time to ready); budget wait = (ceil(keys / budget) - 1) minutes,",
        "  the least the sliding 60 s window allows.",
        "",
    ]
    return lines


def _opt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _loads(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _environment() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    git = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        git = commit + (" (+ local changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git": git,
        "packages": {
            name: version(name) for name in ("httpx", "httpcore", "aiohttp", "httpx-aiohttp")
        },
    }


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of phase (a) (default 3)")
    parser.add_argument(
        "--skip-daemon", action="store_true", help="phase (a) only (same as --only check)"
    )
    parser.add_argument(
        "--only",
        choices=PHASES,
        help="run one phase: check (a), daemon (b), mixed (c) or detect (d)",
    )
    args = parser.parse_args(argv)
    phases = {args.only} if args.only else {"check"} if args.skip_daemon else set(DEFAULT_PHASES)
    started = time.perf_counter()
    deadline = started + (DETECT_TIME_BOUND if phases == {"detect"} else TIME_BOUND)
    # (a) and (b) stop short of phase (c)'s slice when (c) is to run.
    early_deadline = deadline - MIXED_SLICE if "mixed" in phases else deadline
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "environment": _environment(),
        "latency_ms": 20.0,
        "time_bound_s": DETECT_TIME_BOUND if phases == {"detect"} else TIME_BOUND,
        "phases": [phase for phase in PHASES if phase in phases],
    }
    with tempfile.TemporaryDirectory(prefix="keymon-bench-") as tmp:
        workdir = Path(tmp)
        log("priming bytecode caches")
        prime = run_measured(
            [PYTHON, "-c", PRIME], env=child_env(), stdout_path=workdir / "prime.out", timeout=120
        )
        if prime.returncode != 0:
            log((workdir / "prime.out.stderr").read_text())
            return 1
        if "check" in phases:
            log(f"(a) keymon check, {args.rounds} rounds + 1 warm-up")
            try:
                results["check"] = check_bench.run(
                    workdir, rounds=args.rounds, deadline=early_deadline, log=log
                )
            except BenchError as exc:
                log(f"  phase (a) failed: {exc}")
                results["check_error"] = str(exc)
        results["daemon"] = {}
        for keys, budget, interval, warmup in DAEMON_RUNS if "daemon" in phases else ():
            log(f"(b) keymon run, {keys:,} keys, budget {budget:,}/min, interval {interval} s")
            try:
                results["daemon"][str(keys)] = daemon_bench.run(
                    workdir,
                    keys=keys,
                    budget=budget,
                    interval_s=interval,
                    warmup_s=warmup,
                    deadline=early_deadline,
                    log=log,
                )
            except BenchError as exc:
                log(f"  phase (b) at {keys:,} keys failed: {exc}")
                results["daemon"][str(keys)] = {"keys": keys, "error": str(exc)}
        if "mixed" in phases:
            keys, interval, warmup = MIXED_RUN
            log(f"(c) keymon run, mixed fleet: {keys:,} keys over every simulated exchange")
            try:
                results["mixed"] = mixed_bench.run(
                    workdir,
                    keys=keys,
                    interval_s=interval,
                    warmup_s=warmup,
                    deadline=deadline,
                    log=log,
                )
            except BenchError as exc:
                log(f"  phase (c) failed: {exc}")
                results["mixed"] = {"keys": keys, "error": str(exc)}
        if "detect" in phases:
            results["detect"] = detect_bench.run(workdir, deadline=deadline, log=log)
    results["elapsed_s"] = time.perf_counter() - started
    results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    checks = targets(results)
    results["targets"] = [t.as_json() for t in checks]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(render(results, checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
