"""(a) ``keymon check`` over 1,000 keys, beside a minimal reference client.

What is measured, per run, of one child process (:func:`bench.common.run_measured`): wall
time, CPU time (user + system, from ``wait4``) divided by the number of keys, and peak RSS
(``ru_maxrss``). Each run audits the same 1,000 keys against the Binance simulator served for
real on 127.0.0.1 with 20 ms latency, in its own process. The runs:

* ``reference``: :mod:`bench.reference`, a hand-signed aiohttp loop at keymon's concurrency;
* ``keymon``: ``python -m keymon check --config ... --format json``, as shipped (whatever
  transport :func:`keymon.exchanges.base.build_client` picks by default);
* ``httpx`` and ``aiohttp``: the same ``check`` through :mod:`bench.check_runner`, with
  httpx's default transport and with ``httpx_aiohttp.AiohttpTransport`` (the transport
  question);
* ``keymon-1call``: ``keymon check`` with ``exchanges.binance.trading_status: false`` (one
  signed call per key, apiRestrictions, instead of the default three);
* ``python-binance``: :mod:`bench.pybinance_reference`, the same keys audited with
  python-binance making the calls ``check`` makes by default (one ``AsyncClient`` per key;
  ``get_account_api_permissions()``, ``get_account_api_trading_status()``,
  ``get_account_status()``), and ``python-binance-1call`` the first call only, beside
  ``keymon-1call``; at most ``CHECK_PER_EXCHANGE_CONCURRENCY`` (4) keys at once, as
  ``check`` audits one exchange's keys. Both run under the interpreter named in
  ``BENCH_PYBINANCE_PYTHON``: python-binance is no keymon dependency, so without that
  variable (or when that interpreter cannot import ``binance``) they are skipped and the
  report says how to set it up (:data:`PYBINANCE_HOWTO`);
* ``startup``: ``python -m keymon check`` of one key, the fixed cost in every figure above
  (interpreter, imports, configuration, one clock sync, one audit).

``check`` follows the good-neighbour rules (at most 4 audits per exchange at once, the weight
budget, the ban file), so its wall time is bound by them: compare CPU, not wall time.

Several rounds are run in a rotating order, each run against a fresh simulator (so its
per-minute weight window never limits a run); the figures are the medians. A run only counts
if every key was audited successfully: the JSON output is checked.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    BenchError,
    KeySet,
    Simulator,
    Usage,
    child_env,
    make_keyset,
    run_measured,
    write_config,
)
from keymon.audit import CHECK_PER_EXCHANGE_CONCURRENCY, DEFAULT_CONCURRENCY

#: keymon check needs no throttling here: one pass, far below any limit.
CHECK_BUDGET = 100_000
RUN_TIMEOUT = 60.0
#: The interpreter with python-binance installed, for the python-binance comparison.
PYBINANCE_ENV = "BENCH_PYBINANCE_PYTHON"
PYBINANCE_HOWTO = (
    "python3 -m venv /tmp/pybinance && /tmp/pybinance/bin/pip install python-binance==1.0.37, "
    f"then {PYBINANCE_ENV}=/tmp/pybinance/bin/python scripts/bench --only check"
)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    label: str
    argv: Callable[[str, Path, KeySet], list[str]]
    reference: bool = False
    #: ``exchanges.binance.trading_status`` in the configuration it is given.
    trading_status: bool = True


def _reference(url: str, config: Path, keyset: KeySet) -> list[str]:
    return [
        PYTHON,
        "-m",
        "bench.reference",
        "--base-url",
        url,
        "--keys",
        str(keyset.reference_keys_file),
        "--concurrency",
        str(DEFAULT_CONCURRENCY),
    ]


def _keymon(url: str, config: Path, keyset: KeySet) -> list[str]:
    return [PYTHON, "-m", "keymon", "check", "--config", str(config), "--format", "json"]


def pybinance_python() -> tuple[str | None, str]:
    """(the interpreter that can import python-binance, its version) or (None, why not)."""
    python = os.environ.get(PYBINANCE_ENV, "")
    if not python:
        return None, f"python-binance comparison skipped: {PYBINANCE_ENV} is not set"
    try:
        probe = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('python-binance'))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"python-binance comparison skipped: {python} does not run ({exc})"
    if probe.returncode != 0:
        return None, f"python-binance comparison skipped: {python} cannot import python-binance"
    return python, probe.stdout.strip()


def _pybinance(python: str, calls: int) -> Callable[[str, Path, KeySet], list[str]]:
    def argv(url: str, config: Path, keyset: KeySet) -> list[str]:
        return [
            python,
            "-m",
            "bench.pybinance_reference",
            "--base-url",
            url,
            "--keys",
            str(keyset.reference_keys_file),
            "--concurrency",
            # keymon check audits at most this many keys of one exchange at once (the
            # good-neighbour rule); python-binance audits the same keys the same way.
            str(CHECK_PER_EXCHANGE_CONCURRENCY),
            "--calls",
            str(calls),
        ]

    return argv


def _runner(transport: str) -> Callable[[str, Path, KeySet], list[str]]:
    def argv(url: str, config: Path, keyset: KeySet) -> list[str]:
        return [
            PYTHON,
            "-m",
            "bench.check_runner",
            "--transport",
            transport,
            "--config",
            str(config),
        ]

    return argv


def default_transport_name() -> str:
    """The class of the transport ``build_client`` uses when none is given."""
    from keymon.exchanges.base import build_client

    client = build_client(
        exchange="binance",
        base_url="http://127.0.0.1:1",
        allowlist=frozenset(),
        timeout=1.0,
    )
    guard = getattr(client, "_transport", None)
    inner = getattr(guard, "_inner", guard)
    return type(inner).__name__


def variants(pybinance: tuple[str | None, str] = (None, "")) -> list[Variant]:
    """The runs; keymon's own is the second. python-binance's two last, where installed."""
    runs = [
        Variant("reference", "reference: hand-signed aiohttp loop", _reference, reference=True),
        Variant("keymon", f"keymon check (default: {default_transport_name()})", _keymon),
        Variant("httpx", "keymon check, httpx AsyncHTTPTransport", _runner("httpx")),
        Variant("aiohttp", "keymon check, httpx_aiohttp.AiohttpTransport", _runner("aiohttp")),
        Variant(
            "keymon-1call",
            "keymon check, trading_status: false (1 call/key)",
            _keymon,
            trading_status=False,
        ),
    ]
    python, version = pybinance
    if python is not None:
        label = f"python-binance {version}: AsyncClient per key, 3 calls"
        runs.append(Variant("python-binance", label, _pybinance(python, 3), reference=True))
        label = f"python-binance {version}: AsyncClient per key, 1 call"
        runs.append(Variant("python-binance-1call", label, _pybinance(python, 1), reference=True))
    return runs


def _audited_ok(variant: Variant, output: Path) -> int:
    """How many keys the run reports audited successfully (0 if the output is unreadable)."""
    try:
        data = json.loads(output.read_text())
    except (OSError, ValueError):
        return 0
    if variant.reference:
        return int(data.get("ok", 0))
    return sum(1 for key in data.get("keys", []) if key.get("audit_ok") is True)


def _summary(name: str, label: str, keys: int, samples: list[tuple[Usage, int]]) -> dict[str, Any]:
    per_key = [u.cpu_s * 1000 / keys for u, _ in samples]
    return {
        "name": name,
        "label": label,
        "keys": keys,
        "wall_s": statistics.median(u.wall_s for u, _ in samples),
        "cpu_s": statistics.median(u.cpu_s for u, _ in samples),
        "cpu_ms_per_key": statistics.median(per_key),
        "cpu_ms_per_key_min": min(per_key),
        "cpu_ms_per_key_max": max(per_key),
        "maxrss_mb": statistics.median(u.maxrss_mb for u, _ in samples),
        "ok_min": min(ok for _, ok in samples),
        "all_ok": all(ok == keys and u.returncode == 0 for u, ok in samples),
        "samples": [
            {
                "wall_s": round(u.wall_s, 4),
                "user_s": round(u.user_s, 4),
                "sys_s": round(u.sys_s, 4),
                "maxrss_kb": u.maxrss_kb,
                "returncode": u.returncode,
                "ok": ok,
            }
            for u, ok in samples
        ],
    }


def run(
    workdir: Path, *, keys: int = 1000, rounds: int = 3, deadline: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """Run phase (a); returns its figures (JSON-ready)."""
    keyset = make_keyset(keys, workdir / "check")
    one_key = make_keyset(1, workdir / "check-1")
    pybinance = pybinance_python()
    if pybinance[0] is None:
        log(f"  {pybinance[1]}; to include it: {PYBINANCE_HOWTO}")
    runs = variants(pybinance)
    samples: dict[str, list[tuple[Usage, int]]] = {v.name: [] for v in runs}
    startup: list[tuple[Usage, int]] = []
    # Round 0 warms the page cache and the bytecode caches; it is not counted.
    for round_no in range(rounds + 1):
        if time.perf_counter() > deadline:
            raise BenchError("phase (a) ran out of time")
        shift = round_no % len(runs)
        for variant in runs[shift:] + runs[:shift]:
            # A fresh simulator per run: three calls a key put a round's runs together far
            # over the simulated per-minute IP weight (12,000), which python-binance would
            # meet as 429s (keymon pauses before it).
            with Simulator(keyset.sim_keys_file) as sim:
                config = write_config(
                    workdir / "check" / f"{variant.name}-{round_no}.yaml",
                    keyset,
                    base_url=sim.url,
                    max_weight_per_minute=CHECK_BUDGET,
                    trading_status=None if variant.trading_status else False,
                )
                out = workdir / "check" / f"{variant.name}-{round_no}.json"
                usage = run_measured(
                    variant.argv(sim.url, config, keyset),
                    env=child_env(keyset.env),
                    stdout_path=out,
                    timeout=RUN_TIMEOUT,
                )
            ok = _audited_ok(variant, out)
            if round_no:
                samples[variant.name].append((usage, ok))
            log(
                f"  round {round_no}: {variant.name:9} {usage.wall_s:5.2f} s wall, "
                f"{usage.cpu_s * 1000 / keys:5.2f} ms CPU/key, {usage.maxrss_mb:5.1f} MB, "
                f"{ok}/{keys} ok" + ("" if round_no else " (warm-up, not counted)")
            )
        with Simulator(one_key.sim_keys_file) as sim:
            one_config = write_config(
                workdir / "check-1" / f"check-{round_no}.yaml",
                one_key,
                base_url=sim.url,
                max_weight_per_minute=CHECK_BUDGET,
            )
            out = workdir / "check-1" / f"keymon-{round_no}.json"
            usage = run_measured(
                _keymon(sim.url, one_config, one_key),
                env=child_env(one_key.env),
                stdout_path=out,
                timeout=RUN_TIMEOUT,
            )
        if round_no:
            startup.append((usage, _audited_ok(runs[1], out)))
    results = {v.name: _summary(v.name, v.label, keys, samples[v.name]) for v in runs}
    start = _summary("startup", "keymon check, 1 key (fixed start-up cost)", 1, startup)
    marginal = (results["keymon"]["cpu_s"] - start["cpu_s"]) * 1000 / (keys - 1)
    vs_pybinance: dict[str, Any]
    if "python-binance" in results:
        theirs = results["python-binance"]["cpu_s"]
        theirs_1 = results["python-binance-1call"]["cpu_s"]
        vs_pybinance = {
            "python_binance_version": pybinance[1],
            "calls_per_key": 3,
            "python_binance_cpu_s": theirs,
            "keymon_cpu_s": results["keymon"]["cpu_s"],
            "ratio": results["keymon"]["cpu_s"] / theirs if theirs else None,
            "one_call": {
                "python_binance_cpu_s": theirs_1,
                "keymon_cpu_s": results["keymon-1call"]["cpu_s"],
                "ratio": results["keymon-1call"]["cpu_s"] / theirs_1 if theirs_1 else None,
            },
        }
    else:
        vs_pybinance = {"skipped": pybinance[1], "how_to_include": PYBINANCE_HOWTO}
    return {
        "keys": keys,
        "concurrency": DEFAULT_CONCURRENCY,
        "per_exchange": CHECK_PER_EXCHANGE_CONCURRENCY,
        "rounds": rounds,
        "default_transport": default_transport_name(),
        "runs": results,
        "startup": start,
        "keymon_marginal_cpu_ms_per_key": marginal,
        "vs_python_binance": vs_pybinance,
    }
