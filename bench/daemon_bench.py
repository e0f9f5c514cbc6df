"""(b) The daemon, ``python -m keymon run``, at 1,000 and 10,000 keys with demand over budget.

Set-up: a fresh simulator process (20 ms latency) holding the keys, and keymon's daemon as a
child process listening on a free 127.0.0.1 port, its JSON log going to a file. The audit
interval is short enough that the keys ask for more weight than ``max_weight_per_minute``
allows, so the budget, not the schedule, sets the pace.

What is measured:

* **Budget delivered.** After a warm-up, over a window of exactly 60 s, the requests the
  simulator received (``GET /_simulator/stats``, every request costing weight 1), as weight
  per minute and as a share of the budget. The window is one minute long because the budget is
  a sliding 60 s window: whatever burst pattern it lets through repeats every 60 s, so any
  shorter window would over- or under-count.
* **429 and 418** answers the simulator sent, over the whole run.
* **CPU per audit** of the daemon during the window (``/proc/PID/stat``).
* **Peak RSS**: the highest ``VmHWM`` (start-up, window and scrapes included), and
  ``ru_maxrss`` over the whole life, shutdown included. **RSS after scrapes** (``VmRSS`` once
  all scrapes are done; also per key) and the **largest rise during one scrape**: ``VmHWM``
  is reset (``/proc/PID/clear_refs``) just before each scrape, and the rise is the peak during
  the scrape minus the RSS just before it.
* **/metrics**: once every key has a result (``/readyz`` answers 200, bounded wait), ten
  scrapes plain and ten with ``Accept-Encoding: gzip``, each on a fresh connection, timed on
  the client from connect to the last byte; median, max and body size.
* Start-up (process start to ``/healthz`` 200) and stop (SIGTERM to exit, bounded: a daemon
  still running after ``stop_timeout`` is killed and the figure says so).
"""

from __future__ import annotations

import gzip
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    BenchError,
    Process,
    Simulator,
    child_env,
    free_port,
    http_get,
    make_keyset,
    wait_http_ok,
    write_config,
)

RESTRICTIONS = "/sapi/v1/account/apiRestrictions"
WINDOW_S = 60.0
JITTER_S = 1
#: Seconds to allow after the window: readiness, scrapes, stop.
AFTER_WINDOW_S = 50.0


def _requests(stats: dict[str, Any]) -> tuple[int, int]:
    """(all requests, apiRestrictions requests) the simulator has seen."""
    requests = stats["requests"]
    return len(requests), sum(1 for r in requests if r["path"] == RESTRICTIONS)


def _reset_peak(proc: Process) -> bool:
    """Reset the child's ``VmHWM`` to its current RSS (``/proc/PID/clear_refs``, value 5)."""
    try:
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _scrapes(port: int, count: int, headers: dict[str, str], proc: Process) -> dict[str, Any]:
    """``count`` scrapes, timed; and what each raised the daemon's RSS by: its peak resident
    set during the scrape (``VmHWM``, reset just before) minus its RSS just before, both from
    ``/proc``. Where the reset is not allowed, the rise is left out (None)."""
    times: list[float] = []
    rises: list[float] = []
    size = 0
    for _ in range(count):
        before_kb = proc.vm_rss_kb()
        exact = _reset_peak(proc)
        fetched = http_get(port, "/metrics", headers=headers, timeout=60)
        if exact:
            rises.append((proc.vm_hwm_kb() - before_kb) / 1024)
        if fetched.status != 200:
            raise BenchError(f"/metrics answered HTTP {fetched.status}")
        if headers and fetched.headers.get("content-encoding") == "gzip":
            gzip.decompress(fetched.body)  # a valid body, decoded outside the timing
        times.append(fetched.seconds)
        size = len(fetched.body)
    return {
        "count": count,
        "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
        "times_ms": [round(t * 1000, 2) for t in times],
        "bytes": size,
        "rss_rise_max_mb": max(rises) if rises else None,
        "rss_rises_mb": [round(r, 1) for r in rises],
    }


def _metrics_facts(body: str) -> dict[str, Any]:
    """What a scrape says: sample lines, keys with a result, keymon's own request count."""
    lines = [line for line in body.splitlines() if line and not line.startswith("#")]
    audit_ok = [line for line in lines if line.startswith("keymon_key_audit_ok{")]
    errors: dict[str, float] = {}  # by reason, summed over exchanges
    for line in lines:
        if line.startswith("keymon_audit_errors_total{") and not line.endswith(" 0.0"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            errors[reason] = errors.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    requests = sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("keymon_exchange_requests_total{")
    )
    families = Counter(line.split("{", 1)[0].split(" ", 1)[0] for line in lines)
    return {
        "samples_by_name": dict(families.most_common(12)),
        "sample_lines": len(lines),
        "keys_with_result": len(audit_ok),
        "keys_audit_ok": sum(1 for line in audit_ok if line.endswith(" 1.0")),
        "audit_errors": errors,
        "keymon_requests_total": requests,
    }


def run(
    workdir: Path,
    *,
    keys: int,
    budget: int,
    interval_s: int,
    warmup_s: float,
    scrapes: int = 10,
    ready_timeout: float = 30.0,
    stop_timeout: float = 20.0,
    keymon: Sequence[str] = ("-m", "keymon"),
    deadline: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run phase (b) at one size; returns its figures (JSON-ready).

    ``keymon`` is how the interpreter is told to run keymon (``-m keymon``; a script path
    lets an investigation run a patched keymon through the same measurement).
    """
    directory = workdir / f"daemon-{keys}"
    keyset = make_keyset(keys, directory)
    demand = keys * 60 / (interval_s - JITTER_S)
    result: dict[str, Any] = {
        "keys": keys,
        "interval_s": interval_s,
        "jitter_s": JITTER_S,
        "budget_per_min": budget,
        "demand_per_min": demand,
        "warmup_s": warmup_s,
        "window_s": WINDOW_S,
    }
    with Simulator(keyset.sim_keys_file) as sim:
        port = free_port()
        config = write_config(
            directory / "keymon.yaml",
            keyset,
            base_url=sim.url,
            max_weight_per_minute=budget,
            listen_port=port,
            interval=f"{interval_s}s",
            jitter=f"{JITTER_S}s",
        )
        log_path = directory / "daemon.log"
        with log_path.open("wb") as daemon_log:
            proc = Process(
                [PYTHON, *keymon, "run", "--config", str(config)],
                env=child_env(keyset.env),
                stdout=daemon_log,
                stderr=daemon_log,
            )
            try:
                wait_http_ok(port, "/healthz", deadline=time.perf_counter() + 60, proc=proc)
                up = time.perf_counter()
                result["startup_s"] = up - proc.started
                result["rss_after_start_mb"] = proc.vm_hwm_kb() / 1024
                log(f"  daemon up in {result['startup_s']:.1f} s; warm-up {warmup_s:.0f} s")
                if up + warmup_s + WINDOW_S + AFTER_WINDOW_S > deadline:
                    raise BenchError(f"phase (b) at {keys} keys would overrun the time bound")
                time.sleep(warmup_s)

                before, cpu0, t0 = sim.stats(), proc.cpu_seconds_now(), time.perf_counter()
                while time.perf_counter() < t0 + WINDOW_S:
                    time.sleep(min(5.0, t0 + WINDOW_S - time.perf_counter()))
                    if not proc.running:
                        raise BenchError("the daemon exited during the window")
                after, cpu1, t1 = sim.stats(), proc.cpu_seconds_now(), time.perf_counter()
                requests = _requests(after)[0] - _requests(before)[0]
                audits = _requests(after)[1] - _requests(before)[1]
                minutes = (t1 - t0) / 60
                result.update(
                    window_measured_s=t1 - t0,
                    weight_in_window=requests,
                    audits_in_window=audits,
                    weight_per_min=requests / minutes,
                    audits_per_min=audits / minutes,
                    budget_share=requests / minutes / budget,
                    daemon_cpu_s_in_window=cpu1 - cpu0,
                    cpu_ms_per_audit=(cpu1 - cpu0) * 1000 / max(requests, 1),
                )
                log(
                    f"  window: {requests} requests in {t1 - t0:.1f} s = "
                    f"{requests / minutes:.0f}/min of {budget}/min; "
                    f"{(cpu1 - cpu0) * 1000 / max(requests, 1):.2f} ms CPU per audit"
                )

                result["rss_before_scrape_mb"] = proc.vm_hwm_kb() / 1024
                ready_deadline = time.perf_counter() + ready_timeout
                try:
                    wait_http_ok(port, "/readyz", deadline=ready_deadline, proc=proc)
                    result["ready_before_scrape"] = True
                except BenchError:
                    result["ready_before_scrape"] = False
                result["rss_before_scrapes_mb"] = proc.vm_rss_kb() / 1024
                result["scrape_plain"] = _scrapes(port, scrapes, {}, proc)
                result["scrape_gzip"] = _scrapes(port, scrapes, {"Accept-Encoding": "gzip"}, proc)
                body = http_get(port, "/metrics", timeout=60).body.decode()
                result["metrics"] = _metrics_facts(body)
                final = sim.stats()
                result["simulator_requests_total"] = _requests(final)[0]
                result["statuses"] = dict(Counter(str(r["status"]) for r in final["requests"]))
                result["count_429"] = int(final["count_429"])
                result["count_418"] = int(final["count_418"])
                result["rss_peak_mb"] = max(  # VmHWM was reset before each scrape
                    proc.vm_hwm_kb() / 1024,
                    result["rss_before_scrape_mb"],
                    result["rss_before_scrapes_mb"]
                    + max(
                        result["scrape_plain"]["rss_rise_max_mb"] or 0,
                        result["scrape_gzip"]["rss_rise_max_mb"] or 0,
                    ),
                )
                result["rss_after_scrapes_mb"] = proc.vm_rss_kb() / 1024
                result["rss_per_key_kb"] = result["rss_after_scrapes_mb"] * 1024 / keys
                rises = [
                    r
                    for r in (
                        result["scrape_plain"]["rss_rise_max_mb"],
                        result["scrape_gzip"]["rss_rise_max_mb"],
                    )
                    if r is not None
                ]
                result["scrape_rss_rise_max_mb"] = max(rises) if rises else None
                log(
                    f"  scrape: plain median {result['scrape_plain']['median_ms']:.0f} ms, "
                    f"gzip median {result['scrape_gzip']['median_ms']:.0f} ms, "
                    f"{result['scrape_plain']['bytes'] / 1e6:.1f} MB; "
                    f"peak RSS {result['rss_peak_mb']:.0f} MB, after scrapes "
                    f"{result['rss_after_scrapes_mb']:.0f} MB, max rise in a scrape "
                    f"{result['scrape_rss_rise_max_mb'] or float('nan'):.1f} MB"
                )
                stopping = time.perf_counter()
                try:
                    usage = proc.stop(stop_timeout)
                    result["stop_s"] = time.perf_counter() - stopping
                    result["stopped_cleanly"] = usage.returncode == 0
                except BenchError:
                    usage = proc.wait(5)
                    result["stop_s"] = time.perf_counter() - stopping
                    result["stopped_cleanly"] = False
                result["lifetime_maxrss_mb"] = usage.maxrss_mb
                result["lifetime_cpu_s"] = usage.cpu_s
                result["returncode"] = usage.returncode
            finally:
                proc.kill()
        result["log_events"] = _log_events(log_path)
    return result


def _log_events(path: Path) -> dict[str, int]:
    """How often each event name appears in the daemon's JSON log (for the record)."""
    import json

    counts: Counter[str] = Counter()
    with path.open("rb") as lines:
        for raw in lines:
            try:
                event = json.loads(raw).get("event", "?")
            except ValueError:
                event = "(not JSON)"
            counts[str(event)[:60]] += 1
    return dict(counts.most_common(15))
