"""The weight budget: keymon spends at most its share of an exchange's per-IP rate limit.

keymon shares its egress IP, and so the exchange's per-IP limit, with the trading bots; the
bots come first. :class:`WeightBudget` is the :class:`~keymon.exchanges.base.RequestGate`
every adapter passes each request through:

* **Own budget.** At most ``max_weight_per_minute`` weight is spent in any sliding 60 s
  window (so in any of the exchange's fixed minute windows too). A request that would exceed
  it waits for the oldest spend to age out.
* **The IP's load.** After every response the used-weight header (``X-SAPI-USED-IP-WEIGHT-1M``
  and kin) says what the whole IP, bots included, has spent this minute. Past
  ``backoff_ratio`` of the exchange's limit keymon sends nothing more until the exchange's
  minute window turns.
* **429.** Nothing is sent before ``Retry-After`` has elapsed.
* **418.** While the ban lasts nothing at all is sent to that exchange: requests fail at once
  with reason ``banned``, without touching the network.
* **Whole audits.** An audit that takes several requests (Gate: the key's detail, then its
  permissions) is granted its whole weight before its first request (:meth:`audit_scope`).
  Requests leave in the order they asked, so granting per request would let every audit's
  first request spend the budget while the second requests starve: audits half done, none
  complete.

A request that would have to wait longer than ``max_wait`` fails at once with
``rate_limited`` instead of queueing: the key's metrics then say it could not be audited in
time, and its next scheduled audit tries again. Nothing is dropped silently.

Time is injected (``clock`` for wall time, ``monotonic`` and ``sleep`` for waiting), so tests
drive it without real sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx
import structlog

from keymon.errors import ExchangeRateLimited
from keymon.exchanges.base import Clock, RequestGate, parse_retry_after
from keymon.model import Reason

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
WINDOW = 60.0
#: Pause when the IP as a whole has used this share of the exchange's limit.
DEFAULT_BACKOFF_RATIO = 0.8
#: Retry-After to assume when a 429 or 418 arrives without one.
DEFAULT_RETRY_AFTER = 60.0
#: Weight already granted to the audit running in this task, per exchange (audit_scope).
_prepaid: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "keymon_prepaid_weight", default=None
)


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    """One exchange's side of the budget."""

    max_weight_per_minute: int
    #: used-weight header -> the exchange's per-IP limit behind it.
    ip_limits: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _State:
    limits: ExchangeLimits
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic, weight)
    spent_total: int = 0
    blocked_until: float = 0.0  # monotonic: 429 or IP near its limit
    banned_until: float = 0.0  # monotonic: 418
    block_reason: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    weight_sent: int = 0  # lifetime, for benchmarks and tests
    count_429: int = 0
    count_418: int = 0


class WeightBudget(RequestGate):
    """Per-exchange rate budget (see the module docstring)."""

    def __init__(
        self,
        limits: Mapping[str, ExchangeLimits],
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_wait: float = 60.0,
        backoff_ratio: float = DEFAULT_BACKOFF_RATIO,
    ) -> None:
        self._states = {name: _State(lim) for name, lim in limits.items()}
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.max_wait = max_wait
        self._backoff_ratio = backoff_ratio

    def update_limits(self, limits: Mapping[str, ExchangeLimits]) -> None:
        """Apply new limits (on reload), keeping what was spent and any block or ban."""
        for name, lim in limits.items():
            if name in self._states:
                self._states[name].limits = lim
            else:
                self._states[name] = _State(lim)

    def stats(self, exchange: str) -> dict[str, float]:
        """Lifetime counters of one exchange, for benchmarks and tests."""
        state = self._states[exchange]
        return {
            "weight_sent": state.weight_sent,
            "count_429": state.count_429,
            "count_418": state.count_418,
        }

    def banned(self, exchange: str) -> bool:
        """True while a 418 ban on this exchange lasts."""
        state = self._states.get(exchange)
        return state is not None and self._monotonic() < state.banned_until

    @contextlib.asynccontextmanager
    async def audit_scope(self, exchange: str, weight: int) -> AsyncIterator[None]:
        await self.acquire(exchange, weight)
        token = _prepaid.set({exchange: weight})
        try:
            yield
        finally:
            _prepaid.reset(token)

    async def acquire(self, exchange: str, weight: int) -> None:
        state = self._states.get(exchange)
        if state is None:
            return
        prepaid = _prepaid.get()
        if prepaid is not None and prepaid.get(exchange, 0) >= weight:
            # Granted with the audit's whole weight (audit_scope); a ban still stops it.
            prepaid[exchange] -= weight
            if self._monotonic() < state.banned_until:
                raise ExchangeRateLimited(
                    f"{exchange}: not sent: the exchange banned this IP (418)",
                    exchange=exchange,
                    reason=Reason.BANNED,
                    retry_after=state.banned_until - self._monotonic(),
                )
            return
        # One waiter at a time per exchange: requests leave in the order they asked.
        async with state.lock:
            while True:
                now = self._monotonic()
                if now < state.banned_until:
                    raise ExchangeRateLimited(
                        f"{exchange}: not sent: the exchange banned this IP (418) for another "
                        f"{math.ceil(state.banned_until - now)} s",
                        exchange=exchange,
                        reason=Reason.BANNED,
                        retry_after=state.banned_until - now,
                    )
                wait = self._wait_needed(state, weight, now)
                if wait <= 0:
                    break
                if wait > self.max_wait:
                    raise ExchangeRateLimited(
                        f"{exchange}: not sent: {state.block_reason or 'weight budget spent'}; "
                        f"next slot in {math.ceil(wait)} s",
                        exchange=exchange,
                        retry_after=wait,
                    )
                await self._sleep(wait)
            state.spent.append((self._monotonic(), weight))
            state.spent_total += weight
            state.weight_sent += weight

    def _wait_needed(self, state: _State, weight: int, now: float) -> float:
        while state.spent and state.spent[0][0] <= now - WINDOW:
            _, old = state.spent.popleft()
            state.spent_total -= old
        if now < state.blocked_until:
            return state.blocked_until - now
        state.block_reason = ""
        budget = state.limits.max_weight_per_minute
        if state.spent_total + weight <= budget:
            return 0.0
        # Wait until enough of the oldest spends leave the window.
        excess = state.spent_total + weight - budget
        for at, spent in state.spent:
            excess -= spent
            if excess <= 0:
                return at + WINDOW - now
        return WINDOW

    def observe(self, exchange: str, response: httpx.Response) -> None:
        state = self._states.get(exchange)
        if state is None:
            return
        now = self._monotonic()
        status = response.status_code
        if status in (418, 429):
            retry = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
            retry = DEFAULT_RETRY_AFTER if retry is None else retry
            if status == 418:
                state.count_418 += 1
                state.banned_until = max(state.banned_until, now + retry)
                log.error("exchange_ban", exchange=exchange, retry_after=retry)
            else:
                state.count_429 += 1
                state.blocked_until = max(state.blocked_until, now + retry)
                state.block_reason = "the exchange answered 429"
                log.warning("exchange_rate_limited", exchange=exchange, retry_after=retry)
            return
        for header, limit in state.limits.ip_limits.items():
            value = response.headers.get(header)
            if value is None or not value.isdigit():
                continue
            if int(value) >= limit * self._backoff_ratio:
                # The IP as a whole (bots included) is near its limit: leave the rest of this
                # minute window to the bots.
                wall = self._clock()
                pause = WINDOW - (wall % WINDOW)
                if now + pause > state.blocked_until:
                    state.blocked_until = now + pause
                    state.block_reason = f"the IP has used {value}/{limit} weight this minute"
                    log.warning(
                        "exchange_ip_weight_high",
                        exchange=exchange,
                        used=int(value),
                        limit=limit,
                        pause_s=round(pause, 1),
                    )
