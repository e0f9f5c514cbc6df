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
* **Whole audits.** An audit that takes several requests (the key's detail, then its
  permissions, say) is granted its whole weight before its first request (:meth:`audit_scope`).
  Requests leave in the order they asked, so granting per request would let every audit's
  first request spend the budget while the second requests starve: audits half done, none
  complete.

* **Extras from spare budget.** An audit's optional reads (Binance's trading status) come
  after its mandatory ones, the key's restrictions, which are what keymon is for. In the
  daemon (:meth:`spare_extras_for`) :meth:`extras` grants them only at once, never by
  waiting, and only while the grant leaves free :data:`EXTRAS_HEADROOM` of the budget (for
  retries, clock syncs, reloads) plus the weight of the first-round audits still to come, so
  extras never slow the first round; otherwise the audit skips them. Nor may the extras in
  the window exceed the *spare share*: the budget less the headroom less the restriction
  reads planned per minute (every key's mandatory weight over its interval). Without that
  cap, extras granted into a quiet window (right after the first round's spends age out)
  would hold weight for a minute that the next restriction reads need, and delay them.
  And where the share cannot serve every audit, it goes round: a key whose extras were
  granted less than
  :data:`EXTRAS_ROTATION` of a round ago (``keys * weight / share`` minutes) is skipped, so
  the grants go to the keys read longest ago, not always to the same ones (those whose
  audits happen to fall where the window is a little emptier).
  ``keymon check`` pays them as part of the audit's grant.

A request that would have to wait longer than ``max_wait`` fails at once with
``rate_limited`` instead of queueing: the key's metrics then say it could not be audited in
time, and its next scheduled audit tries again. Nothing is dropped silently.

**Across processes** (:class:`BanFile`). The end of a 418 ban and of a 429's ``Retry-After``
is written to ``data_dir/bans.json``, and read back by every keymon process on that
``data_dir`` (the daemon re-reads it when it changes), so a ban the daemon saw stops a later
``keymon check`` before it sends anything, and a ban a check saw stops the daemon. A 429 window
another process recorded is waited out by the daemon like its own, but fails a ``check`` at
once (``wait_for_recorded=False``): the process that got the 429 resumes when it ends, and two
resuming at the same moment would hit the limit together. The file is advisory: unreadable or
unwritable, keymon logs a warning and keeps what it saw itself in memory. Only bans and
429 windows are shared, not the weight each process spent.

Time is injected (``clock`` for wall time, ``monotonic`` and ``sleep`` for waiting), so tests
drive it without real sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from keymon.errors import ExchangeRateLimited
from keymon.exchanges import EXCHANGES
from keymon.exchanges.base import Clock, RequestGate, parse_retry_after
from keymon.model import Reason

if TYPE_CHECKING:
    from keymon.config import Settings

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
WINDOW = 60.0
#: Pause when the IP as a whole has used this share of the exchange's limit.
DEFAULT_BACKOFF_RATIO = 0.8
#: Retry-After to assume when a 429 or 418 arrives without one.
DEFAULT_RETRY_AFTER = 60.0
#: Ban/429/budget waits longer than this fail the request at once instead of queueing (the
#: daemon lowers it to its shortest audit interval; ``keymon check`` uses it as is).
MAX_BUDGET_WAIT = 60.0
#: The share of an exchange's budget an audit's optional reads (extras) always leave free, for
#: retries, clock syncs and reloads (see the module docstring).
EXTRAS_HEADROOM = 0.10
#: A key's extras are granted again only after this share of a round (the time the spare
#: share takes to serve every key of the exchange once): the share goes round the keys.
EXTRAS_ROTATION = 0.8
#: The file in ``data_dir`` where bans and 429 windows are shared between keymon processes.
BAN_FILE_NAME = "bans.json"
#: How often a running process looks whether another one recorded a ban (one ``stat``).
BAN_FILE_POLL = 1.0
#: A recorded end this much later than what this process knows counts as news.
_RECORDED_SLACK = 0.5
#: Weight already granted to the audit running in this task, per exchange (audit_scope).
_prepaid: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "keymon_prepaid_weight", default=None
)


@dataclass(frozen=True, slots=True)
class SparePlan:
    """What the daemon plans for one exchange, for its extras (WeightBudget.extras)."""

    #: The mandatory weight per minute its keys' timetables spend (weight / grid period).
    load: float = 0.0
    #: How many keys it has.
    keys: int = 0
    #: The optional reads' weight per minute if every audit made them.
    extras: float = 0.0


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    """One exchange's side of the budget."""

    max_weight_per_minute: int
    #: used-weight header -> the exchange's per-IP limit behind it.
    ip_limits: Mapping[str, int] = field(default_factory=dict)


def limits_for(settings: Settings) -> dict[str, ExchangeLimits]:
    """The budget (``exchanges.<name>.max_weight_per_minute``) and the per-IP limits behind
    the used-weight headers of every exchange the configuration uses (those its model has: its
    keys' exchanges, at least; a reload that adds one adds its limits)."""
    return {
        name: ExchangeLimits(
            settings.exchanges.for_exchange(name).max_weight_per_minute,
            EXCHANGES[name].ip_limit_headers,
        )
        for name in type(settings.exchanges).model_fields
    }


@dataclass(slots=True)
class _State:
    limits: ExchangeLimits
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic, weight)
    spent_total: int = 0
    blocked_until: float = 0.0  # monotonic: 429 or IP near its limit
    banned_until: float = 0.0  # monotonic: 418
    block_reason: str = ""
    #: The block or ban was recorded by another keymon process (the ban file), not seen here.
    block_recorded: bool = False
    ban_recorded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The extras' own spends in the window (also in ``spent``): they may not exceed the
    #: spare share (WeightBudget.extras).
    extras: deque[tuple[float, int]] = field(default_factory=deque)
    extras_total: int = 0
    weight_sent: int = 0  # lifetime, for benchmarks and tests
    count_429: int = 0
    count_418: int = 0


# --------------------------------------------------------------------------- the ban file


@dataclass(frozen=True, slots=True)
class RecordedBlock:
    """One exchange's entry in the ban file: wall-clock ends in Unix seconds, 0 for none."""

    banned_until: float = 0.0
    rate_limited_until: float = 0.0

    def merged(self, other: RecordedBlock) -> RecordedBlock:
        """The later end of each kind."""
        return RecordedBlock(
            max(self.banned_until, other.banned_until),
            max(self.rate_limited_until, other.rate_limited_until),
        )


class BanFile:
    """``data_dir/bans.json``: when each exchange's 418 ban and 429 window end, shared by every
    keymon process on that ``data_dir`` (the daemon and any number of ``keymon check`` runs)::

        {"version": 1, "exchanges": {"<name>": {"banned_until": "2026-11-24T10:15:00.000Z",
                                                "rate_limited_until": null}}}

    The file is written whole to a temporary file beside it and renamed over it, so a reader
    sees the old or the new file, never half of one. It takes no lock: each writer merges what
    it reads first (the later end wins), and two writers at the same instant can lose one
    entry, which that writer's own process still honours in memory. A missing file means no
    ban; an unreadable or corrupt one is logged and read as no ban; a ``data_dir`` that cannot
    be written is logged once, and the ban is still honoured by the process that saw it.
    """

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        #: (inode, mtime, size) of the version last read or written by this process.
        self._seen: tuple[int, int, int] | None = None
        self._write_warned = False

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """Whether the file differs from the version this process last read or wrote."""
        return self._signature() != self._seen

    def read(self) -> dict[str, RecordedBlock]:
        """Every exchange's recorded ends; empty when the file is missing or unusable."""
        self._seen = self._signature()
        return self._load()

    def _load(self) -> dict[str, RecordedBlock]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            self._unreadable(_os_detail(exc))
            return {}
        try:
            return _parse_bans(json.loads(text))
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            self._unreadable(str(exc))
            return {}

    def _unreadable(self, detail: str) -> None:
        log.warning(
            "ban_file_unreadable",
            path=str(self.path),
            error=detail,
            detail="read as no ban; it is replaced when the next ban or 429 is recorded",
        )

    def record(self, exchange: str, block: RecordedBlock, *, now: float) -> None:
        """Merge ``block`` into the file (the later end wins); ends already past are dropped."""
        blocks = self._load()
        blocks[exchange] = blocks.get(exchange, RecordedBlock()).merged(block)
        entries: dict[str, dict[str, str | None]] = {}
        for name, entry in sorted(blocks.items()):
            banned = _rfc3339(entry.banned_until) if entry.banned_until > now else None
            limited = _rfc3339(entry.rate_limited_until) if entry.rate_limited_until > now else None
            if banned or limited:
                entries[name] = {"banned_until": banned, "rate_limited_until": limited}
        text = json.dumps({"version": self.VERSION, "exchanges": entries}, indent=2) + "\n"
        try:
            self._replace(text)
        except OSError as exc:
            if not self._write_warned:
                self._write_warned = True
                log.warning(
                    "ban_file_unwritable",
                    path=str(self.path),
                    error=_os_detail(exc),
                    detail="the ban is honoured by this process only",
                )
            return
        self._seen = self._signature()

    def _replace(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _parse_bans(data: Any) -> dict[str, RecordedBlock]:
    if not isinstance(data, dict) or not isinstance(data.get("exchanges"), dict):
        raise TypeError('not an object with an "exchanges" object')
    blocks = {}
    for name, entry in data["exchanges"].items():
        if not isinstance(entry, dict):
            raise TypeError(f"exchanges.{name}: not an object")
        blocks[name] = RecordedBlock(
            _parse_end(entry.get("banned_until"), f"exchanges.{name}.banned_until"),
            _parse_end(entry.get("rate_limited_until"), f"exchanges.{name}.rate_limited_until"),
        )
    return blocks


def _parse_end(value: Any, where: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise TypeError(f"{where}: not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where}: no time zone")
    return moment.timestamp()


def _rfc3339(unix: float, *, ms: bool = True) -> str:
    moment = datetime.fromtimestamp(unix, tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if ms else "seconds")
    return text.replace("+00:00", "Z")


def _os_detail(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


# --------------------------------------------------------------------------- the budget


class WeightBudget(RequestGate):
    """Per-exchange rate budget (see the module docstring)."""

    def __init__(
        self,
        limits: Mapping[str, ExchangeLimits],
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_wait: float = MAX_BUDGET_WAIT,
        backoff_ratio: float = DEFAULT_BACKOFF_RATIO,
        ban_file: BanFile | None = None,
        wait_for_recorded: bool = True,
    ) -> None:
        self._states = {name: _State(lim) for name, lim in limits.items()}
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.max_wait = max_wait
        self._backoff_ratio = backoff_ratio
        self._ban_file = ban_file
        self._wait_for_recorded = wait_for_recorded
        self._next_poll = 0.0
        #: exchange -> weight of its first-round audits not yet granted (the scheduler's).
        self._first_round: Callable[[str], int] | None = None
        #: exchange -> the mandatory weight per minute its keys' timetables spend, and keys.
        self._planned: Callable[[str], SparePlan] | None = None
        #: (exchange, key) -> when its extras were last granted (monotonic; the rotation).
        self._extras_granted: dict[tuple[str, str], float] = {}
        if ban_file is not None:
            self._apply_recorded(ban_file.read())
            self._next_poll = self._monotonic() + BAN_FILE_POLL

    def update_limits(self, limits: Mapping[str, ExchangeLimits]) -> None:
        """Apply new limits (on reload), keeping what was spent and any block or ban."""
        for name, lim in limits.items():
            if name in self._states:
                self._states[name].limits = lim
            else:
                self._states[name] = _State(lim)
        if self._ban_file is not None:
            self._apply_recorded(self._ban_file.read())

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
        prepaid = _prepaid.get()
        if prepaid is not None and prepaid.get(exchange, 0) >= weight:
            yield  # the scheduler granted the whole audit already (try_grant, prepaid)
            return
        await self.acquire(exchange, weight)
        token = _prepaid.set({exchange: weight})
        try:
            yield
        finally:
            _prepaid.reset(token)

    def spare_extras_for(
        self, first_round: Callable[[str], int], planned: Callable[[str], SparePlan]
    ) -> None:
        """Pay optional reads from spare budget only (the daemon), leaving free the headroom
        and ``first_round(exchange)`` (the weight of that exchange's first-round audits still
        waiting for their grant), within the spare share left by ``planned(exchange)`` (the
        mandatory weight per minute its keys' timetables spend), round the keys."""
        self._first_round = first_round
        self._planned = planned
        self.spare_extras = True

    @contextlib.asynccontextmanager
    async def extras(
        self, exchange: str, weight: int, key: str | None = None
    ) -> AsyncIterator[bool]:
        if not self.spare_extras or weight <= 0:
            yield True  # part of the audit: its grant (audit_scope) or its requests pay
            return
        state = self._states.get(exchange)
        keep_free, share = 0.0, None
        if state is not None:
            budget = state.limits.max_weight_per_minute
            keep_free = EXTRAS_HEADROOM * budget
            if self._first_round is not None:
                keep_free += self._first_round(exchange)
            if self._planned is not None:
                plan = self._planned(exchange)
                share = (1 - EXTRAS_HEADROOM) * budget - plan.load
                # The share goes round only when it cannot serve every audit.
                tight = 0 < share < plan.extras
                if (
                    tight
                    and key is not None
                    and not self._extras_due(
                        exchange, key, EXTRAS_ROTATION * plan.keys * weight / share * WINDOW
                    )
                ):
                    yield False
                    return
        if not self.try_extra(exchange, weight, keep_free, share=share):
            yield False
            return
        if key is not None:
            self._extras_granted[(exchange, key)] = self._monotonic()
        token = _prepaid.set({exchange: weight})
        try:
            yield True
        finally:
            _prepaid.reset(token)

    def _extras_due(self, exchange: str, key: str, min_age: float) -> bool:
        """Whether ``key``'s extras were last granted at least ``min_age`` seconds ago."""
        last = self._extras_granted.get((exchange, key))
        return last is None or self._monotonic() - last >= min_age

    def forget_extras(self, names: Iterable[str]) -> None:
        """Drop the rotation's record of these keys (removed by a reload)."""
        gone = set(names)
        for pair in [p for p in self._extras_granted if p[1] in gone]:
            del self._extras_granted[pair]

    def try_extra(
        self, exchange: str, weight: int, keep_free: float, *, share: float | None = None
    ) -> bool:
        """Grant ``weight`` of optional reads now, if that leaves ``keep_free`` of the budget
        unspent in the window and keeps the extras in the window within ``share`` (None: no
        such cap); never waits. False: skip them (also during a block or ban)."""
        state = self._states.get(exchange)
        if state is None:
            return True  # no budget for this exchange: nothing to protect
        self._poll_ban_file()
        now = self._monotonic()
        if now < state.banned_until:
            return False
        if self._wait_needed(state, 0, now) > 0:  # a 429 window, or the IP near its limit
            return False
        if state.spent_total + weight + keep_free > state.limits.max_weight_per_minute:
            return False
        while state.extras and state.extras[0][0] <= now - WINDOW:
            state.extras_total -= state.extras.popleft()[1]
        if share is not None and state.extras_total + weight > share:
            return False
        state.spent.append((now, weight))
        state.spent_total += weight
        state.extras.append((now, weight))
        state.extras_total += weight
        state.weight_sent += weight
        return True

    def try_grant(self, exchange: str, weight: int) -> float | None:
        """For the scheduler: grant ``weight`` now if keymon's own budget has room.

        Returns 0.0 when granted (spent now; run the audit under :meth:`prepaid`), the
        seconds to wait before asking again when the budget or a short block (429, the IP
        near its limit) holds it back, or None when the audit should go out ungranted: a ban,
        or a block longer than ``max_wait``, which the audit's own request then reports at
        once (``banned``, ``rate_limited``), as it would without the scheduler.
        """
        state = self._states.get(exchange)
        if state is None:
            return None
        self._poll_ban_file()
        now = self._monotonic()
        if now < state.banned_until:
            return None
        wait = self._wait_needed(state, weight, now)
        if wait > 0:
            blocked = now < state.blocked_until
            recorded = state.block_recorded and not self._wait_for_recorded
            if blocked and (wait > self.max_wait or recorded):
                return None
            return wait
        state.spent.append((now, weight))
        state.spent_total += weight
        state.weight_sent += weight
        return 0.0

    @staticmethod
    @contextlib.contextmanager
    def prepaid(exchange: str, weight: int) -> Iterator[None]:
        """Within this block (and the tasks it starts), ``weight`` granted by
        :meth:`try_grant` pays for the audit's requests."""
        token = _prepaid.set({exchange: weight})
        try:
            yield
        finally:
            _prepaid.reset(token)

    async def acquire(self, exchange: str, weight: int) -> None:
        state = self._states.get(exchange)
        if state is None:
            return
        self._poll_ban_file()
        prepaid = _prepaid.get()
        if prepaid is not None and prepaid.get(exchange, 0) >= weight:
            # Granted with the audit's whole weight (audit_scope); a ban still stops it.
            prepaid[exchange] -= weight
            now = self._monotonic()
            if now < state.banned_until:
                raise self._banned(exchange, state, now)
            return
        # One waiter at a time per exchange: requests leave in the order they asked.
        async with state.lock:
            while True:
                now = self._monotonic()
                if now < state.banned_until:
                    raise self._banned(exchange, state, now)
                wait = self._wait_needed(state, weight, now)
                if wait <= 0:
                    break
                # A 429 window another process recorded: that process resumes when it ends;
                # resuming here at the same moment would hit the limit together (check).
                recorded = state.block_recorded and not self._wait_for_recorded
                if wait > self.max_wait or recorded:
                    raise ExchangeRateLimited(
                        f"{exchange}: not sent: {state.block_reason or 'weight budget spent'}; "
                        f"next slot at {self._until(now + wait, now)} (in {math.ceil(wait)} s)"
                        + self._recorded_note(state.block_recorded and now < state.blocked_until),
                        exchange=exchange,
                        retry_after=wait,
                    )
                await self._sleep(wait)
                self._poll_ban_file()  # another process may have seen a ban meanwhile
            state.spent.append((self._monotonic(), weight))
            state.spent_total += weight
            state.weight_sent += weight

    def _banned(self, exchange: str, state: _State, now: float) -> ExchangeRateLimited:
        return ExchangeRateLimited(
            f"{exchange}: not sent: the exchange banned this IP (418) until "
            f"{self._until(state.banned_until, now)} (another "
            f"{math.ceil(state.banned_until - now)} s)" + self._recorded_note(state.ban_recorded),
            exchange=exchange,
            reason=Reason.BANNED,
            retry_after=state.banned_until - now,
        )

    def _until(self, end: float, now: float) -> str:
        """A monotonic instant as RFC 3339 wall time, to the second."""
        return _rfc3339(self._clock() + (end - now), ms=False)

    def _recorded_note(self, recorded: bool) -> str:
        if not recorded or self._ban_file is None:
            return ""
        return f"; recorded by an earlier keymon run in {self._ban_file.path}"

    def _wait_needed(self, state: _State, weight: int, now: float) -> float:
        while state.spent and state.spent[0][0] <= now - WINDOW:
            _, old = state.spent.popleft()
            state.spent_total -= old
        if now < state.blocked_until:
            return state.blocked_until - now
        state.block_reason = ""
        state.block_recorded = False
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
            wall = self._clock()
            retry = parse_retry_after(response.headers.get("Retry-After"), now=wall)
            retry = DEFAULT_RETRY_AFTER if retry is None else retry
            until = _rfc3339(wall + retry, ms=False)
            if status == 418:
                state.count_418 += 1
                if now + retry >= state.banned_until:
                    state.banned_until = now + retry
                    state.ban_recorded = False
                log.error("exchange_ban", exchange=exchange, retry_after=retry, until=until)
                self._record(exchange, RecordedBlock(banned_until=wall + retry), wall)
            else:
                state.count_429 += 1
                if now + retry >= state.blocked_until:
                    state.blocked_until = now + retry
                    state.block_reason = "the exchange answered 429"
                    state.block_recorded = False
                log.warning(
                    "exchange_rate_limited", exchange=exchange, retry_after=retry, until=until
                )
                self._record(exchange, RecordedBlock(rate_limited_until=wall + retry), wall)
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
                    state.block_recorded = False
                    log.warning(
                        "exchange_ip_weight_high",
                        exchange=exchange,
                        used=int(value),
                        limit=limit,
                        pause_s=round(pause, 1),
                    )

    # ------------------------------------------------------------------ the ban file

    def _record(self, exchange: str, block: RecordedBlock, wall: float) -> None:
        if self._ban_file is not None:
            self._ban_file.record(exchange, block, now=wall)

    def _poll_ban_file(self) -> None:
        """Every :data:`BAN_FILE_POLL` seconds at most: has another process recorded a ban?"""
        if self._ban_file is None:
            return
        now = self._monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + BAN_FILE_POLL
        if self._ban_file.changed():
            self._apply_recorded(self._ban_file.read())

    def _apply_recorded(self, blocks: Mapping[str, RecordedBlock]) -> None:
        """Adopt the ends another process recorded where they outlast what this one knows."""
        wall, now = self._clock(), self._monotonic()
        for name, block in blocks.items():
            state = self._states.get(name)
            if state is None:
                continue
            banned = now + (block.banned_until - wall)
            if banned > now and banned > state.banned_until + _RECORDED_SLACK:
                state.banned_until = banned
                state.ban_recorded = True
                log.warning(
                    "exchange_ban_recorded",
                    exchange=name,
                    until=_rfc3339(block.banned_until, ms=False),
                    path=str(self._ban_file.path) if self._ban_file else None,
                )
            limited = now + (block.rate_limited_until - wall)
            if limited > now and limited > state.blocked_until + _RECORDED_SLACK:
                state.blocked_until = limited
                state.block_reason = "the exchange answered 429"
                state.block_recorded = True
                log.warning(
                    "exchange_rate_limited_recorded",
                    exchange=name,
                    until=_rfc3339(block.rate_limited_until, ms=False),
                    path=str(self._ban_file.path) if self._ban_file else None,
                )
