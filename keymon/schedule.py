"""The audit scheduler: one due-queue per exchange, drained as fast as the weight budget allows.

Each exchange has a *lane*: a heap of ``(due, name)`` entries and one task that pops the
earliest, waits for a free slot (at most :data:`PER_EXCHANGE_CONCURRENCY` audits of the
exchange in flight), asks the budget for the audit's weight
(:meth:`~keymon.budget.WeightBudget.try_grant`) and starts the audit. A key costs one heap
entry and one small dict entry, whatever the fleet size (no job object per key).

**First round.** A key not yet audited by this process (at start, or added by a reload) is due
at once, in the configuration's order. So the first round goes out as fast as keymon's own
budget allows: 1,000 Binance keys under the default 1,200 weight/min are all audited within
seconds, and a round larger than the budget continues as the sliding window frees.

**Extras wait for the first round.** :meth:`AuditScheduler.first_round_weight` is the weight
of an exchange's first-round audits not yet granted; the budget keeps it free of optional
reads (Binance's trading status: :meth:`~keymon.budget.WeightBudget.extras`), so every key's
restrictions are read before any spare weight goes to extras.

**Periods.** A key's later audits sit on a grid, ``anchor + (phase + m) * every``, where
``phase`` in [0, 1) comes from a hash of its name (stable across restarts, spread evenly),
``every = interval - jitter``, and each run is delayed by a random share of ``jitter``: keys
are spread over the interval and no two audits of a key are more than ``interval`` apart. After
the first audit the next grid point less than half a period away is skipped (no audit twice in
a row right at start), so the first gap is at most ``1.5 * every + jitter``.

**Late runs.** When the budget holds audits back (more keys than it allows per interval), the
lane runs them in due order as weight frees; a key whose next grid point has already passed
when it runs goes to the first grid point after now (missed runs are not made up). A key still
being audited when its next run is due skips that run.

**Reloads.** New keys (or keys with new credentials) join the first round; removed keys are
dropped when their entry comes up; a kept key whose interval or jitter changed (``auto``
intervals change with the number of keys) moves to its new grid at once, unless its first
audit is still to come (:meth:`reschedule`, called by the app for audited keys only).

**Bans and long blocks.** During a 418 ban, or a 429 window longer than the budget's
``max_wait``, due audits still start, ungranted: their first request fails at once with
``banned`` or ``rate_limited`` (recorded, as without the scheduler; ``audit_failing`` follows
after three intervals). Shorter blocks are waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from keymon.budget import WeightBudget

log = structlog.get_logger(__name__)

#: At most this many audits of one exchange are in flight at once.
PER_EXCHANGE_CONCURRENCY = 32
#: The longest a lane sleeps before looking at its queue again (new entries also wake it).
MAX_IDLE = 5.0


def phase(name: str) -> float:
    """A stable fraction in [0, 1) for a key name: where in the interval it is audited."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What the scheduler needs to know of a key when it is due (asked afresh every time)."""

    exchange: str
    interval: float  # seconds
    jitter: float  # seconds
    weight: int  # budget weight of one audit


#: ``name -> KeyPlan``, or None once the key is no longer configured.
Planner = Callable[[str], KeyPlan | None]
Runner = Callable[[str], Coroutine[Any, Any, Any]]


@dataclass(slots=True)
class _Lane:
    heap: list[tuple[float, int, str, float, int]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(PER_EXCHANGE_CONCURRENCY)
    )
    task: asyncio.Task[None] | None = None


class AuditScheduler:
    """Runs every key's audits (see the module docstring). ``start()``, then ``schedule()``."""

    def __init__(
        self,
        run: Runner,
        plan: Planner,
        budget: WeightBudget,
        *,
        concurrency: int = PER_EXCHANGE_CONCURRENCY,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._run = run
        self._plan = plan
        self._budget = budget
        self._concurrency = concurrency
        self._rng = rng
        self._lanes: dict[str, _Lane] = {}
        #: name -> generation of its live heap entry; older entries are skipped when popped.
        self._gen: dict[str, int] = {}
        self._seq = itertools.count()
        self._in_flight: dict[str, asyncio.Task[Any]] = {}
        #: name -> (exchange, weight) of each key whose first-round audit is still to start,
        #: and the weights summed per exchange (first_round_weight).
        self._first: dict[str, tuple[str, int]] = {}
        self._first_weight: dict[str, int] = {}
        self._anchor = 0.0
        self.running = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._anchor = self._now()
        self.running = True
        for exchange, lane in self._lanes.items():
            self._start_lane(exchange, lane)

    def shutdown(self) -> None:
        """Stop every lane and cancel the audits in flight."""
        self.running = False
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
        for task in list(self._in_flight.values()):
            task.cancel()

    def _start_lane(self, exchange: str, lane: _Lane) -> None:
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drain(exchange, lane), name=f"audits-{exchange}")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ timetable

    def first_round(self, names: Iterable[str]) -> None:
        """Audit these keys as soon as the budget allows, in this order (new keys)."""
        now = self._now()
        for name in names:
            plan = self._plan(name)
            if plan is not None:
                self._push(name, plan, now, None)

    def reschedule(self, names: Iterable[str]) -> None:
        """Put these keys on their grid again (their interval or jitter changed)."""
        now = self._now()
        for name in names:
            plan = self._plan(name)
            if plan is not None:
                grid = self._grid_after(name, plan, now)
                self._push(name, plan, grid + self._rng() * plan.jitter, grid)

    def unschedule(self, names: Iterable[str]) -> None:
        for name in names:
            self._gen.pop(name, None)
            self._first_done(name)

    def first_round_weight(self, exchange: str) -> int:
        """The weight of ``exchange``'s first-round audits not yet started (for the budget:
        optional reads leave it free)."""
        return self._first_weight.get(exchange, 0)

    def _first_pending(self, name: str, plan: KeyPlan) -> None:
        self._first_done(name)
        self._first[name] = (plan.exchange, plan.weight)
        self._first_weight[plan.exchange] = self._first_weight.get(plan.exchange, 0) + plan.weight

    def _first_done(self, name: str) -> None:
        entry = self._first.pop(name, None)
        if entry is not None:
            exchange, weight = entry
            self._first_weight[exchange] -= weight

    def scheduled(self, name: str) -> bool:
        """Whether ``name`` has a run ahead."""
        return name in self._gen

    def due(self, name: str) -> float | None:
        """Seconds until the key's next run (event-loop time), or None if not scheduled."""
        gen = self._gen.get(name)
        for lane in self._lanes.values():
            for due, _seq, entry, _grid, entry_gen in lane.heap:
                if entry == name and entry_gen == gen:
                    return due - self._now()
        return None

    def _push(self, name: str, plan: KeyPlan, due: float, grid: float | None) -> None:
        gen = self._gen.get(name, 0) + 1
        self._gen[name] = gen
        if grid is None:
            self._first_pending(name, plan)
        else:
            self._first_done(name)
        lane = self._lanes.get(plan.exchange)
        if lane is None:
            lane = self._lanes[plan.exchange] = _Lane(slots=asyncio.Semaphore(self._concurrency))
            if self.running:
                self._start_lane(plan.exchange, lane)
        # grid: NaN marks a first-round entry (heap tuples must compare; None cannot).
        entry = (due, next(self._seq), name, math.nan if grid is None else grid, gen)
        heapq.heappush(lane.heap, entry)
        if lane.heap[0] is entry:
            lane.wake.set()

    def _grid_after(self, name: str, plan: KeyPlan, moment: float) -> float:
        """The key's first grid point after ``moment``."""
        every = _every(plan)
        offset = phase(name) * every
        steps = math.floor((moment - self._anchor - offset) / every) + 1
        return self._anchor + offset + steps * every

    def _next(self, name: str, plan: KeyPlan, grid: float, now: float) -> float:
        """The grid point of the run after one on ``grid`` (NaN: first round) started ``now``."""
        every = _every(plan)
        if math.isnan(grid):
            nxt = self._grid_after(name, plan, now)
            return nxt + every if nxt - now < every / 2 else nxt
        nxt = grid + every
        if nxt + plan.jitter < now:  # late (budget, a stalled lane): do not make runs up
            nxt = self._grid_after(name, plan, now)
        return nxt

    # ------------------------------------------------------------------ the lane

    async def _drain(self, exchange: str, lane: _Lane) -> None:
        while True:
            try:
                await self._step(exchange, lane)
            except asyncio.CancelledError:
                raise
            except Exception:  # the lane must outlive any one failure
                log.exception("scheduler_failed", exchange=exchange)
                await asyncio.sleep(1.0)

    async def _step(self, exchange: str, lane: _Lane) -> None:
        if not lane.heap:
            lane.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), MAX_IDLE)
            return
        due, _seq, name, grid, gen = lane.heap[0]
        now = self._now()
        if due > now:
            lane.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.wake.wait(), min(due - now, MAX_IDLE))
            return
        heapq.heappop(lane.heap)
        if self._gen.get(name) != gen:
            return  # unscheduled, or moved by a reload
        plan = self._plan(name)
        if plan is None:
            self._gen.pop(name, None)
            self._first_done(name)
            return
        if plan.exchange != exchange:  # the key moved to another exchange on reload
            self._push(name, plan, now, None)
            return
        await lane.slots.acquire()
        try:
            granted = await self._grant(plan)
        except BaseException:
            lane.slots.release()
            raise
        started = self._now()
        if math.isnan(grid) and self._gen.get(name) == gen:
            self._first_done(name)  # granted (or going out ungranted): no longer waiting
        nxt = self._next(name, plan, grid, started)
        if self._gen.get(name) == gen:  # still ours after waiting for the budget
            self._push(name, plan, nxt + self._rng() * plan.jitter, nxt)
        if name in self._in_flight:
            lane.slots.release()  # its previous audit still runs: skip this run
            return
        task: asyncio.Task[Any]
        if granted:
            with WeightBudget.prepaid(exchange, plan.weight):
                task = asyncio.create_task(self._run(name), name=f"audit-{name}")
        else:
            task = asyncio.create_task(self._run(name), name=f"audit-{name}")
        self._in_flight[name] = task
        task.add_done_callback(lambda t: self._finished(name, t, lane))

    async def _grant(self, plan: KeyPlan) -> bool:
        """Wait until the budget grants the audit's weight; False: start it ungranted."""
        while True:
            wait = self._budget.try_grant(plan.exchange, plan.weight)
            if wait is None:
                return False
            if wait <= 0:
                return True
            await asyncio.sleep(min(wait, MAX_IDLE))

    def _finished(self, name: str, task: asyncio.Task[Any], lane: _Lane) -> None:
        lane.slots.release()
        if self._in_flight.get(name) is task:
            del self._in_flight[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("audit_task_failed", key=name, error=repr(task.exception()))


def _every(plan: KeyPlan) -> float:
    """The grid's period: a run delayed by the full jitter still lands within the interval."""
    return max(plan.interval - plan.jitter, 0.001)
