"""Built-in notifications through Apprise URLs, for desks without Alertmanager.

Alert state lives in the state database, per (key, rule, permission):

* a finding that **starts firing** queues one message: key, client, exchange, rule, severity,
  what changed (``withdraw: off -> on``), when it was first seen and what to do;
* while it **keeps firing**, a reminder every ``notify.reminder``; a change of severity
  (a deadline moving from warning to critical) is announced at once;
* when it **stops firing**, one resolved message (``notify.send_resolved``).

Transitions are computed inside the audit's own transaction (:meth:`Notifier.evaluate`), so a
restart, a reload or a repeated audit never queues a message twice, and a crash never loses
one. Every message goes into the outbox once per channel; :meth:`Notifier.deliver_due` sends
what is due and deletes a message only once its channel accepted it. A message that could not
be delivered (channel down, 5xx, 429, refused connection) stays, and is retried with
exponential backoff, across restarts, until it is delivered.

**Channels are places.** A queued message belongs to the alert, and to a channel's place in
``notify.urls`` (its *slot*), not to the text of its URL: rotating a leaked webhook token (a new
URL at the same place) delivers what was queued to the new URL, at once, exactly once; a send
to the old URL that was in flight at the change and succeeded is not repeated. When the list
changes (a reload, or a restart after the file was edited), :func:`route_channels` decides:

* a queue whose URL is still configured **follows its URL** to its new place (a reordered list
  sends nothing twice and loses nothing: following the place instead would hand one channel's
  backlog, which the other channel may already have received, to the other);
* otherwise it **keeps its place** if that place now holds a URL new to the list (a rotation);
* otherwise (the list got shorter, or its place went to another configured URL) it is
  **dropped and reported**: a ``notifications_dropped`` warning naming the place and the count,
  and ``keymon_notifications_total{outcome="dropped"}``. Nothing is lost silently.

The same URL at two places is one channel (the first place).

**Delivery is supervised** (:meth:`Notifier.run`): any error of a pass (the state database
failing a read, say) is logged with its cause and the loop goes on after a backoff (1 s
doubling to 1 min); an outbox row that cannot be read is quarantined, logged and counted as
dropped, and the others go on. :meth:`Notifier.healthy` turns false when the loop has made no
progress for :data:`STALLED_AFTER` while failing or stuck in a pass; ``/healthz`` then answers
503 naming ``notifier``.

Channel URLs carry tokens: they are secrets. The state database stores slots and URL
fingerprints; logs name a channel as ``notify.urls[i] (scheme://...)``, never by its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog

from keymon import log as logging_setup
from keymon.audit import mask_key_id
from keymon.changes import Change
from keymon.config import NotifySettings, Secret
from keymon.exchanges.base import Clock
from keymon.model import Finding, Rule, Severity
from keymon.state import DETACHED, AlertRow, OutboxRow, StateDB, UnreadableRow, iso
from keymon.store import KeyState

log = structlog.get_logger(__name__)

#: Retry delays grow from this, doubling, up to MAX_BACKOFF.
FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=5)
#: One delivery attempt may take this long before it counts as failed.
SEND_TIMEOUT = 30.0
#: After a failed pass the delivery loop waits this long, doubling, up to LOOP_MAX_BACKOFF.
LOOP_FIRST_BACKOFF = 1.0
LOOP_MAX_BACKOFF = 60.0
#: No progress for this long while failing (or stuck in a pass): the notifier is unhealthy.
STALLED_AFTER = timedelta(minutes=3)

#: What to do, per rule: the last line of every firing message.
REMEDIATION: Mapping[Rule, str] = {
    Rule.WITHDRAW_ENABLED: (
        "Have the client switch withdrawals off on this key now (Binance: API Management, "
        "Edit restrictions, untick Enable Withdrawals) or delete it; check the account for "
        "withdrawals since first seen."
    ),
    Rule.IP_UNRESTRICTED: (
        "Have the client restrict the key to the desk's trusted IPs. An unrestricted Binance "
        "key also loses Spot & Margin Trading 30 days after it was enabled."
    ),
    Rule.UNTRUSTED_IP: (
        "Have the client remove the addresses outside the desk's trusted IPs from the key's "
        "whitelist."
    ),
    Rule.FORBIDDEN_PERMISSION: "Have the client switch {permission} off on this key.",
    Rule.MISSING_PERMISSION: (
        "Have the client switch {permission} back on; the bots need it to trade."
    ),
    Rule.REVIEW_DEADLINE: (
        "Have the client renew the permission before the deadline, or restrict the key to the "
        "desk's IPs (IP-restricted Binance keys do not expire)."
    ),
    Rule.KEY_TOO_OLD: (
        "Rotate the key: the client creates a new one and hands it over, then deletes this one."
    ),
    Rule.KEY_REJECTED: (
        "The exchange refuses the key: check that it still exists, that the secret keymon "
        "holds is right, and that this egress IP is on its whitelist."
    ),
    Rule.KEY_LOCKED: (
        "The exchange has locked (frozen) the key: the bots cannot trade on it. Have the account "
        "owner find out why on the exchange (security review, risk control, suspicious use) and "
        "unlock it there, or replace it with a new key."
    ),
    Rule.TRADING_LOCKED: (
        "The exchange has locked API trading on this account (quantitative order rules): the "
        "bots cannot place orders until the planned recovery time. Stop or slow the bots' "
        "order flow on the named symbols before it lifts, review their cancel and expiry "
        "rates, and ask the exchange's support if the lock does not lift."
    ),
    Rule.TRADING_LOCK_RISK: (
        "A trading-rule indicator is close to its trigger: at 100 % the exchange locks API "
        "trading on the account. Have the bots fill more and cancel or expire fewer orders on "
        "the named symbol now (fewer IOC/FOK misses, fewer GTC cancels)."
    ),
    Rule.ACCOUNT_RESTRICTED: (
        "The exchange reports the account as not normal: trading may be refused. Have the "
        "account owner check the exchange's notifications and support for the restriction's "
        "reason and lift it (verification, compliance review)."
    ),
    Rule.AUDIT_FAILING: (
        "keymon cannot audit this key: its audit_failed log lines give the reason (network, "
        "exchange down, rate limits, clock)."
    ),
}

#: Which journal field tells what changed for each rule.
_CHANGE_FIELD: Mapping[Rule, Callable[[Finding], str]] = {
    Rule.WITHDRAW_ENABLED: lambda f: "withdraw",
    Rule.IP_UNRESTRICTED: lambda f: "ip_restricted",
    Rule.UNTRUSTED_IP: lambda f: "ip_list",
    Rule.FORBIDDEN_PERMISSION: lambda f: f.permission or "",
    Rule.MISSING_PERMISSION: lambda f: f.permission or "",
    Rule.REVIEW_DEADLINE: lambda f: "deadline_",
    Rule.KEY_REJECTED: lambda f: "rejected",
    Rule.KEY_LOCKED: lambda f: "key_locked",
    Rule.TRADING_LOCKED: lambda f: "trading_locked",
    Rule.ACCOUNT_RESTRICTED: lambda f: "account_status",
}

Sender = Callable[[str, str, str, str], bool]  # (url, title, body, severity) -> delivered


def channel_id(url: str) -> str:
    """A channel URL's fingerprint: what the state database stores instead of the URL."""
    return hashlib.sha256(url.encode()).hexdigest()


def route_channels(old: Mapping[int, str], new: Sequence[str]) -> tuple[dict[int, int], set[int]]:
    """Where each old slot's queue goes in a new list of channels (see the module docstring).

    ``old`` maps a slot to the fingerprint of the URL it held; ``new`` is the fingerprints of
    the new list, by place. Returns ``(route, rotated)``: ``route`` maps an old slot to its new
    slot for every queue that stays; ``rotated`` holds the slots kept for a new URL. A slot
    absent from ``route`` is dropped.
    """
    first: dict[str, int] = {}
    for place, fingerprint in enumerate(new):
        first.setdefault(fingerprint, place)
    known = set(old.values())
    route: dict[int, int] = {}
    rotated: set[int] = set()
    for slot, fingerprint in old.items():
        if fingerprint in first:
            route[slot] = first[fingerprint]  # the URL is still configured: follow it
        elif 0 <= slot < len(new) and new[slot] not in known and first[new[slot]] == slot:
            route[slot] = slot  # a new URL at the same place: a rotation
            rotated.add(slot)
    return route, rotated


def apprise_send(url: str, title: str, body: str, severity: str) -> bool:
    """Send one message through one Apprise URL; True when the channel accepted it."""
    import apprise  # heavy; only the daemon with notifications configured pays for it

    notifier = apprise.Apprise()
    if not notifier.add(url):
        return False
    kind = {
        "critical": apprise.NotifyType.FAILURE,
        "warning": apprise.NotifyType.WARNING,
        "resolved": apprise.NotifyType.SUCCESS,
    }.get(severity, apprise.NotifyType.INFO)
    return bool(notifier.notify(body=body, title=title, notify_type=kind))


def private_url(url: str) -> str:
    """Only the scheme of a channel URL: hosts, paths, queries and headers may all hold tokens.

    (Apprise's own "privacy" rendering keeps a json:// path and its headers in clear.)
    """
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"{scheme}://..."


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    finding: Finding
    title: str
    body: str


class Notifier:
    """Alert transitions into the outbox, and the outbox out to the channels."""

    def __init__(
        self,
        settings: NotifySettings,
        db: StateDB,
        *,
        clock: Clock = time.time,
        on_outcome: Callable[[str], None] | None = None,
        send: Sender = apprise_send,
    ) -> None:
        self._db = db
        self._clock = clock
        self._on_outcome = on_outcome or (lambda _outcome: None)
        self._send = send
        self._wake = asyncio.Event()
        #: Bumped by every configure(): a delivery pass started before it stops routing.
        self._generation = 0
        #: Ids of the messages being sent right now.
        self._inflight: set[int] = set()
        #: The channels by slot (a URL repeated at a later place is its first place's channel),
        #: and how logs name them.
        self._urls: dict[int, Secret] = {}
        self._labels: dict[int, str] = {}
        # The delivery loop's health (see healthy()).
        self._progress = clock()
        self._failures = 0
        self._last_error: str | None = None
        self._in_pass = False
        self.configure(settings)

    def configure(self, settings: NotifySettings) -> None:
        """Adopt (re)loaded channel URLs, re-routing the queued messages (module docstring)."""
        old_labels = self._labels
        urls = [u.get() for u in settings.urls]
        fingerprints = [channel_id(u) for u in urls]
        route, rotated = route_channels(self._db.channel_places(), fingerprints)
        dropped = self._db.rechannel(
            route, rotated, fingerprints, self.now(), busy=set(self._inflight)
        )
        self.settings = settings
        self._urls = {
            place: url
            for place, url in enumerate(settings.urls)
            if fingerprints.index(fingerprints[place]) == place
        }
        # How logs name a channel: its place in the configuration and its scheme, nothing more.
        self._labels = {
            place: f"notify.urls[{place}] ({private_url(urls[place])})" for place in self._urls
        }
        self._generation += 1
        for slot, count in sorted(dropped.items()):
            self._report_dropped(
                old_labels.get(slot, _slot_name(slot)),
                count,
                "notify.urls no longer holds this channel",
            )
        if rotated:
            log.info(
                "notify_channels_rotated",
                channels=[self._labels[slot] for slot in sorted(rotated)],
                detail="queued messages go to the new URL",
            )
        self._wake.set()

    def _report_dropped(self, channel: str, count: int, detail: str) -> None:
        for _ in range(count):
            self._on_outcome("dropped")
        log.warning("notifications_dropped", channel=channel, count=count, detail=detail)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    # ------------------------------------------------------------------ transitions

    def evaluate(
        self, db: sqlite3.Connection, state: KeyState, changes: Sequence[Change], now: datetime
    ) -> int:
        """Turn the key's findings into alert transitions and queued messages; returns how many.

        Runs inside the caller's transaction, together with the facts and journal rows.
        """
        current = {(f.rule.value, f.permission or ""): f for f in state.findings()}
        existing = StateDB.alerts_for(db, state.name)
        messages: list[Message] = []
        for ident, finding in current.items():
            alert = existing.get(ident)
            if alert is None:
                alert = AlertRow(
                    state.name,
                    ident[0],
                    ident[1],
                    finding.severity.value,
                    finding.message,
                    now,
                    now,
                )
                messages.append(self._firing("firing", state, finding, alert, changes))
            elif alert.severity != finding.severity.value:
                alert = replace(
                    alert,
                    severity=finding.severity.value,
                    message=finding.message,
                    last_notified=now,
                )
                kind = "escalated" if finding.severity is Severity.CRITICAL else "changed"
                fired_by = _fired_by(db, alert, changes)
                messages.append(self._firing(kind, state, finding, alert, fired_by))
            elif alert.last_notified is None or now - alert.last_notified >= self.settings.reminder:
                alert = replace(alert, message=finding.message, last_notified=now)
                fired_by = _fired_by(db, alert, changes)
                messages.append(self._firing("reminder", state, finding, alert, fired_by))
            elif alert.message != finding.message:
                alert = replace(alert, message=finding.message)
            else:
                continue
            StateDB.put_alert(db, alert)
        for ident, alert in existing.items():
            if ident in current:
                continue
            StateDB.drop_alert(db, alert.key, alert.rule, alert.permission)
            if self.settings.send_resolved:
                messages.append(self._resolved(state, alert, now))
        channels = list(self._urls)
        for message in messages if channels else ():
            # Alert state is kept even without channels, so adding one later does not replay
            # every finding that is already firing; only its own reminders reach it.
            StateDB.enqueue(
                db,
                channels,
                message.kind,
                state.name,
                message.finding.rule.value,
                message.finding.severity.value if message.kind != "resolved" else "resolved",
                message.title,
                message.body,
                now,
            )
            log.info(
                "notification_queued",
                key=state.name,
                rule=message.finding.rule.value,
                kind=message.kind,
                channels=len(channels),
            )
        if messages and channels:
            self._wake.set()
        return len(messages)

    def _firing(
        self,
        kind: str,
        state: KeyState,
        finding: Finding,
        alert: AlertRow,
        changes: Sequence[Change],
    ) -> Message:
        key = state.key
        severity = finding.severity.value.upper()
        what = {
            "firing": "",
            "reminder": " (still firing)",
            "escalated": " (now critical)",
            "changed": " (severity changed)",
        }[kind]
        subject = finding.rule.value + (f"[{finding.permission}]" if finding.permission else "")
        title = f"[{severity}] {key.name}: {subject}{what}"
        lines = [
            f"{severity} {subject} on key {key.name}",
            f"client {key.client}, exchange {key.exchange}, key id "
            f"{mask_key_id(key.api_key.get())}, policy {state.policy_name}",
            f"Finding: {finding.message}",
            f"What changed: {_what_changed(finding, changes)}",
            f"First seen: {_stamp(alert.firing_since)}",
        ]
        if kind == "reminder":
            since = _age(alert.last_notified or alert.firing_since, alert.firing_since)
            lines.append(f"Still firing: {since}")
        remedy = REMEDIATION.get(finding.rule, "").format(permission=finding.permission or "")
        if remedy:
            lines.append(f"What to do: {remedy}")
        return Message(kind, finding, _clean(title), _clean("\n".join(lines)))

    def _resolved(self, state: KeyState, alert: AlertRow, now: datetime) -> Message:
        key = state.key
        finding = Finding(
            Rule(alert.rule), Severity(alert.severity), alert.message, alert.permission or None
        )
        subject = alert.rule + (f"[{alert.permission}]" if alert.permission else "")
        title = f"[RESOLVED] {key.name}: {subject}"
        body = "\n".join(
            [
                f"RESOLVED {subject} on key {key.name}",
                f"client {key.client}, exchange {key.exchange}, key id "
                f"{mask_key_id(key.api_key.get())}",
                f"Was: {alert.message} ({alert.severity})",
                f"Firing from {_stamp(alert.firing_since)} to {_stamp(now)}",
            ]
        )
        return Message("resolved", finding, _clean(title), _clean(body))

    def announce(self, title: str, body: str, *, severity: str = "warning") -> None:
        """Queue one message about keymon itself (not a key) to every channel."""
        if not self._urls:
            return
        now = self.now()
        with self._db.transaction() as db:
            StateDB.enqueue(
                db,
                list(self._urls),
                "notice",
                "",
                "keymon",
                severity,
                _clean(title),
                _clean(body),
                now,
            )
        log.info(
            "notification_queued",
            key="",
            rule="keymon",
            kind="notice",
            channels=len(self._urls),
        )
        self._wake.set()

    # ------------------------------------------------------------------ delivery

    def wake(self) -> None:
        self._wake.set()

    async def deliver_due(self) -> int:
        """Try every message that is due; returns how many were delivered.

        Channels are served concurrently, so one that hangs holds up no other; within a channel
        messages go oldest first, and the first failure postpones the rest of its queue.
        """
        generation = self._generation
        rows, unreadable = await asyncio.to_thread(self._db.due, self.now())
        for bad in unreadable:
            self._report_unreadable(bad)
        if generation != self._generation:
            return 0  # the channels changed meanwhile: the next pass routes afresh
        by_slot: dict[int, list[OutboxRow]] = {}
        for row in rows:
            if row.slot in self._urls:
                by_slot.setdefault(row.slot, []).append(row)
            elif row.id not in self._inflight and self._db.discard(row.id, row.slot):
                # Its channel was removed while it was being sent, and that attempt failed.
                self._report_dropped(_slot_name(row.slot), 1, "its channel was removed")
        counts = await asyncio.gather(
            *(self._deliver_channel(rows, generation) for rows in by_slot.values())
        )
        return sum(counts)

    def _report_unreadable(self, bad: UnreadableRow) -> None:
        self._on_outcome("dropped")
        log.error(
            "notification_quarantined",
            id=bad.id,
            key=bad.key,
            rule=bad.rule,
            error=logging_setup.redactor.redact(bad.error),
            detail="the queued message could not be read; it is kept in the outbox, "
            "quarantined, and will not be sent",
        )

    async def _deliver_channel(self, rows: list[OutboxRow], generation: int) -> int:
        delivered = 0
        for index, row in enumerate(rows):
            if generation != self._generation:
                break  # the channels changed: the next pass sends the rest where they now go
            url = self._urls[row.slot]
            label = self._labels[row.slot]
            if row.attempts:
                self._on_outcome("retried")
            self._inflight.add(row.id)
            try:
                ok, error = await self._attempt(url, row)
            finally:
                self._inflight.discard(row.id)
            self._progress = self._clock()
            if ok:
                await asyncio.to_thread(self._db.delivered, row.id)
                self._on_outcome("sent")
                delivered += 1
                log.info(
                    "notification_sent",
                    key=row.key,
                    rule=row.rule,
                    kind=row.kind,
                    channel=label,
                    attempts=row.attempts + 1,
                )
                continue
            self._on_outcome("failed")
            outcome: dict[str, object]
            if generation != self._generation:
                # The channels changed during the attempt: the message now goes elsewhere (a
                # rotated URL, due at once) or nowhere (dropped by the next pass); this URL's
                # failure sets no backoff for it.
                outcome = {
                    "detail": "the channels changed meanwhile; the message follows the change"
                }
            else:
                delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2**row.attempts)
                retry_at = self.now() + delay
                await asyncio.to_thread(self._db.retry_later, row.id, retry_at, error)
                # The channel is down: the rest of its queue waits as long, in order.
                later = [r.id for r in rows[index + 1 :]]
                await asyncio.to_thread(self._db.postpone, later, retry_at)
                outcome = {"retry_in_s": delay.total_seconds()}
            log.warning(
                "notification_failed",
                key=row.key,
                rule=row.rule,
                kind=row.kind,
                channel=label,
                attempts=row.attempts + 1,
                error=error,
                **outcome,
            )
            break
        return delivered

    async def _attempt(self, url: Secret, row: OutboxRow) -> tuple[bool, str]:
        try:
            ok = await asyncio.wait_for(
                _in_daemon_thread(self._send, url.get(), row.title, row.body, row.severity),
                SEND_TIMEOUT,
            )
        except TimeoutError:
            return False, "timed out"
        except Exception as exc:  # a channel plugin failing must not stop delivery
            return False, logging_setup.redactor.redact(f"{type(exc).__name__}: {exc}")
        return ok, "" if ok else "the channel did not accept the message"

    async def run(self, *, idle: float = 30.0) -> None:
        """Deliver forever: when woken by new messages, or when the next retry is due.

        Supervised: an error anywhere in a pass (reading the outbox, computing the next retry,
        recording an outcome) is logged with its cause, and the loop goes on after a backoff
        (:data:`LOOP_FIRST_BACKOFF` doubling to :data:`LOOP_MAX_BACKOFF`).
        """
        self._progress = self._clock()
        while True:
            self._wake.clear()  # before the pass: a message queued during it wakes the next one
            self._in_pass = True
            try:
                await self.deliver_due()
                next_due = await asyncio.to_thread(self._db.next_due)
            except Exception as exc:  # the delivery loop must outlive any one failure
                self._in_pass = False
                self._failures += 1
                self._last_error = type(exc).__name__
                delay = min(LOOP_MAX_BACKOFF, LOOP_FIRST_BACKOFF * 2 ** (self._failures - 1))
                log.exception(
                    "notification_loop_failed",
                    error=logging_setup.redactor.redact(f"{type(exc).__name__}: {exc}"),
                    failures=self._failures,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                continue
            self._in_pass = False
            if self._failures:
                log.info("notification_loop_recovered", failures=self._failures)
            self._failures = 0
            self._last_error = None
            self._progress = self._clock()
            timeout = idle
            if next_due is not None:
                timeout = max(0.05, min(idle, (next_due - self.now()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    @property
    def configured(self) -> bool:
        """True when ``notify.urls`` names at least one channel."""
        return bool(self._urls)

    def healthy(self) -> bool:
        """False when delivery cannot go on: no progress for :data:`STALLED_AFTER` while the
        loop fails (or is stuck in a pass) and channels are configured.

        A channel that refuses messages is not the notifier failing (its messages wait, and
        ``keymon_notifications_total{outcome="failed"}`` says so); the loop's own failures are.
        """
        if not self._urls or not (self._failures or self._in_pass):
            return True
        return self._clock() - self._progress <= STALLED_AFTER.total_seconds()

    def health(self) -> dict[str, object]:
        """What ``/healthz`` says about the delivery loop when it is unhealthy."""
        return {
            "consecutive_failures": self._failures,
            "seconds_since_progress": round(self._clock() - self._progress, 1),
            "last_error": self._last_error,
        }


def _slot_name(slot: int) -> str:
    """How a log names a slot when its URL is no longer known (never the URL)."""
    if slot == DETACHED:
        return "a removed notify.urls entry"
    if slot < 0:
        return "a channel of an earlier notify.urls (its URL is no longer configured)"
    return f"notify.urls[{slot}]"


def _fired_by(db: sqlite3.Connection, alert: AlertRow, changes: Sequence[Change]) -> list[Change]:
    """This audit's changes plus those journaled when the alert started firing.

    A reminder still says what changed to start it (``withdraw: off -> on``).
    """
    rows = db.execute(
        "SELECT field, before, after FROM journal WHERE key = ? AND seen_at = ? ORDER BY id",
        (alert.key, iso(alert.firing_since)),
    ).fetchall()
    return [*changes, *(Change(r["field"], r["before"], r["after"]) for r in rows)]


async def _in_daemon_thread(fn: Sender, *args: str) -> bool:
    """Run a blocking send on a daemon thread.

    Unlike the loop's executor, a daemon thread never holds up the process at exit: a channel
    that hangs cannot delay a SIGTERM (its message stays in the outbox for the next start).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(bool(result))

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            error: BaseException | None = exc
            result = None
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="notify-send", daemon=True).start()
    return await future


def _what_changed(finding: Finding, changes: Sequence[Change]) -> str:
    field = _CHANGE_FIELD.get(finding.rule)
    if field is not None:
        name = field(finding)
        relevant = [
            c
            for c in changes
            if c.field == name or (name.endswith("_") and c.field.startswith(name))
        ]
        if relevant:
            return "; ".join(str(c) for c in relevant)
    return "no change seen by keymon: the key was like this when keymon first audited it"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(now: datetime, since: datetime) -> str:
    minutes = int((now - since).total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _clean(text: str) -> str:
    """Belt and braces: no configured secret leaves in a message."""
    return logging_setup.redactor.redact(text)
