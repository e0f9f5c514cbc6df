"""`keymon history`: the change journal kept in data_dir, newest first, filtered and bounded.

The journal is written by a real daemon (:class:`~keymon.app.App` against the simulator) on a
fake clock that starts ten days ago, so ``--since`` is checked against the real "now" the
command uses. The command runs in-process through :func:`keymon.cli.main` (with ``capsys``)
and once as a real ``python -m keymon history`` subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from keymon.app import App
from keymon.cli import main
from keymon.config import load
from keymon.simulator.binance import BinanceSimulator
from keymon.state import DB_NAME
from tests.conftest import DOC_API_KEY, DOC_SECRET, FakeClock

OTHER_KEY, OTHER_SECRET = "otherKey0123456789abcdef", "otherSecret0123456789"
DAY = 86_400.0


def write_config(tmp_path: Path, data_dir: Path | None = None) -> Path:
    """A configuration with two keys (secrets in files) and its data_dir."""
    entries = []
    for name, api_key, secret in (
        ("doc-key", DOC_API_KEY, DOC_SECRET),
        ("other-key", OTHER_KEY, OTHER_SECRET),
    ):
        secret_file = tmp_path / f"{name}.secret"
        secret_file.write_text(secret + "\n")
        entries.append(
            {
                "name": name,
                "client": "acme" if name == "doc-key" else "globex",
                "exchange": "binance",
                "api_key": api_key,
                "api_secret": {"file": str(secret_file)},
            }
        )
    config = {
        "listen": "127.0.0.1:0",
        "data_dir": str(data_dir or tmp_path / "data"),
        "exchanges": {"binance": {"base_url": "https://binance.test"}},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": entries,
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class Entry:
    """One expected journal entry."""

    key: str
    client: str
    field: str
    before: str
    after: str
    seen_at: datetime

    def json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "client": self.client,
            "exchange": "binance",
            "field": self.field,
            "before": self.before,
            "after": self.after,
            "seen_at": self.seen_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass
class Journal:
    """A data_dir written by a daemon, and what its journal must say (oldest first)."""

    config: Path
    entries: list[Entry]
    app: App


def moment(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


async def record_journal(tmp_path: Path, *, keep_open: bool = False) -> Journal:
    """Three changes, ten days ago, two days ago and one day ago, seen by a running daemon."""
    clock = FakeClock(float(int(time.time() - 10 * DAY)))
    sim = BinanceSimulator(clock=clock)
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    sim.add_key(OTHER_KEY, hmac_secret=OTHER_SECRET)
    config = write_config(tmp_path)
    app = App(load(config), transport_factory=lambda _n: sim.transport(), clock=clock)
    await app.start(serve_http=False, schedule=False)
    entries = []
    await app.audit_all()  # what the keys look like: no change yet
    clock.advance(3600)
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_all()
    entries.append(Entry("doc-key", "acme", "withdraw", "off", "on", moment(clock)))
    clock.advance(8 * DAY - 3600)
    sim.update_key(OTHER_KEY, enableFutures=True)
    await app.audit_all()
    entries.append(Entry("other-key", "globex", "futures_trade", "off", "on", moment(clock)))
    clock.advance(DAY)
    sim.update_key(DOC_API_KEY, ipRestrict=False)
    await app.audit_all()
    entries.append(Entry("doc-key", "acme", "ip_restricted", "on", "off", moment(clock)))
    if not keep_open:
        await app.stop()
    return Journal(config, entries, app)


def history(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    """Run `keymon history --config CONFIG ARGS...` in-process: (status, stdout, stderr)."""
    capsys.readouterr()  # drop what the daemon logged before
    status = main(["history", "--config", str(config), *args])
    out, err = capsys.readouterr()
    return status, out, err


def as_json(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> list[dict[str, Any]]:
    status, out, err = history(capsys, config, "--format", "json", *args)
    assert status == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


# ----------------------------------------------------------------------------- listing


async def test_history_lists_the_change_that_fired_newest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows every change in the window, newest first, as `field: before -> after`."""
    journal = await record_journal(tmp_path)
    doc_withdraw, other_futures, doc_ip = journal.entries
    status, out, err = history(capsys, journal.config, "--since", "30d")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["SEEN", "(UTC)", "KEY", "CLIENT", "EXCHANGE", "CHANGE"]
    rows = lines[1:]
    assert len(rows) == 3
    for line, entry in zip(rows, [doc_ip, other_futures, doc_withdraw], strict=True):
        assert line.startswith(entry.seen_at.strftime("%Y-%m-%d %H:%M:%S"))
        assert line.split()[2:5] == [entry.key, entry.client, "binance"]
        assert line.endswith(f"{entry.field}: {entry.before} -> {entry.after}")
    assert rows[2].endswith("withdraw: off -> on")


async def test_history_json_has_before_and_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json: one object per change, newest first: key, field, before, after, seen_at."""
    journal = await record_journal(tmp_path)
    rows = as_json(capsys, journal.config, "--since", "30d")
    assert rows == [e.json() for e in reversed(journal.entries)]
    withdraw = rows[-1]
    assert (withdraw["field"], withdraw["before"], withdraw["after"]) == ("withdraw", "off", "on")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param(["doc-key"], [2, 0], id="one-key"),
        pytest.param(["other-key"], [1], id="other-key"),
        pytest.param(["doc-key", "other-key"], [2, 1, 0], id="both-keys"),
    ],
)
async def test_history_key_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: list[str], expected: list[int]
) -> None:
    """--key NAME (repeatable) lists only those keys' changes."""
    journal = await record_journal(tmp_path)
    args = [arg for name in keys for arg in ("--key", name)]
    rows = as_json(capsys, journal.config, "--since", "30d", *args)
    assert rows == [journal.entries[i].json() for i in expected]


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        pytest.param("30d", [2, 1, 0], id="30d-all"),
        pytest.param("10d", [2, 1, 0], id="10d"),
        pytest.param("9d", [2, 1], id="9d"),
        pytest.param("7d", [2, 1], id="7d"),
        pytest.param("1d12h", [2], id="1d12h"),
        pytest.param("1h", [], id="1h-none"),
        pytest.param(None, [2, 1], id="default-7d"),
    ],
)
async def test_history_since_bounds_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str | None, expected: list[int]
) -> None:
    """--since DURATION lists only changes first seen within it (default 7d)."""
    journal = await record_journal(tmp_path)
    args = ["--since", since] if since is not None else []
    rows = as_json(capsys, journal.config, *args)
    assert rows == [journal.entries[i].json() for i in expected]


# ----------------------------------------------------------------------------- nothing yet


async def test_history_without_changes_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data_dir where keymon ran but saw no change prints "no changes recorded", exit 0."""
    sim = BinanceSimulator()
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    sim.add_key(OTHER_KEY, hmac_secret=OTHER_SECRET)
    config = write_config(tmp_path)
    app = App(load(config), transport_factory=lambda _n: sim.transport())
    await app.start(serve_http=False, schedule=False)
    try:
        await app.audit_all()
        await app.audit_all()
    finally:
        await app.stop()
    status, out, err = history(capsys, config)
    assert (status, err) == (0, "")
    assert out.startswith("no changes recorded")
    assert as_json(capsys, config) == []


@pytest.mark.parametrize(
    "fmt", [pytest.param("table", id="table"), pytest.param("json", id="json")]
)
def test_history_on_a_new_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Before keymon ever ran: nothing recorded, exit 0, and no state is created by looking."""
    data_dir = tmp_path / "never-ran"
    config = write_config(tmp_path, data_dir)
    status, out, err = history(capsys, config, "--format", fmt)
    assert (status, err) == (0, "")
    if fmt == "json":
        assert json.loads(out) == []
    else:
        assert out.startswith("no changes recorded")
    assert not data_dir.exists()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "since",
    [
        pytest.param("soon", id="word"),
        pytest.param("5x", id="bad-unit"),
        pytest.param("7 days", id="spelled-out"),
        pytest.param("", id="empty"),
        pytest.param("-3d", id="negative"),
    ],
)
def test_bad_since_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """A --since that is not a duration: exit 2, one message naming it, no traceback."""
    config = write_config(tmp_path)
    status, out, err = history(capsys, config, f"--since={since}")
    assert status == 2
    assert out == ""
    assert "--since" in err
    assert "Traceback" not in err


def test_history_with_an_invalid_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid configuration file: exit 2 with its problems, never a traceback."""
    config = tmp_path / "bad.yaml"
    config.write_text("keys: []\naudit: {interval: soon}\n")
    status, out, err = history(capsys, config)
    assert status == 2
    assert out == ""
    assert "audit.interval" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- real process


async def test_history_subprocess_while_the_daemon_runs(tmp_path: Path) -> None:
    """`python -m keymon history` reads the journal of a daemon that still holds the database."""
    journal = await record_journal(tmp_path, keep_open=True)
    try:
        assert (tmp_path / "data" / DB_NAME).exists()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keymon",
            "history",
            "--config",
            str(journal.config),
            "--key",
            "doc-key",
            "--since",
            "30d",
            "--format",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await journal.app.stop()
    out, err = raw_out.decode(), raw_err.decode()
    assert proc.returncode == 0, err
    assert json.loads(out) == [journal.entries[2].json(), journal.entries[0].json()]
    assert DOC_SECRET not in out + err
    assert DOC_API_KEY not in out + err
    assert datetime.now(UTC) - journal.entries[0].seen_at > timedelta(days=9)


# ----------------------------------------------------------------------------- which keys, where


async def test_history_refuses_a_key_known_neither_to_config_nor_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--key nope` is a mistake, said as one (exit 2), not an empty listing."""
    journal = await record_journal(tmp_path)
    status, out, err = history(capsys, journal.config, "--key", "nope", "--since", "30d")
    assert (status, out) == (2, "")
    assert f"--key nope: no key of that name in {journal.config}" in err
    assert str((tmp_path / "data" / DB_NAME).absolute()) in err


async def test_history_of_a_key_removed_from_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key no longer configured keeps its journal, and `--key` still reads it."""
    journal = await record_journal(tmp_path)
    data = yaml.safe_load(journal.config.read_text())
    data["keys"] = [k for k in data["keys"] if k["name"] != "other-key"]
    journal.config.write_text(yaml.safe_dump(data))
    rows = as_json(capsys, journal.config, "--key", "other-key", "--since", "30d")
    assert [(r["key"], r["field"]) for r in rows] == [("other-key", "futures_trade")]


def test_history_says_where_it_looked_for_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No state file: the listing names the absolute path it looked at."""
    config = write_config(tmp_path, Path("relative-data"))
    status, out, err = history(capsys, config)
    assert (status, err) == (0, "")
    assert out.startswith("no changes recorded: no state at ")
    assert str((Path.cwd() / "relative-data" / DB_NAME).absolute()) in out


def test_keymon_config_names_the_default_configuration(tmp_path: Path) -> None:
    """Without --config, every command reads $KEYMON_CONFIG (the image sets it)."""
    config = write_config(tmp_path)
    env = {**os.environ, "KEYMON_CONFIG": str(config)}

    def validate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keymon", "validate-config"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    done = validate()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: valid (2 key(s)")
    env.pop("KEYMON_CONFIG")
    done = validate()
    assert done.returncode == 2
    assert "config/keymon.yaml" in done.stderr
