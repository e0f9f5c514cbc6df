"""One daemon per data_dir, and a damaged or vanished state file that is never silently replaced.

The faults are inflicted on real processes: ``keymon run`` subprocesses against the Binance
simulator served on 127.0.0.1 and a real webhook receiver, a second daemon started on the same
data_dir, ``kill -9``, a state file overwritten with garbage, a file keymon may not write. The
kinds of damage are then each checked in-process against :func:`keymon.state.open_state` and
the :class:`~keymon.app.App` that uses it.
"""

# The fixtures live_sim and receiver come from tests.test_notify and are used by name.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from keymon.app import App
from keymon.config import load
from keymon.simulator.binance import BinanceSimulator
from keymon.state import (
    DB_NAME,
    LOCK_NAME,
    DataDirBusy,
    DataDirLock,
    StateDB,
    StateError,
    open_state,
)
from tests.conftest import DOC_API_KEY, DOC_SECRET, SENTINEL, FakeClock, wait_until
from tests.notify_receiver import Receiver
from tests.test_notify import (  # noqa: F401
    DOC,
    LIVE_AUDIT,
    SENTINEL_KEY,
    WITHDRAW_TITLE,
    keymon_run,
    kill_9,
    live_sim,
    receiver,
    state_now,
    titles,
    wait_for_audit,
    withdraw_fired,
    write_config,
)

RESET_TITLE = "[WARNING] keymon: state file reset, alerts may repeat"
NOW = datetime.fromtimestamp(FakeClock().now, tz=UTC)


def started_port(log: Path, offset: int) -> int:
    """The /metrics port of the daemon that logs from ``offset`` on (its keymon_started event)."""
    ports: list[int] = []

    def seen() -> bool:
        for line in log.read_bytes()[offset:].decode().splitlines():
            if '"keymon_started"' in line:
                ports.append(int(json.loads(line)["port"]))
        return bool(ports)

    wait_until(seen, timeout=20)
    return ports[-1]


def metric(port: int, name: str) -> float | None:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return float(match.group(1)) if match else None


def run_once(config: Path, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keymon", *extra, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def watched(rx: Receiver) -> list[str]:
    """Delivered titles about withdrawals and resets, oldest first.

    A loaded machine can slow an audit into audit_failing; that alert is not under test here.
    """
    return [t for t in titles(rx) if "withdraw_enabled" in t or t == RESET_TITLE]


def live_config(tmp_path: Path, base_url: str, rx: Receiver) -> Path:
    return write_config(
        tmp_path,
        [("sentinel", SENTINEL_KEY, SENTINEL)],
        [rx.url("/hooks/keymon")],
        base_url=base_url,
        audit=LIVE_AUDIT,
        log={"format": "json", "level": "info"},
    )


# ----------------------------------------------------------------------------- one daemon


def test_second_daemon_on_the_same_data_dir_exits_1_naming_the_holder(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """A second `keymon run` exits 1 at once; the first delivers every alert exactly once."""
    simulator, base_url = live_sim
    config = live_config(tmp_path, base_url, receiver)
    data_dir = tmp_path / "data"
    log = tmp_path / "keymon.log"
    with keymon_run(config, log) as first:
        moment = wait_for_audit(data_dir, "sentinel", None)
        second = run_once(config, "run", timeout=20)
        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr
        assert str(data_dir) in second.stderr
        assert f"PID {first.pid}" in second.stderr
        assert "in use by another keymon run" in second.stderr
        # Readers take no lock: history and check work beside the running daemon.
        assert run_once(config, "history").returncode == 0
        assert run_once(config, "check").returncode == 0
        simulator.update_key(SENTINEL_KEY, enableWithdrawals=True)
        receiver.wait_for(lambda rx: len(watched(rx)) == 1, timeout=20)
        wait_for_audit(data_dir, "sentinel", moment)
        # Delivered and recorded as delivered: a kill -9 between the two may repeat a message
        # (documented), which is not what this test is about.
        wait_until(lambda: (s := state_now(data_dir)) is not None and s["outbox"] == [])
        assert first.poll() is None
        kill_9(first)
    # kill -9 releases the lock: the next daemon starts, and repeats nothing.
    with keymon_run(config, log) as third:
        moment = wait_for_audit(data_dir, "sentinel", None)
        wait_for_audit(data_dir, "sentinel", moment)
        assert third.poll() is None
    assert watched(receiver) == ["[CRITICAL] sentinel: withdraw_enabled"]


async def test_in_process_the_lock_is_taken_and_released(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    assert lock.acquire(NOW) == {}
    with pytest.raises(DataDirBusy, match=rf"PID {os.getpid()}"):
        DataDirLock(tmp_path).acquire(NOW)
    lock.mark_state_created()
    lock.release()
    again = DataDirLock(tmp_path)
    previous = again.acquire(NOW)
    assert previous["pid"] == os.getpid()
    assert previous["state_created"] is True
    again.release()


# ----------------------------------------------------------------------------- damage, for real


def test_damaged_state_file_is_moved_aside_and_announced(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """Garbage in the state file: moved aside, a fresh start, said in the log, metric, channel."""
    simulator, base_url = live_sim
    config = live_config(tmp_path, base_url, receiver)
    data_dir = tmp_path / "data"
    log = tmp_path / "keymon.log"
    simulator.update_key(SENTINEL_KEY, enableWithdrawals=True)
    with keymon_run(config, log) as first:
        receiver.wait_for(lambda rx: len(watched(rx)) == 1, timeout=20)
        wait_until(lambda: (s := state_now(data_dir)) is not None and s["outbox"] == [])
        kill_9(first)
    state = data_dir / DB_NAME
    for extra in ("-wal", "-shm"):
        state.with_name(DB_NAME + extra).unlink(missing_ok=True)
    damaged = b"this is not a database, it was a disk error " * 200
    state.write_bytes(damaged)
    offset = log.stat().st_size
    with keymon_run(config, log) as second:
        port = started_port(log, offset)
        receiver.wait_for(lambda rx: len(watched(rx)) == 3, timeout=20)
        assert metric(port, "keymon_state_reset_total") == 1.0
        assert second.poll() is None
    (kept,) = data_dir.glob(f"{DB_NAME}.corrupt-*")
    assert kept.read_bytes() == damaged  # nothing recorded is destroyed
    assert re.fullmatch(rf"{re.escape(DB_NAME)}\.corrupt-\d{{8}}T\d{{6}}Z", kept.name)
    # The announcement first, then the alert again (documented: it may repeat after a reset).
    assert watched(receiver) == [
        "[CRITICAL] sentinel: withdraw_enabled",
        RESET_TITLE,
        "[CRITICAL] sentinel: withdraw_enabled",
    ]
    (notice,) = [str(b["message"]) for b in receiver.delivered if b["title"] == RESET_TITLE]
    assert str(kept) in notice
    assert "alerts that were already sent may be sent again" in notice
    events = [json.loads(line) for line in log.read_text().splitlines() if "state_reset" in line]
    (event,) = events
    assert event["level"] == "error"
    assert event["moved_to"] == str(kept)
    assert "not a readable keymon state database" in event["cause"]
    assert SENTINEL not in log.read_text()


def test_unwritable_state_file_exits_1_naming_path_and_cause(
    tmp_path: Path, live_sim: tuple[BinanceSimulator, str], receiver: Receiver
) -> None:
    """Permissions are not damage: exit 1 with the path and the cause, nothing moved aside."""
    if shutil.which("setpriv") is None and os.geteuid() == 0:
        pytest.skip("root ignores file modes, and setpriv is not here to drop that power")
    _, base_url = live_sim
    config = live_config(tmp_path, base_url, receiver)
    data_dir = tmp_path / "data"
    StateDB(data_dir).close()
    state = data_dir / DB_NAME
    before = state.read_bytes()
    state.chmod(0o444)
    prefix: list[str] = []
    if os.geteuid() == 0:  # as root, drop the capabilities that override file modes
        prefix = ["setpriv", "--securebits", "+noroot,+noroot_locked,+no_setuid_fixup"]
        prefix += ["--bounding-set", "-all", "--inh-caps", "-all", "--"]
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "keymon", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"keymon: cannot start: data_dir: {state}: permission denied" in done.stderr
    assert "mode 0444" in done.stderr
    assert state.read_bytes() == before
    assert list(data_dir.glob("*.corrupt-*")) == []


# ----------------------------------------------------------------------------- kinds of damage


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 1000)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _header_smashed(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"Not SQLite fmt 3"
    path.write_bytes(bytes(data))


def _foreign_database(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()


def _sql(statement: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        db = sqlite3.connect(path)
        db.execute(statement)
        db.commit()
        db.close()

    return damage


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage": (_garbage, "not a readable keymon state database"),
    "truncated": (_truncated, "damaged|not a readable"),
    "header smashed": (_header_smashed, "not a readable keymon state database"),
    "foreign database": (_foreign_database, "holds table photos but no keymon schema"),
    "table dropped": (_sql("DROP TABLE alerts"), "table alerts is missing"),
    "bad facts row": (
        _sql("UPDATE key_facts SET facts = '{not json'"),
        "a row of table key_facts is unreadable",
    ),
    "bad alert time": (
        _sql("UPDATE alerts SET firing_since = 'yesterday'"),
        "a row of table alerts is unreadable",
    ),
    "bad journal time": (
        _sql(
            "INSERT INTO journal (key, client, exchange, field, before, after, seen_at) "
            "VALUES ('k', 'c', 'binance', 'withdraw', 'off', 'on', 'soon')"
        ),
        "journal row .* is unreadable",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_each_kind_of_damage_is_moved_aside_and_a_fresh_file_works(
    kind: str,
    tmp_path: Path,
    sim: BinanceSimulator,
    clock: FakeClock,
    receiver: Receiver,
) -> None:
    damage, cause = DAMAGE[kind]
    config = write_config(tmp_path, [DOC], [receiver.url()])
    app = App(load(config), transport_factory=lambda _n: sim.transport(), clock=clock)
    await app.start(serve_http=False, schedule=False)
    await withdraw_fired(app, sim, receiver)
    await app.stop()
    state = tmp_path / "data" / DB_NAME
    damage(state)
    for extra in ("-wal", "-shm"):
        state.with_name(DB_NAME + extra).unlink(missing_ok=True)
    damaged = state.read_bytes()

    app = App(load(config), transport_factory=lambda _n: sim.transport(), clock=clock)
    try:
        await app.start(serve_http=False, schedule=False)
        (kept,) = state.parent.glob(f"{DB_NAME}.corrupt-*")
        assert kept.read_bytes() == damaged
        value = app.registry.get_sample_value("keymon_state_reset_total")
        assert value == 1.0
        assert await app.notifier.deliver_due() == 1
        assert titles(receiver)[-1] == RESET_TITLE
        assert re.search(cause, str(receiver.delivered[-1]["message"]))
        # The fresh file works: the next audit records, alerts and journals again.
        await app.audit_all()
        assert [a.rule for a in app.db.alerts()] == ["withdraw_enabled"]
    finally:
        await app.stop()
    StateDB(state.parent).verify()


async def test_a_vanished_state_file_is_announced(
    tmp_path: Path, sim: BinanceSimulator, clock: FakeClock, receiver: Receiver
) -> None:
    """The lock file remembers a state file was created: its disappearance is a loss."""
    config = write_config(tmp_path, [DOC], [receiver.url()])
    app = App(load(config), transport_factory=lambda _n: sim.transport(), clock=clock)
    await app.start(serve_http=False, schedule=False)
    await withdraw_fired(app, sim, receiver)
    await app.stop()
    for extra in ("", "-wal", "-shm"):
        (tmp_path / "data" / (DB_NAME + extra)).unlink(missing_ok=True)
    app = App(load(config), transport_factory=lambda _n: sim.transport(), clock=clock)
    try:
        await app.start(serve_http=False, schedule=False)
        assert app.registry.get_sample_value("keymon_state_reset_total") == 1.0
        assert await app.notifier.deliver_due() == 1
        assert titles(receiver) == [WITHDRAW_TITLE, RESET_TITLE]
        assert "the state file is missing" in str(receiver.delivered[-1]["message"])
    finally:
        await app.stop()


async def test_first_start_and_a_healthy_restart_announce_nothing(
    tmp_path: Path, sim: BinanceSimulator, clock: FakeClock, receiver: Receiver
) -> None:
    config = write_config(tmp_path, [DOC], [receiver.url()])
    for _ in range(2):
        app = App(load(config), transport_factory=lambda _n: sim.transport(), clock=clock)
        try:
            await app.start(serve_http=False, schedule=False)
            assert app.registry.get_sample_value("keymon_state_reset_total") == 0.0
            await app.audit_all()
            await app.notifier.deliver_due()
        finally:
            await app.stop()
    assert receiver.delivered == []
    assert (tmp_path / "data" / LOCK_NAME).exists()
    assert list((tmp_path / "data").glob("*.corrupt-*")) == []


def test_open_state_never_moves_a_file_written_by_a_newer_keymon(tmp_path: Path) -> None:
    StateDB(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("PRAGMA user_version = 999")
    db.close()
    with pytest.raises(StateError, match="written by a newer keymon"):
        open_state(tmp_path, had_state=True, now=NOW)
    assert list(tmp_path.glob("*.corrupt-*")) == []


def test_history_reads_beside_a_damaged_file_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, [("doc-key", DOC_API_KEY, DOC_SECRET)], [])
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _garbage(data_dir / DB_NAME)
    done = run_once(config, "history")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{data_dir / DB_NAME}: not a readable keymon state database" in done.stderr
