"""Built-in notifications, end to end against a real webhook receiver on 127.0.0.1.

keymon reaches the receiver (:mod:`tests.notify_receiver`) through an Apprise ``json://`` URL in
``notify.urls``, exactly as it would a desk's generic webhook. In-process tests drive the
:class:`~keymon.app.App` with the injected :class:`~tests.conftest.FakeClock` (reminders,
backoff) and call :meth:`~keymon.notify.Notifier.deliver_due` instead of sleeping; the crash
tests run ``keymon run`` as a subprocess against the simulator served for real and ``kill -9``
it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keymon import log as logging_setup
from keymon import notify
from keymon.app import App
from keymon.cli import history as cli_history
from keymon.config import load
from keymon.model import Rule
from keymon.notify import FIRST_BACKOFF, Notifier, route_channels
from keymon.simulator.binance import BinanceSimulator
from keymon.state import DB_NAME, MIGRATIONS, StateDB
from tests.conftest import DOC_API_KEY, DOC_SECRET, SENTINEL, FakeClock, wait_until
from tests.notify_receiver import Receiver

OTHER_KEY, OTHER_SECRET = "otherKey0123456789abcdef", "otherSecret0123456789"
#: An API key and secret that must never appear in a message (the masked id may).
SENTINEL_KEY = "KEY" + SENTINEL + "Tail"
SENTINEL_MASKED = f"{SENTINEL_KEY[:4]}...{SENTINEL_KEY[-4:]}"
#: A token in the channel URL's path: channel URLs are secrets too.
URL_TOKEN = "TOKENx9" + SENTINEL[::-1]

KeySpec = tuple[str, str, str]  # (name, api_key, secret)
DOC = ("doc-key", DOC_API_KEY, DOC_SECRET)
OTHER = ("other-key", OTHER_KEY, OTHER_SECRET)


def write_config(
    tmp_path: Path,
    keys: list[KeySpec],
    urls: list[Any],
    *,
    base_url: str = "https://binance.test",
    notify: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A daemon configuration for (name, api_key, secret) triples, secrets in files.

    ``urls`` are written as given: URL strings, or secret references (``{"file": PATH}``).
    """
    entries = []
    for name, api_key, secret in keys:
        secret_file = tmp_path / f"{name}.secret"
        secret_file.write_text(secret + "\n")
        entries.append(
            {
                "name": name,
                "client": "acme",
                "exchange": "binance",
                "api_key": api_key,
                "api_secret": {"file": str(secret_file)},
            }
        )
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"binance": {"base_url": base_url}},
        "audit": {"interval": "5m", "jitter": "10s", "timeout": "2s"},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": entries,
        "notify": {"urls": urls, "reminder": "4h", "send_resolved": True, **(notify or {})},
        **extra,
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A healthy webhook receiver on 127.0.0.1."""
    with Receiver() as rx:
        yield rx


class Apps:
    """Opens Apps (no HTTP, no scheduler) on the fake clock and the simulator; stops them all."""

    def __init__(self, sim: BinanceSimulator, clock: FakeClock) -> None:
        self._sim = sim
        self._clock = clock
        self._open: list[App] = []

    async def start(self, config: Path, **start: bool) -> App:
        """A new daemon on ``config`` (same data_dir: a restart).

        No HTTP, scheduler or delivery loop unless ``start`` asks (App.start's arguments).
        """
        app = App(
            load(config),
            transport_factory=lambda _n: self._sim.transport(),
            clock=self._clock,
            watch_interval=3600,  # tests reload explicitly
        )
        self._open.append(app)
        await app.start(**{"serve_http": False, "schedule": False, **start})
        return app

    async def stop(self, app: App) -> None:
        """Stop one daemon the way `keymon run` stops (its state database closes)."""
        self._open.remove(app)
        await app.stop()

    async def close(self) -> None:
        while self._open:
            await self.stop(self._open[-1])


@pytest.fixture
async def apps(sim: BinanceSimulator, clock: FakeClock) -> AsyncIterator[Apps]:
    """Start and restart daemons in the test's loop; every one is stopped at the end."""
    opened = Apps(sim, clock)
    yield opened
    await opened.close()


def outcome(app: App, name: str) -> float:
    """keymon_notifications_total{outcome=name}."""
    value = app.registry.get_sample_value("keymon_notifications_total", {"outcome": name})
    assert value is not None
    return value


def titles(rx: Receiver) -> list[str]:
    """The titles of the messages delivered so far, oldest first."""
    return [str(body["title"]) for body in rx.delivered]


def stamp(clock: FakeClock) -> str:
    """How a message writes the clock's current moment."""
    return datetime.fromtimestamp(clock(), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


WITHDRAW_TITLE = "[CRITICAL] doc-key: withdraw_enabled"


async def withdraw_fired(app: App, sim: BinanceSimulator, rx: Receiver) -> None:
    """A clean first audit, then withdrawals switched on and delivered as one message."""
    await app.audit_all()
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    assert await app.notifier.deliver_due() == 1
    assert titles(rx) == [WITHDRAW_TITLE]


# ----------------------------------------------------------------------------- firing


async def test_withdrawals_switched_on_send_one_complete_message(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """Withdrawals switched on: one message naming key, client, exchange, rule, change, remedy."""
    app = await apps.start(write_config(tmp_path, [DOC], [receiver.url()]))
    await app.audit_all()
    clock.advance(60)
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    first_seen = stamp(clock)
    for _ in range(3):  # repeated audits and delivery rounds add nothing
        await app.audit_all()
        await app.notifier.deliver_due()
    assert len(receiver.requests) == 1
    (message,) = receiver.delivered
    assert message["title"] == WITHDRAW_TITLE
    assert message["type"] == "failure"  # Apprise's type for a critical alert
    body = str(message["message"])
    for part in (
        "doc-key",
        "client acme",
        "exchange binance",
        "withdraw_enabled",
        "CRITICAL",
        "What changed: withdraw: off -> on",
        f"First seen: {first_seen}",
        "What to do: Have the client switch withdrawals off",
    ):
        assert part in body, part
    assert receiver.requests[0].path == "/hook"
    assert outcome(app, "sent") == 1
    assert outcome(app, "failed") == 0


@pytest.mark.parametrize(
    ("restrictions", "expected"),
    [
        pytest.param(
            {"enableWithdrawals": True}, {"[CRITICAL] doc-key: withdraw_enabled"}, id="one-finding"
        ),
        pytest.param(
            {"enableWithdrawals": True, "enableFutures": True},
            {
                "[CRITICAL] doc-key: withdraw_enabled",
                "[WARNING] doc-key: forbidden_permission[futures_trade]",
            },
            id="two-findings",
        ),
        pytest.param(
            {"enableWithdrawals": True, "enableInternalTransfer": True, "enableFutures": True},
            {
                "[CRITICAL] doc-key: withdraw_enabled",
                "[CRITICAL] doc-key: forbidden_permission[internal_transfer]",
                "[WARNING] doc-key: forbidden_permission[futures_trade]",
            },
            id="three-findings",
        ),
    ],
)
async def test_one_message_per_firing_finding(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    restrictions: dict[str, object],
    expected: set[str],
) -> None:
    """Each finding that starts firing sends exactly one message; repeated audits send none."""
    app = await apps.start(write_config(tmp_path, [DOC], [receiver.url()]))
    await app.audit_all()
    sim.update_key(DOC_API_KEY, **restrictions)
    for _ in range(4):
        await app.audit_all()
        await app.notifier.deliver_due()
        clock.advance(300)  # one audit interval, far below the 4h reminder
    assert sorted(titles(receiver)) == sorted(expected)
    assert len(receiver.requests) == len(expected)
    assert app.db.pending() == []


async def test_each_channel_gets_each_message_once(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """Two channels, one failing: each gets the message exactly once; the healthy one at once."""
    with Receiver() as broken:
        broken.answer_error(500)
        config = write_config(tmp_path, [DOC], [receiver.url("/a"), broken.url("/b")])
        app = await apps.start(config)
        await app.audit_all()
        sim.update_key(DOC_API_KEY, enableWithdrawals=True)
        await app.audit_all()
        assert await app.notifier.deliver_due() == 1
        assert titles(receiver) == [WITHDRAW_TITLE]
        broken.answer_ok()
        clock.advance(FIRST_BACKOFF.total_seconds())
        assert await app.notifier.deliver_due() == 1
        clock.advance(3600)
        await app.notifier.deliver_due()
        assert titles(broken) == [WITHDRAW_TITLE]
        assert [r.path for r in broken.requests] == ["/b", "/b"]
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert [r.path for r in receiver.requests] == ["/a"]


# ----------------------------------------------------------------------------- restarts


async def test_restart_repeats_no_message(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """A new daemon on the same data_dir sends nothing for findings already announced."""
    sim.update_key(DOC_API_KEY, enableFutures=True)  # firing from the first audit on
    config = write_config(tmp_path, [DOC], [receiver.url()])
    app = await apps.start(config)
    await app.audit_all()
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    assert await app.notifier.deliver_due() == 2
    await apps.stop(app)
    announced = ["[WARNING] doc-key: forbidden_permission[futures_trade]", WITHDRAW_TITLE]
    assert titles(receiver) == announced
    for _ in range(2):  # two restarts in a row
        clock.advance(300)
        app = await apps.start(config)
        await app.audit_all()
        await app.audit_all()
        await app.notifier.deliver_due()
        await apps.stop(app)
    assert len(receiver.requests) == len(announced)


async def test_change_while_down_is_seen_at_the_first_audit_after_restart(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """Withdrawals switched on while keymon was down: the first audit after restart reports it."""
    config = write_config(tmp_path, [DOC], [receiver.url()])
    app = await apps.start(config)
    await app.audit_all()
    await apps.stop(app)
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    clock.advance(600)
    app = await apps.start(config)
    await app.audit_all()
    await app.notifier.deliver_due()
    (message,) = receiver.delivered
    assert message["title"] == WITHDRAW_TITLE
    assert "What changed: withdraw: off -> on" in str(message["message"])
    (row,) = app.db.history()
    assert (row.key, row.field, row.before, row.after) == ("doc-key", "withdraw", "off", "on")


async def test_restart_keeps_a_rejected_key_firing_through_a_failed_audit(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """A deleted key stays announced once: a restart then an exchange outage sends nothing."""
    config = write_config(tmp_path, [DOC], [receiver.url()])
    app = await apps.start(config)
    await app.audit_all()
    sim.delete_key(DOC_API_KEY)
    await app.audit_all()
    await app.notifier.deliver_due()
    assert titles(receiver) == ["[CRITICAL] doc-key: key_rejected"]
    await apps.stop(app)
    app = await apps.start(config)
    clock.advance(60)
    sim.fail_next(10, status=503)  # the exchange is down at the first audit after restart
    await app.audit_all()
    await app.notifier.deliver_due()
    sim.fail_next(0)
    clock.advance(60)
    await app.audit_all()  # back up: the key is still rejected
    await app.notifier.deliver_due()
    assert titles(receiver) == ["[CRITICAL] doc-key: key_rejected"]


# ----------------------------------------------------------------------------- reminders


async def test_one_reminder_per_reminder_interval(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """A finding still firing after notify.reminder sends exactly one reminder, then waits again."""
    config = write_config(tmp_path, [DOC], [receiver.url()], notify={"reminder": "1h"})
    app = await apps.start(config)
    await withdraw_fired(app, sim, receiver)
    clock.advance(3600 - 1)
    await app.audit_all()
    await app.notifier.deliver_due()
    assert len(receiver.requests) == 1  # not yet
    clock.advance(2)
    for _ in range(3):
        await app.audit_all()
        await app.notifier.deliver_due()
    reminder_title = WITHDRAW_TITLE + " (still firing)"
    assert titles(receiver) == [WITHDRAW_TITLE, reminder_title]
    assert "Still firing: 1h 0m" in str(receiver.delivered[1]["message"])
    clock.advance(3600)
    await app.audit_all()
    await app.audit_all()
    await app.notifier.deliver_due()
    assert titles(receiver) == [WITHDRAW_TITLE, reminder_title, reminder_title]


async def test_reminder_survives_a_restart(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """The reminder clock is kept in data_dir: a restart neither resets nor repeats it."""
    config = write_config(tmp_path, [DOC], [receiver.url()], notify={"reminder": "1h"})
    app = await apps.start(config)
    await withdraw_fired(app, sim, receiver)
    await apps.stop(app)
    clock.advance(1800)
    app = await apps.start(config)
    await app.audit_all()
    await app.notifier.deliver_due()
    assert len(receiver.requests) == 1
    clock.advance(1800)
    await app.audit_all()
    await app.notifier.deliver_due()
    assert titles(receiver) == [WITHDRAW_TITLE, WITHDRAW_TITLE + " (still firing)"]


async def test_reminder_still_says_what_changed(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """The reminder repeats the change keymon saw (withdraw: off -> on), not 'no change seen'."""
    config = write_config(tmp_path, [DOC], [receiver.url()], notify={"reminder": "1h"})
    app = await apps.start(config)
    await withdraw_fired(app, sim, receiver)
    clock.advance(3601)
    await app.audit_all()
    await app.notifier.deliver_due()
    reminder = str(receiver.delivered[-1]["message"])
    assert "What changed: withdraw: off -> on" in reminder
    assert "no change seen" not in reminder


async def test_severity_change_is_announced_once(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """A deadline moving from warning to critical sends one "now critical" message, no more."""
    expires_ms = int((clock() + 10 * 86_400) * 1000)
    sim.update_key(DOC_API_KEY, ipRestrict=False, tradingAuthorityExpirationTime=expires_ms)
    config = write_config(tmp_path, [DOC], [receiver.url()], notify={"reminder": "30d"})
    app = await apps.start(config)
    await app.audit_all()
    await app.notifier.deliver_due()
    first = ["[CRITICAL] doc-key: ip_unrestricted", "[WARNING] doc-key: review_deadline"]
    assert sorted(titles(receiver)) == first
    clock.advance(5 * 86_400)  # 5 days left: still a warning
    await app.audit_all()
    await app.notifier.deliver_due()
    assert len(receiver.requests) == 2
    clock.advance(3 * 86_400)  # 2 days left: critical
    for _ in range(3):
        await app.audit_all()
        await app.notifier.deliver_due()
        clock.advance(600)
    assert titles(receiver)[2:] == ["[CRITICAL] doc-key: review_deadline (now critical)"]
    assert len(receiver.requests) == 3


# ----------------------------------------------------------------------------- resolved


@pytest.mark.parametrize(
    ("send_resolved", "expected"),
    [
        pytest.param(True, [WITHDRAW_TITLE, "[RESOLVED] doc-key: withdraw_enabled"], id="on"),
        pytest.param(False, [WITHDRAW_TITLE], id="off"),
    ],
)
async def test_clearing_sends_one_resolved_message(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    send_resolved: bool,
    expected: list[str],
) -> None:
    """The finding clearing sends one resolved message (none with send_resolved: false)."""
    config = write_config(
        tmp_path, [DOC], [receiver.url()], notify={"send_resolved": send_resolved}
    )
    app = await apps.start(config)
    await withdraw_fired(app, sim, receiver)
    clock.advance(600)
    sim.update_key(DOC_API_KEY, enableWithdrawals=False)
    for _ in range(3):
        await app.audit_all()
        await app.notifier.deliver_due()
    assert titles(receiver) == expected
    assert app.db.alerts() == []
    if send_resolved:
        body = str(receiver.delivered[1]["message"])
        assert "withdrawals are enabled on this key (critical)" in body
        assert receiver.delivered[1]["type"] == "success"
    # Firing again later is a new alert: one new firing message.
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    await app.notifier.deliver_due()
    assert titles(receiver) == [*expected, WITHDRAW_TITLE]


# ----------------------------------------------------------------------------- delivery


def break_channel(rx: Receiver, how: str) -> None:
    """Make the receiver fail the way ``how`` says."""
    if how == "500":
        rx.answer_error(500)
    elif how == "429":
        rx.answer_throttled(retry_after=1)
    else:
        rx.stop()


def heal_channel(rx: Receiver, how: str) -> None:
    """Undo :func:`break_channel`."""
    if how == "refused":
        rx.start()
    rx.answer_ok()


FAILURES = [
    pytest.param("500", id="answers-500"),
    pytest.param("429", id="answers-429-retry-after"),
    pytest.param("refused", id="refuses-connections"),
]


@pytest.mark.parametrize("how", FAILURES)
async def test_message_is_held_until_the_channel_recovers(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    how: str,
) -> None:
    """A failing channel holds the message, retried with backoff, delivered exactly once."""
    app = await apps.start(write_config(tmp_path, [DOC], [receiver.url()]))
    await app.audit_all()
    break_channel(receiver, how)
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    assert await app.notifier.deliver_due() == 0
    assert await app.notifier.deliver_due() == 0  # not due again before the backoff
    assert outcome(app, "failed") == 1
    clock.advance(FIRST_BACKOFF.total_seconds())
    assert await app.notifier.deliver_due() == 0  # second attempt, still failing
    assert outcome(app, "failed") == 2
    assert outcome(app, "retried") == 1
    clock.advance(FIRST_BACKOFF.total_seconds())  # the backoff doubled: not due yet
    assert await app.notifier.deliver_due() == 0
    assert outcome(app, "failed") == 2
    (row,) = app.db.pending()
    assert row.attempts == 2
    attempts_seen = 0 if how == "refused" else 2
    assert len(receiver.requests) == attempts_seen
    heal_channel(receiver, how)
    clock.advance(FIRST_BACKOFF.total_seconds())
    assert await app.notifier.deliver_due() == 1
    for _ in range(3):  # nothing left to send, nothing sent twice
        clock.advance(600)
        await app.audit_all()
        await app.notifier.deliver_due()
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert app.db.pending() == []
    assert (outcome(app, "sent"), outcome(app, "failed"), outcome(app, "retried")) == (1, 2, 2)


@pytest.mark.parametrize("how", [p for p in FAILURES if p.id != "answers-429-retry-after"])
async def test_held_message_is_delivered_after_a_restart(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    how: str,
) -> None:
    """The outbox survives a restart: the held message arrives exactly once from the new daemon."""
    config = write_config(tmp_path, [DOC], [receiver.url()])
    app = await apps.start(config)
    await app.audit_all()
    break_channel(receiver, how)
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    assert await app.notifier.deliver_due() == 0
    assert outcome(app, "failed") == 1
    await apps.stop(app)
    heal_channel(receiver, how)
    app = await apps.start(config)
    assert len(app.db.pending()) == 1
    await app.notifier.deliver_due()
    assert receiver.delivered == []  # the backoff is kept across the restart too
    clock.advance(FIRST_BACKOFF.total_seconds())
    assert await app.notifier.deliver_due() == 1
    await app.audit_all()
    clock.advance(600)
    await app.notifier.deliver_due()
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert app.db.pending() == []
    assert (outcome(app, "sent"), outcome(app, "retried")) == (1, 1)


async def test_hung_channel_times_out_and_is_retried(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """A channel that never answers fails the attempt at its timeout; the retry delivers once."""
    url = receiver.url(rto="0.5")  # Apprise's read timeout for this channel
    app = await apps.start(write_config(tmp_path, [DOC], [url]))
    await app.audit_all()
    receiver.hang()
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    started = time.monotonic()
    assert await app.notifier.deliver_due() == 0
    assert time.monotonic() - started < 5
    assert receiver.hanging == 1
    assert outcome(app, "failed") == 1
    receiver.release()
    receiver.answer_ok()
    clock.advance(FIRST_BACKOFF.total_seconds())
    assert await app.notifier.deliver_due() == 1
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert len(receiver.requests) == 2


@pytest.mark.parametrize("removed_at", [0, 1], ids=["first-entry", "last-entry"])
async def test_reload_removing_a_url_drops_and_reports_its_queued_messages(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    removed_at: int,
) -> None:
    """A channel removed by a reload gets nothing more; its queue is dropped, logged and counted.

    The remaining channel is unaffected wherever the removed one stood (its URL moves up to
    notify.urls[0] when the first entry goes, and its queue with it).
    """
    with Receiver() as removed:
        removed.answer_error(500)
        urls = [receiver.url("/kept")]
        urls.insert(removed_at, removed.url("/gone"))
        app = await apps.start(write_config(tmp_path, [DOC], urls))
        await app.audit_all()
        sim.update_key(DOC_API_KEY, enableWithdrawals=True)
        await app.audit_all()
        await app.notifier.deliver_due()
        assert len(app.db.pending()) == 1
        stream = capture_logs()
        write_config(tmp_path, [DOC], [receiver.url("/kept")])
        assert await app.reload()
        assert app.db.pending() == []
        (dropped,) = log_events(stream, "notifications_dropped")
        assert dropped["channel"] == f"notify.urls[{removed_at}] (json://...)"
        assert dropped["count"] == 1
        assert outcome(app, "dropped") == 1
        removed.answer_ok()
        sim.update_key(DOC_API_KEY, enableFutures=True)
        for _ in range(3):
            clock.advance(600)
            await app.audit_all()
            await app.notifier.deliver_due()
        assert removed.delivered == []
        assert len(removed.requests) == 1  # only the attempt before the reload
    assert titles(receiver) == [
        WITHDRAW_TITLE,
        "[WARNING] doc-key: forbidden_permission[futures_trade]",
    ]
    assert outcome(app, "dropped") == 1


# ----------------------------------------------------------------------------- channel changes


def capture_logs() -> io.StringIO:
    """Send keymon's logs, as JSON lines, into a buffer the test reads."""
    stream = io.StringIO()
    logging_setup.configure(fmt="json", level="info", stream=stream)
    return stream


def log_events(stream: io.StringIO | str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of one event."""
    text = stream if isinstance(stream, str) else stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


@pytest.mark.parametrize(
    ("old", "new", "route", "rotated"),
    [
        pytest.param({0: "a"}, ["a"], {0: 0}, set(), id="unchanged"),
        pytest.param({0: "a"}, ["b"], {0: 0}, {0}, id="rotated"),
        pytest.param({0: "a", 1: "b"}, ["b", "a"], {0: 1, 1: 0}, set(), id="swapped"),
        pytest.param({0: "a", 1: "b"}, ["b"], {1: 0}, set(), id="first-removed"),
        pytest.param({0: "a", 1: "b"}, ["a"], {0: 0}, set(), id="last-removed"),
        pytest.param({0: "a", 1: "b"}, ["c"], {0: 0}, {0}, id="first-rotated-last-removed"),
        # Its place went to a URL that was configured already: a move, not a rotation.
        pytest.param({0: "a", 1: "b"}, ["b", "c"], {1: 0}, set(), id="place-taken-by-a-move"),
        pytest.param({0: "a", 1: "b"}, ["a", "b", "c"], {0: 0, 1: 1}, set(), id="one-added"),
        pytest.param({0: "a"}, [], {}, set(), id="all-removed"),
        # The same URL twice is one channel, at its first place.
        pytest.param({0: "a", 1: "b"}, ["c", "c", "b"], {0: 0, 1: 2}, {0}, id="duplicate-url"),
        # Schema 2's rows, keyed by fingerprint (provisional negative slots).
        pytest.param({-1: "a", -2: "gone"}, ["x", "a"], {-1: 1}, set(), id="migrated"),
    ],
)
def test_route_channels(
    old: dict[int, str], new: list[str], route: dict[int, int], rotated: set[int]
) -> None:
    """A queue follows its URL; else keeps its place for a URL new to the list; else drops."""
    assert route_channels(old, new) == (route, rotated)


async def test_rotated_url_gets_the_queued_message_once(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """A leaked webhook token rotated in the secret file: the held message goes to the new URL.

    At once (the old URL's backoff does not hold it), exactly once, nothing dropped, and neither
    URL stored in the state database.
    """
    with Receiver() as old:
        old.answer_error(500)
        hook = tmp_path / "hook"
        hook.write_text(old.url(f"/old/{URL_TOKEN}") + "\n")
        app = await apps.start(write_config(tmp_path, [DOC], [{"file": str(hook)}]))
        await app.audit_all()
        sim.update_key(DOC_API_KEY, enableWithdrawals=True)
        await app.audit_all()
        for _ in range(3):  # three failed attempts: the backoff has grown to 20 s
            assert await app.notifier.deliver_due() == 0
            clock.advance(FIRST_BACKOFF.total_seconds() * 4)
        assert outcome(app, "failed") == 3
        stream = capture_logs()
        hook.write_text(receiver.url(f"/new/{URL_TOKEN[::-1]}") + "\n")
        assert await app.reload()
        assert await app.notifier.deliver_due() == 1
        for _ in range(3):
            clock.advance(600)
            await app.audit_all()
            await app.notifier.deliver_due()
        assert old.delivered == []
        assert len(old.requests) == 3
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert [r.path for r in receiver.requests] == [f"/new/{URL_TOKEN[::-1]}"]
    assert outcome(app, "dropped") == 0
    assert log_events(stream, "notifications_dropped") == []
    (rotated,) = log_events(stream, "notify_channels_rotated")
    assert rotated["channels"] == ["notify.urls[0] (json://...)"]
    await apps.stop(app)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    for token in (URL_TOKEN, URL_TOKEN[::-1]):
        assert token.encode() not in stored


@pytest.mark.parametrize(
    ("old_answers", "new_gets"),
    [
        pytest.param(200, [], id="old-send-succeeds"),
        pytest.param(503, [WITHDRAW_TITLE], id="old-send-fails"),
    ],
)
async def test_message_in_flight_when_the_url_rotates(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    old_answers: int,
    new_gets: list[str],
) -> None:
    """Rotated while a send to the old URL hangs: if that send succeeds, the new URL gets
    nothing; if it fails, the new URL gets the message once, at once."""
    with Receiver() as old:
        hook = tmp_path / "hook"
        hook.write_text(old.url("/old", rto="30") + "\n")
        app = await apps.start(write_config(tmp_path, [DOC], [{"file": str(hook)}]))
        await app.audit_all()
        old.hang()
        sim.update_key(DOC_API_KEY, enableWithdrawals=True)
        await app.audit_all()
        sending = asyncio.create_task(app.notifier.deliver_due())
        await asyncio.to_thread(old.wait_for, lambda rx: rx.hanging == 1)
        hook.write_text(receiver.url("/new") + "\n")
        assert await app.reload()
        old.release(old_answers)
        await asyncio.wait_for(sending, 10)
        for _ in range(3):
            await app.notifier.deliver_due()
            clock.advance(600)
            await app.audit_all()
        assert len(old.requests) == 1
        assert len(old.delivered) == (1 if old_answers == 200 else 0)
    assert titles(receiver) == new_gets
    assert app.db.pending() == []
    assert outcome(app, "dropped") == 0


async def test_reordered_urls_each_get_the_message_once(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """Two URLs swap places while one holds a message: it follows its URL, nobody gets two."""
    with Receiver() as down:
        down.answer_error(500)
        app = await apps.start(write_config(tmp_path, [DOC], [down.url("/a"), receiver.url("/b")]))
        await withdraw_fired(app, sim, receiver)
        write_config(tmp_path, [DOC], [receiver.url("/b"), down.url("/a")])
        assert await app.reload()
        down.answer_ok()
        for _ in range(3):
            clock.advance(600)
            await app.audit_all()
            await app.notifier.deliver_due()
        assert titles(down) == [WITHDRAW_TITLE]
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert outcome(app, "dropped") == 0


async def test_url_rotated_while_keymon_was_down(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """The secret file rotated between two runs: the next start sends the queue to the new URL."""
    with Receiver() as old:
        old.answer_error(500)
        hook = tmp_path / "hook"
        hook.write_text(old.url("/old") + "\n")
        config = write_config(tmp_path, [DOC], [{"file": str(hook)}])
        app = await apps.start(config)
        await app.audit_all()
        sim.update_key(DOC_API_KEY, enableWithdrawals=True)
        await app.audit_all()
        assert await app.notifier.deliver_due() == 0
        await apps.stop(app)
        hook.write_text(receiver.url("/new") + "\n")
        app = await apps.start(config)
        assert await app.notifier.deliver_due() == 1
        assert old.delivered == []
    assert titles(receiver) == [WITHDRAW_TITLE]
    assert outcome(app, "dropped") == 0


async def test_schema_2_outbox_rows_find_their_url_or_are_reported(
    tmp_path: Path,
    sim: BinanceSimulator,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """Rows queued by a keymon that keyed them by URL fingerprint: at the first start, a row
    whose URL is still configured goes to it (wherever it now stands); the other is dropped,
    logged and counted."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    kept_url, gone_url = receiver.url("/kept"), "json://127.0.0.1:9/gone"
    db = sqlite3.connect(data_dir / DB_NAME)
    for version, script in enumerate(MIGRATIONS[:2]):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version = {version + 1}; COMMIT;")
    for url, title in ((kept_url, "kept message"), (gone_url, "gone message")):
        db.execute(
            "INSERT INTO outbox (channel, kind, key, rule, severity, title, body, created_at, "
            "next_attempt, attempts) VALUES (?, 'firing', 'doc-key', 'withdraw_enabled', "
            "'critical', ?, 'body', '2026-11-01T00:00:00.000000Z', "
            "'2026-11-01T00:00:05.000000Z', 1)",
            (hashlib.sha256(url.encode()).hexdigest(), title),
        )
    db.commit()
    db.close()
    stream = capture_logs()
    with Receiver() as first:
        app = await apps.start(write_config(tmp_path, [DOC], [first.url("/new"), kept_url]))
        (dropped,) = log_events(stream, "notifications_dropped")
        assert dropped["count"] == 1
        assert "notify.urls" in dropped["channel"]
        assert outcome(app, "dropped") == 1
        assert await app.notifier.deliver_due() == 1
        assert first.requests == []
    assert titles(receiver) == ["kept message"]
    assert app.db.pending() == []
    assert int(app.db._db.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS)


# ----------------------------------------------------------------------------- supervised delivery


async def get_healthz(app: App) -> tuple[int, dict[str, Any]]:
    """GET /healthz of an App serving HTTP: (status, JSON body)."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{app.port}/healthz")
    return response.status_code, response.json()


async def wait_for(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Await ``predicate`` becoming true, polling without blocking the loop; bounded."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {within}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def fast_loop_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery loop retries a failed pass within tens of milliseconds."""
    monkeypatch.setattr(notify, "LOOP_FIRST_BACKOFF", 0.02)
    monkeypatch.setattr(notify, "LOOP_MAX_BACKOFF", 0.1)


async def test_delivery_loop_outlives_failing_reads_and_healthz_names_it(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    monkeypatch: pytest.MonkeyPatch,
    fast_loop_backoff: None,
) -> None:
    """The outbox cannot be read for a while: the loop logs why and goes on; /healthz answers
    503 naming notifier once it has been stuck for STALLED_AFTER, and 200 again when it recovers;
    the alert queued meanwhile is delivered, once."""
    broken = threading.Event()
    real_due = StateDB.due

    def due(self: StateDB, now: datetime, limit: int = 50) -> Any:
        if broken.is_set():
            raise sqlite3.OperationalError("database disk image is malformed")
        return real_due(self, now, limit)

    monkeypatch.setattr(StateDB, "due", due)
    stream = capture_logs()
    app = await apps.start(
        write_config(tmp_path, [DOC], [receiver.url()]), serve_http=True, schedule=True
    )
    await app.audit_all()
    assert await get_healthz(app) == (200, {"status": "ok"})
    broken.set()
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    await wait_for(lambda: len(log_events(stream, "notification_loop_failed")) >= 3)
    assert (await get_healthz(app))[0] == 200  # failing, but not for long yet
    clock.advance(notify.STALLED_AFTER.total_seconds() + 1)
    status, body = await get_healthz(app)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["failing"] == ["notifier"]
    assert body["notifier"]["last_error"] == "OperationalError"
    assert receiver.requests == []
    broken.clear()
    await wait_for(lambda: len(receiver.delivered) == 1)
    await wait_for(lambda: app.notifier.healthy())
    assert (await get_healthz(app)) == (200, {"status": "ok"})
    clock.advance(600)
    await app.audit_all()
    app.notifier.wake()
    await wait_for(lambda: log_events(stream, "notification_loop_recovered") != [])
    assert titles(receiver) == [WITHDRAW_TITLE]
    failed = log_events(stream, "notification_loop_failed")[0]
    assert failed["error"] == "OperationalError: database disk image is malformed"
    assert failed["level"] == "error"
    assert "exception" in failed  # the traceback, redacted like every log line


@pytest.mark.parametrize(
    ("column", "garbage"),
    [
        # Sorts before every date: before the fix, next_due() raised and the loop ended.
        pytest.param("next_attempt", "0000-garbage", id="next-attempt"),
        pytest.param("next_attempt", "zz not a time", id="next-attempt-never-due"),
        pytest.param("created_at", "yesterday", id="created-at"),
        pytest.param("attempts", "many", id="attempts"),
    ],
)
async def test_unreadable_outbox_row_is_quarantined_and_the_others_delivered(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    fast_loop_backoff: None,
    column: str,
    garbage: str,
) -> None:
    """One queued message's row corrupted on disk: it is quarantined, logged and counted as
    dropped; the others, and every alert after, are still delivered by the running loop."""
    receiver.answer_error(500)
    app = await apps.start(
        write_config(tmp_path, [DOC], [receiver.url()]), serve_http=True, schedule=True
    )
    await app.audit_all()
    stream = capture_logs()
    sim.update_key(DOC_API_KEY, enableFutures=True, enableWithdrawals=True)
    await app.audit_all()
    # The refused attempt is recorded (its backoff and the queue's postponement written)
    # before the clock moves: moved earlier, the backoff would start from the later time.
    await wait_for(lambda: log_events(stream, "notification_failed") != [])
    futures_title = "[WARNING] doc-key: forbidden_permission[futures_trade]"
    db = sqlite3.connect(tmp_path / "data" / DB_NAME)
    with db:
        db.execute(
            f"UPDATE outbox SET {column} = ? WHERE title = ?",  # noqa: S608 - a test's own column
            (garbage, futures_title),
        )
    db.close()
    receiver.answer_ok()
    clock.advance(3600)
    app.notifier.wake()
    await wait_for(lambda: WITHDRAW_TITLE in titles(receiver))
    await wait_for(lambda: log_events(stream, "notification_quarantined") != [])
    (quarantined,) = log_events(stream, "notification_quarantined")
    assert (quarantined["key"], quarantined["rule"]) == ("doc-key", "forbidden_permission")
    assert outcome(app, "dropped") == 1
    # Later alerts still go out, from the same loop.
    sim.update_key(DOC_API_KEY, enableWithdrawals=False)
    clock.advance(60)
    await app.audit_all()
    await wait_for(lambda: "[RESOLVED] doc-key: withdraw_enabled" in titles(receiver))
    assert futures_title not in titles(receiver)
    assert titles(receiver).count(WITHDRAW_TITLE) == 1
    assert (await get_healthz(app))[0] == 200
    db = sqlite3.connect(tmp_path / "data" / DB_NAME)
    try:
        rows = db.execute("SELECT title, quarantined FROM outbox").fetchall()
    finally:
        db.close()
    assert [title for title, _ in rows] == [futures_title]
    assert rows[0][1]  # why it was set aside


@pytest.mark.parametrize("configured", [True, False], ids=["notify-configured", "no-notify"])
async def test_healthz_when_the_delivery_task_has_ended(
    tmp_path: Path,
    receiver: Receiver,
    apps: Apps,
    monkeypatch: pytest.MonkeyPatch,
    configured: bool,
) -> None:
    """The delivery task ended: 503 naming notifier, unless no channel is configured."""

    async def ended(self: Notifier, *, idle: float = 30.0) -> None:
        return None

    monkeypatch.setattr(Notifier, "run", ended)
    urls = [receiver.url()] if configured else []
    app = await apps.start(write_config(tmp_path, [DOC], urls), serve_http=True, schedule=True)
    await asyncio.sleep(0)  # the task runs, and ends
    status, body = await get_healthz(app)
    if configured:
        assert status == 503
        assert body["failing"] == ["notifier"]
    else:
        assert (status, body) == (200, {"status": "ok"})


# ----------------------------------------------------------------------------- secrets


async def test_no_secret_in_any_message(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
) -> None:
    """No message title or body, nor the state database, holds the secret, full key or URL token."""
    sim.add_key(SENTINEL_KEY, hmac_secret=SENTINEL)
    config = write_config(
        tmp_path, [("sentinel", SENTINEL_KEY, SENTINEL)], [receiver.url(f"/hooks/{URL_TOKEN}")]
    )
    app = await apps.start(config)
    await app.audit_all()
    sim.update_key(SENTINEL_KEY, enableWithdrawals=True, enableFutures=True, ipRestrict=False)
    await app.audit_all()  # firing: withdraw, futures, IP restriction lost
    receiver.answer_error(500)
    await app.notifier.deliver_due()  # a failed attempt leaves an error in the outbox
    receiver.answer_ok()
    clock.advance(3600 * 5)
    await app.audit_all()  # reminders
    sim.delete_key(SENTINEL_KEY)
    clock.advance(60)
    await app.audit_all()  # key_rejected
    sim.add_key(SENTINEL_KEY, hmac_secret=SENTINEL)
    clock.advance(60)
    await app.audit_all()  # resolved: key_rejected, withdraw, futures, IP restriction
    await app.notifier.deliver_due()
    await apps.stop(app)
    kinds = {str(b["title"]).split("]")[0] for b in receiver.delivered}
    assert kinds == {"[CRITICAL", "[WARNING", "[RESOLVED"}
    assert any("key_rejected" in str(b["title"]) for b in receiver.delivered)
    assert any("(still firing)" in str(b["title"]) for b in receiver.delivered)
    assert len(receiver.delivered) >= 10
    for request in receiver.requests:
        raw = json.dumps(request.body)
        for secret in (SENTINEL, SENTINEL_KEY, SENTINEL_KEY[4:-4], URL_TOKEN):
            assert secret not in raw
    assert all(SENTINEL_MASKED in str(b["message"]) for b in receiver.delivered)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    for secret in (SENTINEL, SENTINEL_KEY[4:-4], URL_TOKEN):
        assert secret.encode() not in stored


HEADER_TOKEN = "HDRx7" + SENTINEL[5:30]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(f"/hooks/{URL_TOKEN}", {}, id="path-token"),
        pytest.param(f"/hooks/{URL_TOKEN}", {"rto": "10"}, id="path-token-and-query"),
        pytest.param("/hooks", {"+X-Token": HEADER_TOKEN}, id="header-token"),
    ],
)
async def test_no_channel_token_in_delivery_logs(
    tmp_path: Path,
    sim: BinanceSimulator,
    receiver: Receiver,
    clock: FakeClock,
    apps: Apps,
    path: str,
    params: dict[str, str],
) -> None:
    """The notification_failed/notification_sent log lines never show a channel URL's tokens."""
    config = write_config(tmp_path, [DOC], [receiver.url(path, **params)])
    stream = io.StringIO()
    logging_setup.configure(fmt="json", level="info", stream=stream)
    logging_setup.redactor.update(load(config).settings.secret_values())  # as `keymon run` does
    app = await apps.start(config)
    await app.audit_all()
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    receiver.answer_error(500)
    await app.notifier.deliver_due()
    receiver.answer_ok()
    clock.advance(FIRST_BACKOFF.total_seconds())
    assert await app.notifier.deliver_due() == 1
    text = stream.getvalue()
    assert "notification_failed" in text
    assert "notification_sent" in text
    assert URL_TOKEN not in text
    assert HEADER_TOKEN not in text


# ----------------------------------------------------------------------------- atomicity


async def test_failed_state_write_keeps_journal_and_alert_in_step(
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
    apps: Apps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A state write that fails (disk full) is not half-applied: the next audit journals it."""
    from keymon.state import StateDB

    app = await apps.start(write_config(tmp_path, [DOC], [receiver.url()]))
    await app.audit_all()
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    real = StateDB.add_changes

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(StateDB, "add_changes", staticmethod(disk_full))
    with pytest.raises(sqlite3.OperationalError):
        await app.audit_all()
    assert app.db.alerts() == []  # rolled back
    monkeypatch.setattr(StateDB, "add_changes", staticmethod(real))
    clock.advance(300)
    await app.audit_all()
    await app.notifier.deliver_due()
    assert [a.rule for a in app.db.alerts()] == [Rule.WITHDRAW_ENABLED.value]
    assert [(r.field, r.before, r.after) for r in app.db.history()] == [("withdraw", "off", "on")]
    assert "What changed: withdraw: off -> on" in str(receiver.delivered[0]["message"])


# ----------------------------------------------------------------------------- kill -9


@pytest.fixture
def live_sim() -> Iterator[tuple[BinanceSimulator, str]]:
    """A simulator on the real clock, served for real on 127.0.0.1 (for `keymon run`)."""
    simulator = BinanceSimulator()
    simulator.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    simulator.add_key(OTHER_KEY, hmac_secret=OTHER_SECRET)
    simulator.add_key(SENTINEL_KEY, hmac_secret=SENTINEL)
    with simulator.serve_in_thread() as url:
        yield simulator, url


@contextmanager
def keymon_run(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`keymon run --config` as a subprocess (stderr into ``log``); killed when the block ends."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keymon", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no clean-up of any kind runs in the process."""
    proc.kill()
    assert proc.wait(timeout=10) == -9


def read_state(data_dir: Path) -> dict[str, Any]:
    """Open the state database as the next start would, check it, and read what it holds."""
    db = sqlite3.connect(data_dir / DB_NAME)
    try:
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        facts = {
            key: json.loads(text)["permissions"] if text else None
            for key, text in db.execute("SELECT key, facts FROM key_facts")
        }
        alerts = {(k, r, p) for k, r, p in db.execute("SELECT key, rule, permission FROM alerts")}
        journal = db.execute("SELECT key, field, before, after FROM journal ORDER BY id").fetchall()
        outbox = db.execute("SELECT key, rule, kind, attempts FROM outbox ORDER BY id").fetchall()
        updated = dict(db.execute("SELECT key, updated_at FROM key_facts").fetchall())
    finally:
        db.close()
    return {
        "integrity": integrity,
        "facts": facts,
        "alerts": alerts,
        "journal": journal,
        "outbox": outbox,
        "updated": updated,
    }


def assert_consistent(state: dict[str, Any]) -> None:
    """Facts, journal and alerts tell one story for every key: no half-written audit."""
    assert state["integrity"] == "ok"
    for key, permissions in state["facts"].items():
        if permissions is None:
            continue
        withdraw = bool(permissions["withdraw"])
        assert ((key, "withdraw_enabled", "") in state["alerts"]) == withdraw, key
        changes = [(b, a) for k, f, b, a in state["journal"] if k == key and f == "withdraw"]
        if changes:
            assert changes[-1][1] == ("on" if withdraw else "off"), key
            # Each journal row continues from the one before it.
            for (_, after), (before, _) in itertools.pairwise(changes):
                assert after == before, key


def state_now(data_dir: Path) -> dict[str, Any] | None:
    """The state while a daemon runs (None before its database exists)."""
    if not (data_dir / DB_NAME).exists():
        return None
    try:
        return read_state(data_dir)
    except sqlite3.OperationalError:  # not migrated yet, or busy
        return None


def audited_since(data_dir: Path, key: str, moment: str | None) -> str | None:
    """The key's last audit time once it is later than ``moment`` (None until then)."""
    state = state_now(data_dir)
    if state is None or key not in state["updated"]:
        return None
    updated = str(state["updated"][key])
    if moment is not None and _parse(updated) <= _parse(moment):
        return None
    return updated


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def journal_longer_than(data_dir: Path, rows: int) -> bool:
    """True once the journal holds more than ``rows`` rows."""
    state = state_now(data_dir)
    return state is not None and len(state["journal"]) > rows


def wait_for_audit(data_dir: Path, key: str, after: str | None) -> str:
    """Wait (bounded) until the running daemon has audited ``key`` after ``after``."""
    seen: list[str] = []

    def audited() -> bool:
        moment = audited_since(data_dir, key, after)
        if moment is not None:
            seen.append(moment)
        return bool(seen)

    wait_until(audited, timeout=20)
    return seen[0]


LIVE_AUDIT = {"interval": "1s", "jitter": "200ms", "timeout": "2s"}


def test_kill_9_in_the_middle_of_delivery_loses_nothing(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """kill -9 while the channel holds the request: the next daemon delivers it, exactly once."""
    simulator, base_url = live_sim
    config = write_config(
        tmp_path,
        [("sentinel", SENTINEL_KEY, SENTINEL)],
        # A long read timeout: the hung first attempt cannot complete before the kill.
        [receiver.url("/hooks/keymon", rto="30")],
        base_url=base_url,
        audit=LIVE_AUDIT,
        log={"format": "json", "level": "info"},
    )
    data_dir = tmp_path / "data"
    log = tmp_path / "keymon.log"
    receiver.hang()
    with keymon_run(config, log) as first:
        wait_for_audit(data_dir, "sentinel", None)
        simulator.update_key(SENTINEL_KEY, enableWithdrawals=True)
        receiver.wait_for(lambda rx: rx.hanging == 1, timeout=15)
        kill_9(first)
    # `keymon history` reads the crashed daemon's database as it was left (read-only).
    listing = io.StringIO()
    assert cli_history(config, since="1d", fmt="json", out=listing) == 0
    assert [
        (r["key"], r["field"], r["before"], r["after"]) for r in json.loads(listing.getvalue())
    ] == [("sentinel", "withdraw", "off", "on")]
    state = read_state(data_dir)
    assert_consistent(state)
    assert ("sentinel", "withdraw", "off", "on") in state["journal"]
    assert ("sentinel", "withdraw_enabled", "") in state["alerts"]
    assert state["outbox"] == [("sentinel", "withdraw_enabled", "firing", 0)]
    hung = receiver.requests[0].body
    receiver.release()
    receiver.answer_ok()
    with keymon_run(config, log) as second:
        receiver.wait_for(lambda rx: len(rx.delivered) == 1, timeout=20)
        # Two more audits by the new daemon: whatever they queued is in the outbox or delivered.
        moment = wait_for_audit(data_dir, "sentinel", state["updated"]["sentinel"])
        wait_for_audit(data_dir, "sentinel", moment)
        wait_until(lambda: (s := state_now(data_dir)) is not None and s["outbox"] == [])
        assert second.poll() is None
        kill_9(second)
    (delivered,) = receiver.delivered
    assert delivered == hung
    assert str(delivered["title"]) == "[CRITICAL] sentinel: withdraw_enabled"
    assert "What changed: withdraw: off -> on" in str(delivered["message"])
    assert len(receiver.requests) == 2  # the hung attempt, then the one delivery
    final = read_state(data_dir)
    assert_consistent(final)
    assert final["outbox"] == []
    text = log.read_text()
    assert "notification_sent" in text
    for secret in (SENTINEL, SENTINEL_KEY):
        assert secret not in text


#: How long after the journal grew each round's kill comes: spread over an audit interval.
KILL_DELAYS = (0.0, 0.4, 0.8)


def test_kill_9_during_audits_never_leaves_half_written_state(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """Repeated kill -9 while keys flip: the database checks out; facts, journal, alerts agree."""
    simulator, base_url = live_sim
    keys = [DOC, OTHER]
    config = write_config(
        tmp_path,
        keys,
        [receiver.url()],
        base_url=base_url,
        audit=LIVE_AUDIT,
        log={"format": "json", "level": "warning"},
    )
    data_dir = tmp_path / "data"
    stop_flipping = threading.Event()

    def flip() -> None:
        on = False
        while not stop_flipping.wait(0.1):
            on = not on
            for _, api_key, _ in keys:
                simulator.update_key(api_key, enableWithdrawals=on)

    flipper = threading.Thread(target=flip, name="flipper", daemon=True)
    flipper.start()
    try:
        journaled = 0
        for delay in KILL_DELAYS:
            with keymon_run(config, tmp_path / "keymon.log") as proc:
                wait_until(partial(journal_longer_than, data_dir, journaled), timeout=20)
                # Bounded: where in the schedule the kill lands, not a synchronisation.
                time.sleep(delay)
                kill_9(proc)
            state = read_state(data_dir)
            assert_consistent(state)
            assert len(state["journal"]) > journaled
            journaled = len(state["journal"])
    finally:
        stop_flipping.set()
        flipper.join(5)
    assert set(read_state(data_dir)["facts"]) == {"doc-key", "other-key"}


def daemon_port(log: Path, within: float = 20.0) -> int:
    """The HTTP port of the `keymon run` whose JSON log is ``log`` (from `keymon_started`)."""
    ports: list[int] = []

    def started() -> bool:
        text = log.read_text() if log.exists() else ""
        ports.extend(int(e["port"]) for e in log_events(text, "keymon_started"))
        return bool(ports)

    wait_until(started, timeout=within)
    return ports[-1]


def scrape_outcome(port: int, name: str) -> float:
    """keymon_notifications_total{outcome=name} from a running daemon's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'keymon_notifications_total{{outcome="{name}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no keymon_notifications_total{{outcome={name!r}}}")


def test_rotating_the_url_secret_of_a_running_daemon(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """`keymon run`, the channel answering 500, withdrawals switched on, then the URL's secret
    file rewritten to a second receiver: that one gets the message exactly once, the first
    never a 2xx delivery, nothing is dropped."""
    simulator, base_url = live_sim
    with Receiver() as old:
        old.answer_error(500)
        hook = tmp_path / "hook"
        hook.write_text(old.url(f"/hooks/{URL_TOKEN}") + "\n")
        config = write_config(
            tmp_path,
            [DOC],
            [{"file": str(hook)}],
            base_url=base_url,
            audit=LIVE_AUDIT,
            log={"format": "json", "level": "info"},
        )
        data_dir = tmp_path / "data"
        log = tmp_path / "keymon.log"
        with keymon_run(config, log) as proc:
            port = daemon_port(log)
            moment = wait_for_audit(data_dir, "doc-key", None)
            simulator.update_key(DOC_API_KEY, enableWithdrawals=True)
            old.wait_for(lambda rx: len(rx.requests) >= 1, timeout=20)
            hook.write_text(receiver.url(f"/new/{URL_TOKEN[::-1]}") + "\n")
            receiver.wait_for(lambda rx: len(rx.delivered) == 1, timeout=20)
            # Two more audits, then an empty outbox: nothing else is on its way anywhere.
            moment = wait_for_audit(data_dir, "doc-key", moment)
            wait_for_audit(data_dir, "doc-key", moment)
            wait_until(lambda: (s := state_now(data_dir)) is not None and s["outbox"] == [])
            assert scrape_outcome(port, "dropped") == 0
            assert scrape_outcome(port, "sent") == 1
            assert proc.poll() is None
        assert old.delivered == []
        assert len(old.requests) >= 1
    assert titles(receiver) == ["[CRITICAL] doc-key: withdraw_enabled"]
    assert len(receiver.requests) == 1
    text = log.read_text()
    assert log_events(text, "notifications_dropped") == []
    assert log_events(text, "notify_channels_rotated") != []
    for token in (URL_TOKEN, URL_TOKEN[::-1]):
        assert token not in text


def test_removing_a_url_from_a_running_daemon_reports_the_drop(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """A URL removed from the configuration of `keymon run` while it holds a message: the drop
    is logged with the channel's place and count, and counted in /metrics."""
    simulator, base_url = live_sim
    with Receiver() as removed:
        removed.answer_error(500)
        settings: dict[str, Any] = {
            "base_url": base_url,
            "audit": LIVE_AUDIT,
            "log": {"format": "json", "level": "info"},
        }
        config = write_config(tmp_path, [DOC], [receiver.url(), removed.url()], **settings)
        data_dir = tmp_path / "data"
        log = tmp_path / "keymon.log"
        with keymon_run(config, log) as proc:
            port = daemon_port(log)
            wait_for_audit(data_dir, "doc-key", None)
            simulator.update_key(DOC_API_KEY, enableWithdrawals=True)
            receiver.wait_for(lambda rx: len(rx.delivered) == 1, timeout=20)
            removed.wait_for(lambda rx: len(rx.requests) >= 1, timeout=20)
            write_config(tmp_path, [DOC], [receiver.url()], **settings)
            wait_until(lambda: log_events(log.read_text(), "notifications_dropped") != [], 20)
            assert scrape_outcome(port, "dropped") == 1
            assert proc.poll() is None
    (dropped,) = log_events(log.read_text(), "notifications_dropped")
    assert dropped["channel"] == "notify.urls[1] (json://...)"
    assert dropped["count"] == 1
    assert dropped["level"] == "warning"
    assert removed.delivered == []
    assert titles(receiver) == ["[CRITICAL] doc-key: withdraw_enabled"]


def test_every_rule_has_a_remediation() -> None:
    """Each rule's notification says what to do (key_locked included)."""
    assert set(notify.REMEDIATION) == set(Rule)
    assert "unlock" in notify.REMEDIATION[Rule.KEY_LOCKED]
