"""The daemon: scheduled, rate-budgeted audits, the HTTP endpoints, reload and shutdown.

Wiring: one :class:`~keymon.audit.Auditor` (one guarded client and adapter per exchange),
behind one :class:`~keymon.budget.WeightBudget`; one
:class:`~keymon.schedule.AuditScheduler` (a due-queue per exchange, no job object per key);
the :class:`~keymon.store.Store` the audits write into; ``/metrics``, ``/healthz`` and
``/readyz`` reading from it.

**Schedule** (:mod:`keymon.schedule`). The first audit of every key goes out as fast as the
weight budget allows, so ``/readyz`` turns 200 as soon as the budget has granted the whole
first round. Later audits are spread over each key's interval by a stable phase from a hash of
its name, each run delayed by up to ``jitter``; no gap between two audits of a key exceeds its
interval once the first round is done. ``interval: auto`` keys are audited as often as their
exchange's budget allows (:meth:`~keymon.config.Settings.interval_for`).

**Reload** (SIGHUP, or the configuration file or a secret file changing): a new file is
validated in full; if invalid, its problems are logged, the old configuration keeps running
and ``keymon_config_last_reload_success`` drops to 0. Otherwise keys added, removed or changed
take effect at once, without a restart.

**Health.** ``/healthz`` answers 200 while the scheduler runs and, when ``notify.urls`` names
a channel, the notification delivery loop can go on (its task lives and
:meth:`~keymon.notify.Notifier.healthy`); otherwise 503 with a JSON body naming what fails
(``{"status": "unhealthy", "failing": ["notifier"], ...}``).

**Stop** (SIGTERM, SIGINT): the scheduler stops, in-flight audits are cancelled, clients and
the HTTP server close; ``keymon run`` exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from keymon import log as logging_setup
from keymon.audit import Auditor, TransportFactory
from keymon.budget import (
    BAN_FILE_NAME,
    MAX_BUDGET_WAIT,
    BanFile,
    ExchangeLimits,
    Sleep,
    SparePlan,
    WeightBudget,
    limits_for,
)
from keymon.config import LoadedConfig, Settings, key_secrets, load, parse_listen
from keymon.config_base import AUTO
from keymon.errors import ConfigError
from keymon.exchanges import COVERAGE, EXCHANGES
from keymon.exchanges.base import Clock
from keymon.metrics import AuditCollector, SelfMetrics, iter_body, render
from keymon.model import AuditResult
from keymon.notify import Notifier, Sender, apprise_send
from keymon.schedule import AuditScheduler, KeyPlan
from keymon.schedule import phase as phase
from keymon.state import DataDirLock, StateDB, StateReset, open_state
from keymon.store import Store

log = structlog.get_logger(__name__)

#: How often the configuration file (and secret files) are checked for changes.
WATCH_INTERVAL = 2.0
#: A configuration that failed to load is tried again this often while its files stay as
#: they were (quietly: only new problems are logged).
FAILED_RELOAD_RETRY = 30.0
#: The watcher hashes at most this much of each file (the loader refuses larger ones anyway).
MAX_WATCHED_BYTES = 16 * 1024 * 1024
#: How long an old client may finish its in-flight requests after a reload replaced it.
OLD_CLIENT_GRACE = 30.0


def budget(settings: Settings, exchange: str) -> int:
    """keymon's weight budget per minute on ``exchange``."""
    return settings.exchanges.for_exchange(exchange).max_weight_per_minute


def budget_limits(settings: Settings) -> dict[str, ExchangeLimits]:
    """Each exchange's weight budget and the per-IP limits behind its used-weight headers."""
    return limits_for(settings)


class App:
    """The running daemon. ``await start()``, then ``await wait()``; ``await stop()`` ends it."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        transport_factory: TransportFactory | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        watch_interval: float = WATCH_INTERVAL,
        send: Sender = apprise_send,
    ) -> None:
        self.config_path = loaded.path
        self.settings = loaded.settings
        self._transport_factory = transport_factory
        self._clock = clock
        self._monotonic = monotonic
        self._watch_interval = watch_interval
        self._stopped = asyncio.Event()
        self._fingerprint = _fingerprint(loaded)
        #: The watched files' state when a reload last failed, its problems, the next retry.
        self._failed_fingerprint: tuple[Any, ...] | None = None
        self._reload_problems: list[str] | None = None
        self._retry_at = 0.0
        #: Files seen changed at the last check, acted on once they read the same at the next.
        self._settling: tuple[Any, ...] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._self_registry = CollectorRegistry()
        self.metrics = SelfMetrics(self._self_registry, EXCHANGES)
        self.store = Store(self.settings, COVERAGE)
        # One daemon per data_dir: a second one stops here (DataDirBusy), before it binds,
        # audits or delivers anything.
        self._dir_lock = DataDirLock(self.settings.data_dir)
        previous = self._dir_lock.acquire(self.now())
        try:
            self.db, reset, remembered = open_state(
                self.settings.data_dir,
                had_state=bool(previous.get("state_created")),
                now=self.now(),
            )
            self._dir_lock.mark_state_created()
            for name, stored in remembered.items():
                self.store.restore(name, stored, self.now())
            self.notifier = Notifier(
                self.settings.notify,
                self.db,
                clock=clock,
                on_outcome=lambda outcome: self.metrics.notifications.labels(outcome).inc(),
                send=send,
            )
            if reset is not None:
                self._announce_reset(reset)
        except BaseException:
            self._dir_lock.release()
            raise
        self._deliver_task: asyncio.Task[None] | None = None
        self.collector = AuditCollector(self.store, self.settings.trusted_ips)
        self.registry.register(self._self_registry)
        self.registry.register(self.collector)
        self.budget = WeightBudget(
            budget_limits(self.settings),
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
            max_wait=min(MAX_BUDGET_WAIT, _shortest_interval(self.settings)),
            # Bans and 429 windows shared with `keymon check` runs on the same data_dir.
            ban_file=BanFile(self.settings.data_dir / BAN_FILE_NAME),
        )
        self.auditor = self._new_auditor(self.settings)
        self.scheduler = AuditScheduler(self.audit_key, self._key_plan, self.budget)
        # Optional reads (Binance's trading status) only from spare budget, never ahead of a
        # key's first audit nor into the restriction reads' planned share (keymon check pays
        # them with the audit).
        self._planned = planned_load(self.settings)
        self.budget.spare_extras_for(
            self.scheduler.first_round_weight,
            lambda exchange: self._planned.get(exchange, SparePlan()),
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        _warn_if_budget_short(self.settings)

    # ------------------------------------------------------------------ lifecycle

    def _announce_reset(self, reset: StateReset) -> None:
        """Say loudly that the state was lost: a log event, a counter, the ops channel."""
        self.metrics.state_reset.inc()
        moved = str(reset.moved_to) if reset.moved_to else None
        log.error(
            "state_reset",
            path=str(reset.path),
            moved_to=moved,
            cause=reset.cause,
            detail="a fresh state file was started: alerts already sent may be sent again, "
            "and the change journal starts empty",
        )
        lines = [
            f"keymon's state file {reset.path} could not be used and a fresh one was started.",
            f"Cause: {reset.cause}",
        ]
        if moved:
            lines.append(f"The old file was kept as {moved} (the journal before now is there).")
        lines += [
            "Consequences: alerts that were already sent may be sent again as new, reminders "
            "restart, and `keymon history` starts empty.",
            "What to do: check the disk and the volume behind data_dir; nothing else is needed, "
            "keymon is auditing every key again.",
        ]
        self.notifier.announce(
            "[WARNING] keymon: state file reset, alerts may repeat", "\n".join(lines)
        )

    def _new_auditor(self, settings: Settings) -> Auditor:
        return Auditor(
            settings,
            transport_factory=self._transport_factory,
            clock=self._clock,
            monotonic=self._monotonic,
            gate=self.budget,
            observer=self.metrics.observe_request,
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    async def start(
        self, *, serve_http: bool = True, schedule: bool = True, deliver: bool | None = None
    ) -> None:
        """Start the HTTP endpoints, the scheduler and the configuration watcher, and the
        notification delivery loop (``deliver``, by default with the scheduler)."""
        if serve_http:
            await self._start_http()
        if schedule:
            self.scheduler.start()
            self.scheduler.first_round(list(self.store.names()))
            self._watch_task = asyncio.create_task(self._watch_config(), name="config-watch")
        if deliver is None:
            deliver = schedule
        if deliver:
            self._deliver_task = asyncio.create_task(self.notifier.run(), name="notify")
            self._deliver_task.add_done_callback(self._delivery_ended)
        log.info(
            "keymon_started",
            keys=len(self.settings.keys),
            interval=_describe(self.settings.audit.interval),
            listen=self.settings.listen if serve_http else None,
            port=self.port,
        )

    def _delivery_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopped.is_set() or task.cancelled():
            return
        # Only a BaseException gets past the loop's own supervision; /healthz now says 503.
        log.error("notification_loop_ended", error=repr(task.exception()))

    def notifier_ok(self) -> bool:
        """False when notifications are configured and cannot be delivered (see /healthz)."""
        if not self.notifier.configured:
            return True
        task = self._deliver_task
        if task is not None and task.done():
            return False
        return self.notifier.healthy()

    async def wait(self) -> None:
        """Block until :meth:`stop` is called."""
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        """Stop everything: scheduler (cancelling in-flight audits), watcher, clients, HTTP."""
        self._stopped.set()
        if self.scheduler.running:
            self.scheduler.shutdown()  # cancels the running audit tasks
        for task in (self._watch_task, self._deliver_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.auditor.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        self.db.close()
        self._dir_lock.release()
        log.info("keymon_stopped")

    # ------------------------------------------------------------------ audits

    def _key_plan(self, name: str) -> KeyPlan | None:
        """What the scheduler needs of a key when it is due; None once it is removed."""
        state = self.store.get(name)
        if state is None:
            return None
        key = state.key
        return KeyPlan(
            key.exchange,
            state.interval.total_seconds(),
            self.settings.jitter_for(key).total_seconds(),
            self.settings.audit_costs(key.exchange)[0],
        )

    async def audit_key(self, name: str) -> AuditResult | None:
        """Audit one key now and record the result (the scheduler's job)."""
        state = self.store.get(name)
        if state is None:
            return None
        try:
            result = await self.auditor.audit(state.key, self.settings)
        except asyncio.CancelledError:
            if self._stopped.is_set():
                return None  # stopping: a cancelled audit is expected, not an error to log
            raise
        try:
            self._record(state.key.exchange, result)
        except Exception:  # a full disk must not kill the audit job; memory was rolled back
            log.exception("state_write_failed", key=name)
        return result

    async def audit_all(self) -> list[AuditResult]:
        """Audit every key once, through the budget (tests, and the demo's first look)."""
        results = await self.auditor.audit_all([s.key for s in self.store.snapshot()])
        for state, result in zip(self.store.snapshot(), results, strict=False):
            self._record(state.key.exchange, result)
        return results

    def _record(self, exchange: str, result: AuditResult) -> None:
        self._persist(exchange, result)
        state = self.store.get(result.key)
        if state is not None:
            # Render its series now, at audit time: scrapes then only join text.
            self.collector.render_key(state)

    def _persist(self, exchange: str, result: AuditResult) -> None:
        rollback = self.store.checkpoint(result.key)
        changes = self.store.record(result)
        state = self.store.get(result.key)
        if state is not None:
            # Facts, journal, alert state and queued notifications: one atomic write. If it
            # fails, memory goes back too, so the next audit sees (and journals) the change.
            with self.db.transaction() as conn, _undo_on_error(rollback):
                StateDB.save_key(
                    conn,
                    state.name,
                    state.last_facts,
                    state.rejected,
                    state.rejection.message if state.rejection else None,
                    state.last_success,
                    result.checked_at,
                )
                if changes:
                    StateDB.add_changes(
                        conn,
                        state.name,
                        state.key.client,
                        state.key.exchange,
                        changes,
                        result.checked_at,
                    )
                self.notifier.evaluate(conn, state, changes, result.checked_at)
        self.metrics.audit_duration.labels(exchange).observe(result.duration)
        if result.error is not None:
            self.metrics.audit_errors.labels(exchange, str(result.error.reason)).inc()
        adapter = self.auditor.adapters.get(exchange)
        if adapter is not None and adapter.weight_used is not None:
            self.metrics.weight_used.labels(exchange).set(adapter.weight_used)
        for change in changes:
            log.warning(
                "key_changed",
                key=result.key,
                field=change.field,
                before=change.before,
                after=change.after,
            )

    # ------------------------------------------------------------------ reload

    async def reload(self, *, quiet_if_unchanged: bool = False) -> bool:
        """Load the configuration file again and apply it; False (old config kept) if invalid.

        ``quiet_if_unchanged``: a retry of a file that failed before logs its problems only if
        they differ from the ones already logged.
        """
        async with self._reload_lock:
            try:
                # Off the event loop: a large file takes seconds to parse, /healthz must answer.
                loaded = await asyncio.to_thread(load, self.config_path)
            except ConfigError as exc:
                self.metrics.reload_success.set(0)
                problems = list(exc.problems)
                if not (quiet_if_unchanged and problems == self._reload_problems):
                    log.error("config_reload_failed", problems=problems)  # noqa: TRY400 - no traceback for bad input
                self._reload_problems = problems
                return False
            self._fingerprint = _fingerprint(loaded)
            self._failed_fingerprint = None
            self._reload_problems = None
            self._apply(loaded)
            self.metrics.reload_success.set(1)
            return True

    def _apply(self, loaded: LoadedConfig) -> None:
        old, new = self.settings, loaded.settings
        # Keep redacting the old secrets too: in-flight work may still log them.
        logging_setup.redactor.update(old.secret_values() | new.secret_values())
        if old.log != new.log:
            logging_setup.configure(fmt=new.log.format, level=new.log.level)
        if old.listen != new.listen:
            log.warning("listen_change_needs_restart", old=old.listen, new=new.listen)
        for warning in loaded.warnings:
            log.warning("config_warning", detail=warning)
        self.settings = new
        self._planned = planned_load(new)
        self.budget.update_limits(budget_limits(new))
        self.budget.max_wait = min(MAX_BUDGET_WAIT, _shortest_interval(new))
        if old.exchanges != new.exchanges or old.audit.timeout != new.audit.timeout:
            retired, self.auditor = self.auditor, self._new_auditor(new)
            asyncio.get_running_loop().call_later(
                OLD_CLIENT_GRACE, lambda: asyncio.ensure_future(retired.aclose())
            )
        else:
            self.auditor.settings = new
        self.notifier.configure(new.notify)
        self.collector.trusted_ips = new.trusted_ips
        self.collector.invalidate()
        before = set(self.store.names())
        fresh = self.store.configure(new, rejudge_all=old.trusted_ips != new.trusted_ips)
        after = set(self.store.names())
        removed = sorted(before - after)
        self.scheduler.unschedule(removed)
        self.budget.forget_extras(removed)
        if removed:
            self.db.forget_keys(sorted(after))
        # New keys (or new credentials): audited at once. Kept keys whose interval or jitter
        # changed (``auto`` intervals change with the number of keys): a new place on the grid,
        # unless their first audit is still to come (it stays as soon as the budget allows).
        self.scheduler.first_round(fresh)
        old_timing, new_timing = _timings(old), _timings(new)
        self.scheduler.reschedule(
            name
            for name in sorted(after & before)
            if name not in fresh
            and old_timing.get(name) != new_timing.get(name)
            and (state := self.store.get(name)) is not None
            and state.audited
        )
        log.info(
            "config_reloaded",
            keys=len(after),
            added=sorted(after - before),
            removed=removed,
            changed=sorted(set(fresh) & before),
        )

    async def _watch_config(self) -> None:
        """Every few seconds: reload if a watched file changed; re-judge stalled audits.

        A change that fails to load is logged once; the same files are not parsed again until
        one of them changes, except for a quiet retry every FAILED_RELOAD_RETRY (a secret file
        the new configuration names may have appeared since), which logs only new problems.
        Files put back as they were when the running configuration loaded end the failure.
        """
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                await self._check_watched()
                self._sweep()
            except Exception:  # the watcher must never die; the next round tries again
                log.exception("config_watch_failed")

    async def _check_watched(self) -> None:
        current = _fingerprint_paths(self._watched_paths())
        if current == self._fingerprint[1]:
            self._settling = None
            if self._failed_fingerprint is not None:
                # Back to the files the running configuration came from: nothing to reload.
                self._failed_fingerprint = None
                self._reload_problems = None
                self.metrics.reload_success.set(1)
                log.info("config_restored", path=str(self.config_path))
            return
        if current != self._failed_fingerprint:
            if current != self._settling:
                # A file being written (an editor saving in place, `echo > secret`) reads empty
                # or half-written for a moment: wait until the files read the same at two
                # checks in a row, so a write in progress is never refused as broken.
                self._settling = current
                return
            self._settling = None
            log.info("config_changed", path=str(self.config_path))
            if not await self.reload():
                self._failed_fingerprint = current
                self._retry_at = self._monotonic() + FAILED_RELOAD_RETRY
        else:
            self._settling = None
            if self._monotonic() >= self._retry_at:
                self._retry_at = self._monotonic() + FAILED_RELOAD_RETRY
                await self.reload(quiet_if_unchanged=True)

    def _sweep(self) -> None:
        now = self.now()
        for state in self.store.sweep(now):
            with self.db.transaction() as conn:
                self.notifier.evaluate(conn, state, [], now)

    def _watched_paths(self) -> list[Path]:
        return self._fingerprint[0]

    # ------------------------------------------------------------------ HTTP

    async def _start_http(self) -> None:
        host, port = parse_listen(self.settings.listen)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/", self._index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port

    def render_metrics(self) -> bytes:
        """The ``/metrics`` body, from the latest snapshot; never calls an exchange."""
        return render(self._self_registry, self.collector)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        # Streamed chunk by chunk (a generator, each chunk written before the next is built):
        # at 10,000 keys the body is tens of MB, never held whole, plain or gzipped.
        rendered = await asyncio.to_thread(self.collector.snapshot)
        response = web.StreamResponse(
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )
        compressor = None
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip, fast
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        for chunk in iter_body(self._self_registry, rendered, self.collector.chunk_keys):
            data = chunk
            if compressor is not None:
                data = await asyncio.to_thread(compressor.compress, chunk)
            del chunk
            if data:
                await response.write(data)
            del data
        if compressor is not None:
            await response.write(compressor.flush())
        await response.write_eof()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = not self._stopped.is_set() and self.scheduler.running
        if not alive:
            return web.json_response({"status": "stopping"}, status=503)
        if not self.notifier_ok():
            body = {
                "status": "unhealthy",
                "failing": ["notifier"],
                "notifier": self.notifier.health(),
            }
            return web.json_response(body, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        states = self.store.snapshot()
        pending = [s.name for s in states if not s.audited]
        if pending:
            return web.json_response(
                {"status": "starting", "audited": len(states) - len(pending), "keys": len(states)},
                status=503,
            )
        return web.json_response({"status": "ready", "keys": len(states)})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="keymon: see /metrics, /healthz, /readyz\n")


@contextlib.contextmanager
def _undo_on_error(undo: Callable[[], None]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        undo()
        raise


def _fingerprint(loaded: LoadedConfig) -> tuple[list[Path], tuple[Any, ...]]:
    """The files a configuration depends on, and their current state."""
    paths = [loaded.path]
    settings = loaded.settings
    # Every secret of every key (API key, secret, passphrase, memo, PEM) and every channel URL.
    secrets = [s for key in settings.keys for s in key_secrets(key)]
    secrets += list(settings.notify.urls)
    paths += [Path(s.origin.removeprefix("file ")) for s in secrets if s.origin.startswith("file ")]
    return paths, _fingerprint_paths(paths)


def _fingerprint_paths(paths: list[Path]) -> tuple[Any, ...]:
    """Each file's content hash; a path that is not a regular file reads as its kind, unopened.

    Never opened unless regular: a FIFO put in a secret file's place would block the watcher.
    """
    out: list[Any] = []
    for path in paths:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                out.append(("not a regular file", stat.S_IFMT(info.st_mode)))
                continue
            with path.open("rb") as handle:
                out.append(hashlib.sha256(handle.read(MAX_WATCHED_BYTES + 1)).hexdigest())
        except OSError:
            out.append(None)
    return tuple(out)


def _timings(settings: Settings) -> dict[str, tuple[timedelta, timedelta]]:
    return {
        key.name: (settings.interval_for(key), settings.jitter_for(key)) for key in settings.keys
    }


def _describe(interval: timedelta | str) -> float | str:
    return interval if isinstance(interval, str) else interval.total_seconds()


def _shortest_interval(settings: Settings) -> float:
    return min(settings.interval_for(key).total_seconds() for key in settings.keys)


def planned_load(settings: Settings) -> dict[str, SparePlan]:
    """Per exchange, the mandatory weight per minute its keys' timetables spend (a key's runs
    are ``interval - jitter`` apart on its grid: :mod:`keymon.schedule`), its number of keys,
    and its optional reads' weight per minute if every audit made them (for the extras)."""
    load: dict[str, float] = {}
    extras: dict[str, float] = {}
    keys: dict[str, int] = {}
    for key in settings.keys:
        cost, extra = settings.audit_costs(key.exchange)
        every = (settings.interval_for(key) - settings.jitter_for(key)).total_seconds()
        per_minute = 60 / max(every, 0.001)
        load[key.exchange] = load.get(key.exchange, 0.0) + cost * per_minute
        extras[key.exchange] = extras.get(key.exchange, 0.0) + extra * per_minute
        keys[key.exchange] = keys.get(key.exchange, 0) + 1
    return {name: SparePlan(load[name], keys[name], extras[name]) for name in load}


def _warn_if_budget_short(settings: Settings) -> None:
    """``budget_too_small``: the keys' audits need more weight per minute than the budget.

    Keys with a fixed interval count with their optional reads (Binance's trading status),
    which they are meant to get every audit; ``auto`` keys with their mandatory weight only
    (their interval is planned on it). Optional reads are what goes first when it is short.
    """
    needed: dict[str, float] = {}
    mandatory: dict[str, float] = {}
    for key in settings.keys:
        cost, extra = settings.audit_costs(key.exchange)
        per_audit = cost if settings.configured_interval(key) == AUTO else cost + extra
        per_minute = 60 / settings.interval_for(key).total_seconds()
        needed[key.exchange] = needed.get(key.exchange, 0.0) + per_audit * per_minute
        mandatory[key.exchange] = mandatory.get(key.exchange, 0.0) + cost * per_minute
    for exchange, per_minute in needed.items():
        limit = budget(settings, exchange)
        if per_minute <= limit:
            continue
        if mandatory[exchange] <= limit:
            detail = (
                "every key's restrictions fit; the optional reads (Binance's trading status) "
                "are skipped first, read only from spare budget; raise the budget or interval"
            )
        else:
            detail = (
                "not every key can be audited every interval (optional reads such as Binance's "
                "trading status are skipped first); raise the budget or interval"
            )
        log.warning(
            "budget_too_small",
            exchange=exchange,
            needed_weight_per_minute=round(per_minute),
            mandatory_weight_per_minute=round(mandatory[exchange]),
            budget=limit,
            detail=detail,
        )


async def run_daemon(
    loaded: LoadedConfig,
    *,
    transport_factory: TransportFactory | None = None,
    on_started: Callable[[App], None] | None = None,
) -> int:
    """``keymon run``: start, serve until SIGTERM/SIGINT, stop cleanly. Returns the exit status."""
    app = App(loaded, transport_factory=transport_factory)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(app.reload()))
    try:
        await app.start()
        if on_started is not None:
            on_started(app)
        await app.wait()
    finally:
        await app.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0
