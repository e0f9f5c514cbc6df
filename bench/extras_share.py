"""How often the daemon reads each Binance key's trading status: ``python -m bench.extras_share``.

The trading-status reads are paid from spare budget only (docs/trading-readiness.md, "Budget:
restrictions first"). How much spare there is depends on the keys' timetable, so this drives
the real :class:`~keymon.budget.WeightBudget` with a fake clock through hours of audits laid
out as the scheduler lays them out (each key on its grid, ``phase(name)``, runs
``interval - jitter`` apart, each delayed by up to the jitter): per audit the restriction read
is granted (``try_grant``), then the extras asked for (``extras``). No network, no sleeping;
about ten seconds per scenario.

Printed per scenario: the restriction reads' weight per minute, the spare share, whether any
restriction read had to wait, the trading-status reads per minute, how many keys were never
read, and the gaps between one key's reads after the first two hours (median, 95th
percentile, max).
"""

from __future__ import annotations

import asyncio
import random
import statistics

from keymon.budget import EXTRAS_HEADROOM, ExchangeLimits, SparePlan, WeightBudget
from keymon.config import AUTO_BUDGET_SHARE, AUTO_JITTER_SHARE
from keymon.schedule import phase

#: Binance: apiRestrictions (mandatory), apiTradingStatus + account/status (extras).
MANDATORY, EXTRAS = 1, 2


async def scenario(
    keys: int, budget: int, interval: float, jitter: float, *, hours: float = 16, seed: int = 1
) -> dict[str, float]:
    """One fleet on one budget (see the module docstring)."""
    rng = random.Random(seed)  # noqa: S311 - spreads the jitter, not secrets
    now = [0.0]
    gate = WeightBudget({"binance": ExchangeLimits(budget)}, monotonic=lambda: now[0])
    every = interval - jitter
    plan = SparePlan(keys * MANDATORY * 60 / every, keys, keys * EXTRAS * 60 / every)
    gate.spare_extras_for(lambda _exchange: 0, lambda _exchange: plan)
    audits: list[tuple[float, int]] = []
    for key in range(keys):
        start = phase(f"k{key:04d}")
        step = 0
        while (at := (start + step) * every + rng.random() * jitter) < hours * 3600:
            audits.append((at, key))
            step += 1
    audits.sort()
    last: dict[int, float] = {}
    gaps: list[float] = []
    reads = waited = 0
    for at, key in audits:
        now[0] = at
        if gate.try_grant("binance", MANDATORY) != 0.0:
            waited += 1
            continue
        async with gate.extras("binance", EXTRAS, f"k{key:04d}") as granted:
            if granted:
                reads += 1
                if key in last and at > 2 * 3600:
                    gaps.append(at - last[key])
                last[key] = at
    gaps.sort()
    return {
        "restriction_weight_per_min": plan.load,
        "spare_share": (1 - EXTRAS_HEADROOM) * budget - plan.load,
        "restriction_reads_waited": waited,
        "trading_reads_per_min": reads / (hours * 60),
        "keys_never_read": keys - len(last),
        "gap_median_min": statistics.median(gaps) / 60 if gaps else 0.0,
        "gap_p95_min": gaps[int(len(gaps) * 0.95)] / 60 if gaps else 0.0,
        "gap_max_min": gaps[-1] / 60 if gaps else 0.0,
    }


def auto_interval(keys: int, budget: int) -> tuple[float, float]:
    """``interval: auto`` for Binance keys (no fixed-interval keys), and its jitter (the
    default ``audit.jitter`` of 10 s or 5 % of the interval, whichever is shorter)."""
    interval = max(10.0, keys * MANDATORY / (budget * AUTO_BUDGET_SHARE) * 60)
    return interval, min(10.0, interval * AUTO_JITTER_SHARE)


def main() -> None:
    scenarios = [
        ("1,000 keys, 5m, 1,200/min", 1000, 1200, 300.0, 10.0),
        ("1,000 keys, auto, 1,200/min", 1000, 1200, *auto_interval(1000, 1200)),
        ("1,000 keys, auto, 2,400/min", 1000, 2400, *auto_interval(1000, 2400)),
    ]
    for title, keys, budget, interval, jitter in scenarios:
        result = asyncio.run(scenario(keys, budget, interval, jitter))
        figures = ", ".join(f"{name} {value:.1f}" for name, value in result.items())
        print(f"{title} (interval {interval:.1f} s, jitter {jitter:.1f} s): {figures}")


if __name__ == "__main__":
    main()
