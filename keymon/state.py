"""Embedded state in ``data_dir`` (SQLite): last facts, change journal, alert state, outbox.

Everything an audit changes is written in **one transaction**: the key's last facts, the
journal rows of what changed, the alert state of each finding and the notifications those
transitions queue. SQLite in WAL mode makes a committed transaction durable against the
process dying and an interrupted one invisible, so a crash at any instant (kill -9 included)
loses nothing already recorded and leaves no half-written state. (``synchronous=NORMAL``: an
OS crash or power cut may lose the last transactions, never consistency.)

The schema is versioned (``PRAGMA user_version``) and migrated forward on start; a database
written by a newer keymon is refused rather than guessed at.

**One daemon per data_dir.** ``keymon run`` holds an exclusive OS lock (``flock``) on
``data_dir/keymon.lock`` for as long as it runs (:class:`DataDirLock`); the kernel releases it
when the process ends, ``kill -9`` included. A second daemon on the same directory exits at once
naming the holder's PID, instead of delivering every message and writing every journal row a
second time. ``check`` and ``history`` only read, and take no lock.

**Damage is never silent.** At start the daemon checks the file (:func:`open_state`): SQLite's
own ``quick_check``, the schema, and every row it will rely on. A file that is not a readable
keymon database is moved aside to ``keymon.sqlite3.corrupt-<UTC timestamp>`` (its ``-wal`` and
``-shm`` with it) and a fresh one is started; a state file that vanished after an earlier run
(the lock file remembers that there was one) counts as lost too. Either way the caller gets a
:class:`StateReset` to announce. Problems of the environment (permissions, a read-only or full
disk, I/O errors) are never mistaken for damage: they are a :class:`StateError` naming the path
and the cause, and nothing is moved.

Channel URLs are secrets, and they are rotated: a queued message belongs to a channel's place
in ``notify.urls`` (its *slot*), not to its URL. The outbox stores the slot; the ``channels``
table the SHA-256 fingerprint of the URL each place held when last configured (so a change
made while keymon was down is recognised at the next start); neither ever holds a URL. How a
new list re-routes the queues is :func:`keymon.notify.route_channels`. A row that cannot be read
is *quarantined* (``outbox.quarantined`` says why): kept for inspection, out of the queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from keymon.changes import Change
from keymon.model import AuditError, Coverage, Deadline, KeyFacts, Reason, TradingIndicator

DB_NAME = "keymon.sqlite3"
_T = TypeVar("_T")

#: Each entry migrates the schema from version ``index`` to ``index + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE key_facts (
        key           TEXT PRIMARY KEY,
        facts         TEXT,            -- JSON of the last successful audit's facts
        rejected      INTEGER,         -- 1/0 from the last audit that could tell, else NULL
        success_at    TEXT,            -- RFC 3339, last successful audit
        updated_at    TEXT NOT NULL
    );
    CREATE TABLE journal (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        key           TEXT NOT NULL,
        client        TEXT NOT NULL,
        exchange      TEXT NOT NULL,
        field         TEXT NOT NULL,
        before        TEXT NOT NULL,
        after         TEXT NOT NULL,
        seen_at       TEXT NOT NULL    -- when keymon first saw the new value
    );
    CREATE INDEX journal_key_seen ON journal (key, seen_at);
    CREATE INDEX journal_seen ON journal (seen_at);
    CREATE TABLE alerts (
        key           TEXT NOT NULL,
        rule          TEXT NOT NULL,
        permission    TEXT NOT NULL DEFAULT '',
        severity      TEXT NOT NULL,
        message       TEXT NOT NULL,
        firing_since  TEXT NOT NULL,
        last_notified TEXT,
        PRIMARY KEY (key, rule, permission)
    );
    CREATE TABLE outbox (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        channel       TEXT NOT NULL,   -- SHA-256 of the channel URL, never the URL
        kind          TEXT NOT NULL,   -- firing | reminder | resolved
        key           TEXT NOT NULL,
        rule          TEXT NOT NULL,
        severity      TEXT NOT NULL,
        title         TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        next_attempt  TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT
    );
    CREATE INDEX outbox_due ON outbox (next_attempt);
    """,
    """
    -- The key_rejected finding's message while rejected, so a restart keeps it firing.
    ALTER TABLE key_facts ADD COLUMN rejection TEXT;
    """,
    """
    -- Queued messages belong to a place in notify.urls (a slot), not to a URL's text, so a
    -- rotated URL delivers what its place had queued. `channels` remembers the fingerprint of
    -- the URL each place held. Rows of schema 2 were keyed by that fingerprint: each distinct
    -- one gets a provisional negative slot, which the first start routes to the place whose URL
    -- has that fingerprint, or drops and reports (keymon.notify.route_channels).
    CREATE TABLE channels (
        slot          INTEGER PRIMARY KEY,  -- place in notify.urls; < 0 before the first start
        fingerprint   TEXT NOT NULL         -- SHA-256 of the URL at that place, never the URL
    );
    INSERT INTO channels (slot, fingerprint)
        SELECT -ROW_NUMBER() OVER (ORDER BY MIN(id)), channel FROM outbox GROUP BY channel;
    CREATE TABLE outbox_by_slot (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        slot          INTEGER NOT NULL,  -- place in notify.urls (channels.slot), never the URL
        kind          TEXT NOT NULL,     -- firing | reminder | escalated | changed | resolved
        key           TEXT NOT NULL,
        rule          TEXT NOT NULL,
        severity      TEXT NOT NULL,
        title         TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        next_attempt  TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT,
        quarantined   TEXT               -- why the row could not be read; NULL: in the queue
    );
    INSERT INTO outbox_by_slot (id, slot, kind, key, rule, severity, title, body, created_at,
                                next_attempt, attempts, last_error)
        SELECT o.id, c.slot, o.kind, o.key, o.rule, o.severity, o.title, o.body, o.created_at,
               o.next_attempt, o.attempts, o.last_error
        FROM outbox o JOIN channels c ON c.fingerprint = o.channel;
    DROP TABLE outbox;
    ALTER TABLE outbox_by_slot RENAME TO outbox;
    CREATE INDEX outbox_due ON outbox (next_attempt);
    CREATE INDEX outbox_slot ON outbox (slot);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: The slot of a message whose channel was removed while it was being sent: delivered if that
#: attempt succeeds, otherwise dropped and reported.
DETACHED = -(2**62)


LOCK_NAME = "keymon.lock"

#: SQLite result codes (the low byte of an extended code) that describe the environment, not the
#: file: permissions, a read-only or full disk, I/O errors, another process holding it. A file
#: failing with one of these is never moved aside as damaged.
_ENVIRONMENT_CODES = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        23,  # SQLITE_AUTH
    }
)


class StateError(Exception):
    """The state database cannot be used (newer schema, permissions, a full disk, ...)."""


class StateDamaged(StateError):
    """The file is not a readable keymon state database (corrupt, foreign, bad rows)."""


class DataDirBusy(StateError):
    """Another running keymon holds the data_dir's lock."""


@dataclass(frozen=True, slots=True)
class StateReset:
    """The state was lost and a fresh one started: what the daemon must announce."""

    path: Path
    #: Where the unreadable file went; None when there was no file to move (it had vanished).
    moved_to: Path | None
    cause: str


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC, second precision kept to the microsecond for ordering."""
    # Always six fractional digits, so that text order is time order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What the database remembers of a key across restarts."""

    facts: KeyFacts | None
    rejected: bool | None
    rejection: str | None
    success_at: datetime | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    key: str
    rule: str
    permission: str
    severity: str
    message: str
    firing_since: datetime
    last_notified: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    slot: int
    kind: str
    key: str
    rule: str
    severity: str
    title: str
    body: str
    created_at: datetime
    next_attempt: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """An outbox row that could not be read: quarantined, with what could be read of it."""

    id: int
    slot: object
    key: str
    rule: str
    error: str


@dataclass(frozen=True, slots=True)
class JournalRow:
    key: str
    client: str
    exchange: str
    field: str
    before: str
    after: str
    seen_at: datetime


class StateDB:
    """One SQLite database per ``data_dir``; safe to share between threads."""

    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._lock = threading.RLock()
        if read_only:
            if not self.path.exists():
                raise StateError(f"{self.path}: no state yet (has keymon run with this data_dir?)")
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _check_access(self.path)
                # Autocommit mode: transactions are begun and committed explicitly below.
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except OSError as exc:
                raise StateError(f"{self.path}: cannot open: {_os_cause(exc)}") from None
            except sqlite3.Error as exc:
                raise StateError(f"{self.path}: cannot open: {exc}") from None
        self._db.row_factory = sqlite3.Row
        try:
            if not read_only:
                self._check_version()  # before the first write: refuse a file that is not ours
                self._db.execute("PRAGMA journal_mode=WAL")
                # WAL with synchronous=NORMAL: a committed transaction survives the process
                # being killed at any instant (kill -9, OOM); only an OS crash or power cut may
                # lose the last few, and never leaves the database inconsistent. FULL would
                # fsync on every audit: a sixth of the daemon's CPU at 1,000 keys.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
            else:
                self._check_version()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise _classify(self.path, exc) from None
        except StateError:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def verify(self) -> dict[str, StoredKey]:
        """Check that the whole file can be relied on; :class:`StateDamaged` says why not.

        Returns every key's remembered facts (:meth:`load_keys`), read once for both purposes.

        SQLite's ``quick_check``, every table and column the schema's migrations create, and
        every row the daemon reads back (facts, alerts, the journal's timestamps). An unreadable
        outbox row is not damage to the file: the notifier quarantines it, alone.
        """
        try:
            with self._lock:
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise StateDamaged(f"{self.path}: damaged: {'; '.join(problems)}")
                for table, columns in _expected_schema().items():
                    found = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
                    if not found:
                        raise StateDamaged(f"{self.path}: damaged: table {table} is missing")
                    if missing := sorted(columns - found):
                        raise StateDamaged(
                            f"{self.path}: damaged: table {table} lacks {', '.join(missing)}"
                        )
                bad = self._db.execute(
                    "SELECT id FROM journal WHERE typeof(seen_at) != 'text' "
                    "OR seen_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*' LIMIT 1"
                ).fetchone()
                if bad is not None:
                    raise StateDamaged(f"{self.path}: damaged: journal row {bad[0]} is unreadable")
        except sqlite3.DatabaseError as exc:
            raise _classify(self.path, exc) from None
        keys = self._read_rows("key_facts", self.load_keys)
        self._read_rows("alerts", self.alerts)
        return keys

    def _read_rows(self, table: str, read: Callable[[], _T]) -> _T:
        """``read()``, its failure to parse a row said as damage to ``table``."""
        try:
            return read()
        except sqlite3.DatabaseError as exc:
            raise _classify(self.path, exc) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StateDamaged(
                f"{self.path}: damaged: a row of table {table} is unreadable ({type(exc).__name__})"
            ) from None

    def _check_version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: written by a newer keymon (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); refusing to touch it"
            )
        if version == 0:
            # Another program's database (a wrong path, a mixed-up volume): never write into it.
            foreign = self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' LIMIT 1"
            ).fetchone()
            if foreign is not None:
                raise StateDamaged(
                    f"{self.path}: not a keymon state database: it holds table "
                    f"{foreign[0]} but no keymon schema version"
                )
        return version

    def _migrate(self) -> None:
        with self._lock:
            version = self._check_version()
            for index in range(version, SCHEMA_VERSION):
                # Each migration is one transaction, its version bump included.
                self._db.executescript(
                    f"BEGIN; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
                )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ facts and journal

    def load_keys(self) -> dict[str, StoredKey]:
        """Every key's remembered facts, for change detection across restarts."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, facts, rejected, rejection, success_at FROM key_facts"
            ).fetchall()
        return {
            row["key"]: StoredKey(
                facts_from_json(row["facts"]) if row["facts"] else None,
                None if row["rejected"] is None else bool(row["rejected"]),
                row["rejection"],
                parse_iso(row["success_at"]) if row["success_at"] else None,
            )
            for row in rows
        }

    @staticmethod
    def save_key(
        db: sqlite3.Connection,
        key: str,
        facts: KeyFacts | None,
        rejected: bool | None,
        rejection: str | None,
        success_at: datetime | None,
        now: datetime,
    ) -> None:
        db.execute(
            "INSERT INTO key_facts (key, facts, rejected, rejection, success_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET facts=excluded.facts, "
            "rejected=excluded.rejected, rejection=excluded.rejection, "
            "success_at=excluded.success_at, updated_at=excluded.updated_at",
            (
                key,
                facts_to_json(facts) if facts else None,
                None if rejected is None else int(rejected),
                rejection,
                iso(success_at) if success_at else None,
                iso(now),
            ),
        )

    @staticmethod
    def add_changes(
        db: sqlite3.Connection,
        key: str,
        client: str,
        exchange: str,
        changes: Sequence[Change],
        seen_at: datetime,
    ) -> None:
        db.executemany(
            "INSERT INTO journal (key, client, exchange, field, before, after, seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(key, client, exchange, c.field, c.before, c.after, iso(seen_at)) for c in changes],
        )

    def history(
        self, *, keys: Sequence[str] = (), since: datetime | None = None
    ) -> list[JournalRow]:
        """The change journal, newest first."""
        query = "SELECT * FROM journal WHERE 1=1"
        params: list[Any] = []
        if keys:
            query += f" AND key IN ({','.join('?' * len(keys))})"
            params += list(keys)
        if since is not None:
            query += " AND seen_at >= ?"
            params.append(iso(since))
        query += " ORDER BY seen_at DESC, id DESC"
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [
            JournalRow(
                r["key"],
                r["client"],
                r["exchange"],
                r["field"],
                r["before"],
                r["after"],
                parse_iso(r["seen_at"]),
            )
            for r in rows
        ]

    def journaled_keys(self) -> set[str]:
        """Every key name the journal holds rows for (configured or not any more)."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT DISTINCT key FROM journal")}

    # ------------------------------------------------------------------ alerts and outbox

    @staticmethod
    def alerts_for(db: sqlite3.Connection, key: str) -> dict[tuple[str, str], AlertRow]:
        rows = db.execute("SELECT * FROM alerts WHERE key = ?", (key,)).fetchall()
        return {(r["rule"], r["permission"]): _alert(r) for r in rows}

    def alerts(self) -> list[AlertRow]:
        with self._lock:
            return [_alert(r) for r in self._db.execute("SELECT * FROM alerts ORDER BY key")]

    @staticmethod
    def put_alert(db: sqlite3.Connection, alert: AlertRow) -> None:
        db.execute(
            "INSERT INTO alerts (key, rule, permission, severity, message, firing_since, "
            "last_notified) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key, rule, permission) DO "
            "UPDATE SET severity=excluded.severity, message=excluded.message, "
            "firing_since=excluded.firing_since, last_notified=excluded.last_notified",
            (
                alert.key,
                alert.rule,
                alert.permission,
                alert.severity,
                alert.message,
                iso(alert.firing_since),
                iso(alert.last_notified) if alert.last_notified else None,
            ),
        )

    @staticmethod
    def drop_alert(db: sqlite3.Connection, key: str, rule: str, permission: str) -> None:
        db.execute(
            "DELETE FROM alerts WHERE key=? AND rule=? AND permission=?", (key, rule, permission)
        )

    def forget_keys(self, keep: Sequence[str]) -> None:
        """Drop facts and alert state of keys no longer configured (the journal stays)."""
        marks = ",".join("?" * len(keep))
        with self.transaction() as db:
            db.execute(f"DELETE FROM key_facts WHERE key NOT IN ({marks})", list(keep))  # noqa: S608
            db.execute(f"DELETE FROM alerts WHERE key NOT IN ({marks})", list(keep))  # noqa: S608

    @staticmethod
    def enqueue(
        db: sqlite3.Connection,
        slots: Sequence[int],
        kind: str,
        key: str,
        rule: str,
        severity: str,
        title: str,
        body: str,
        now: datetime,
    ) -> None:
        """Queue one message for each channel (its slot: its place in ``notify.urls``)."""
        db.executemany(
            "INSERT INTO outbox (slot, kind, key, rule, severity, title, body, created_at, "
            "next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(s, kind, key, rule, severity, title, body, iso(now), iso(now)) for s in slots],
        )

    def due(self, now: datetime, limit: int = 50) -> tuple[list[OutboxRow], list[UnreadableRow]]:
        """Messages whose next attempt is due, oldest first; and the rows that could not be read.

        An unreadable row (a timestamp that is not one, a count that is not a number) is
        quarantined here, so it neither blocks the others nor comes back; so is one whose
        ``next_attempt`` is no date at all (it would otherwise never fall due).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE quarantined IS NULL AND "
                "(next_attempt <= ? OR julianday(next_attempt) IS NULL) ORDER BY id LIMIT ?",
                (iso(now), limit),
            ).fetchall()
            good: list[OutboxRow] = []
            bad: list[UnreadableRow] = []
            for r in rows:
                try:
                    good.append(_outbox(r))
                except Exception as exc:  # whatever is wrong with it, set it aside
                    bad.append(
                        UnreadableRow(
                            int(r["id"]),
                            r["slot"],
                            str(r["key"]),
                            str(r["rule"]),
                            f"{type(exc).__name__}: {exc}"[:500],
                        )
                    )
            if bad:
                with self.transaction() as db:
                    db.executemany(
                        "UPDATE outbox SET quarantined = ? WHERE id = ?",
                        [(b.error, b.id) for b in bad],
                    )
        return good, bad

    def pending(self) -> list[OutboxRow]:
        """Every queued message (quarantined rows aside), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM outbox WHERE quarantined IS NULL ORDER BY id")
            return [_outbox(r) for r in rows]

    def next_due(self) -> datetime | None:
        """When the next queued message falls due (None: nothing queued, or not a date).

        An unreadable time is not an error here: :meth:`due` quarantines its row.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt) FROM outbox WHERE quarantined IS NULL"
            ).fetchone()
        if not row or not row[0]:
            return None
        try:
            return parse_iso(str(row[0]))
        except ValueError:
            return None

    def delivered(self, message_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def discard(self, message_id: int, slot: int) -> bool:
        """Delete a message still queued at ``slot`` (its channel is gone); True if it was."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM outbox WHERE id = ? AND slot = ? AND quarantined IS NULL",
                (message_id, slot),
            )
            return cursor.rowcount > 0

    def retry_later(self, message_id: int, when: datetime, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE id = ?",
                (iso(when), error[:500], message_id),
            )

    def postpone(self, message_ids: Sequence[int], when: datetime) -> None:
        """Move messages to ``when`` without counting an attempt (their channel is down)."""
        if not message_ids:
            return
        with self.transaction() as db:
            db.executemany(
                "UPDATE outbox SET next_attempt = ? WHERE id = ?",
                [(iso(when), message_id) for message_id in message_ids],
            )

    def channel_places(self) -> dict[int, str]:
        """The fingerprint of the URL each slot held when channels were last configured."""
        with self._lock:
            rows = self._db.execute("SELECT slot, fingerprint FROM channels").fetchall()
        return {int(r["slot"]): str(r["fingerprint"]) for r in rows}

    def rechannel(
        self,
        route: Mapping[int, int],
        rotated: Collection[int],
        places: Sequence[str],
        now: datetime,
        *,
        busy: Collection[int] = (),
    ) -> dict[int, int]:
        """Re-route the queues to a new list of channels, in one transaction.

        ``route`` maps an old slot to its new one, for every queue that stays (identity
        included); ``rotated`` slots kept their place but got a new URL: their messages are due
        at once, their attempt count starts again. Messages at any other slot are dropped and
        counted per old slot (the return value), except those in ``busy`` (being sent right
        now), which become :data:`DETACHED`. ``places`` (fingerprints by slot) is recorded.
        """
        kept = list(route)
        keep_marks = ",".join("?" * len(kept))
        busy_ids = list(busy)
        busy_marks = ",".join("?" * len(busy_ids))
        with self.transaction() as db:
            gone = f"quarantined IS NULL AND slot NOT IN ({keep_marks})"
            counts = {
                int(r[0]): int(r[1])
                for r in db.execute(
                    f"SELECT slot, COUNT(*) FROM outbox WHERE {gone} "  # noqa: S608 - only ?s
                    f"AND id NOT IN ({busy_marks}) GROUP BY slot",
                    [*kept, *busy_ids],
                )
            }
            db.execute(
                f"DELETE FROM outbox WHERE {gone} AND id NOT IN ({busy_marks})",  # noqa: S608
                [*kept, *busy_ids],
            )
            db.execute(
                f"UPDATE outbox SET slot = ? WHERE {gone} AND id IN ({busy_marks})",  # noqa: S608
                [DETACHED, *kept, *busy_ids],
            )
            if rotated:
                marks = ",".join("?" * len(rotated))
                query = (
                    "UPDATE outbox SET next_attempt = ?, attempts = 0, last_error = NULL "  # noqa: S608 - only ?s
                    f"WHERE quarantined IS NULL AND slot IN ({marks})"
                )
                db.execute(query, [iso(now), *rotated])
            moves = [(old, new) for old, new in route.items() if old != new]
            if moves:
                # One statement, every row read before it is written: a swap stays a swap.
                cases = " ".join("WHEN ? THEN ?" for _ in moves)
                db.execute(
                    f"UPDATE outbox SET slot = CASE slot {cases} END "  # noqa: S608 - only ?s
                    f"WHERE slot IN ({','.join('?' * len(moves))})",
                    [*(v for move in moves for v in move), *(old for old, _ in moves)],
                )
            db.execute("DELETE FROM channels")
            db.executemany(
                "INSERT INTO channels (slot, fingerprint) VALUES (?, ?)", list(enumerate(places))
            )
        return counts


def _classify(path: Path, exc: sqlite3.DatabaseError) -> StateError:
    """An SQLite error as a :class:`StateError`: the environment's fault, or the file's."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _ENVIRONMENT_CODES:
        return StateError(f"{path}: cannot use: {exc}")
    return StateDamaged(f"{path}: not a readable keymon state database: {exc}")


def _os_cause(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _check_access(path: Path) -> None:
    """Refuse, naming the cause, a state file or directory this process may not read and write.

    SQLite would open a read-only file and fail later with a less telling message.
    """
    directory = path.parent
    for target in (directory, path):
        if not target.exists():
            continue
        if not os.access(target, os.R_OK | os.W_OK | (os.X_OK if target.is_dir() else 0)):
            info = target.stat()
            raise StateError(
                f"{target}: permission denied: keymon runs as uid {os.geteuid()}, the "
                f"{'directory' if target.is_dir() else 'file'} belongs to uid {info.st_uid} "
                f"with mode {info.st_mode & 0o777:04o}; it needs to read and write it"
            )


@functools.cache
def _expected_schema() -> dict[str, frozenset[str]]:
    """Every table and its columns, as the migrations create them (built once, in memory)."""
    db = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            db.executescript(migration)
        tables = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: frozenset(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
            for table in tables
        }
    finally:
        db.close()


def open_state(
    data_dir: Path, *, had_state: bool, now: datetime
) -> tuple[StateDB, StateReset | None, dict[str, StoredKey]]:
    """The daemon's state database, checked, with every key's remembered facts; a damaged one
    moved aside and replaced (by an empty one).

    ``had_state`` says that an earlier daemon on this data_dir created a state file (the lock
    file remembers it): a missing file is then a loss to announce, not a first start.
    """
    path = Path(data_dir) / DB_NAME
    if not path.exists():
        db = StateDB(data_dir)
        if not had_state:
            return db, None, {}
        return (
            db,
            StateReset(
                path,
                None,
                "the state file is missing although an earlier keymon created it here "
                "(deleted, or data_dir is a new volume holding only the old lock file)",
            ),
            {},
        )
    try:
        db = StateDB(data_dir)
        try:
            keys = db.verify()
        except StateError:
            db.close()
            raise
    except StateDamaged as exc:
        moved = _move_aside(path, now)
        return StateDB(data_dir), StateReset(path, moved, str(exc)), {}
    return db, None, keys


def _move_aside(path: Path, now: datetime) -> Path:
    """Rename the file (and its -wal/-shm) to ``<name>.corrupt-<UTC timestamp>``."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 0
    while target.exists():
        suffix += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{suffix}")
    try:
        for extra in ("-wal", "-shm"):
            companion = path.with_name(path.name + extra)
            if companion.exists():
                os.replace(companion, target.with_name(target.name + extra))
        os.replace(path, target)
    except OSError as exc:
        raise StateError(
            f"{path}: damaged, and it cannot be moved aside: {_os_cause(exc)}"
        ) from None
    return target


class DataDirLock:
    """The exclusive lock of one running daemon on its data_dir (see the module docstring).

    ``flock`` on ``data_dir/keymon.lock``: held while the file descriptor is open, released by
    the kernel when the process ends however it ends. The file holds the holder's PID, host and
    start time, for the message a second daemon prints, and whether a state file was created
    here, so that a state file that later vanishes is noticed. The file itself is never
    deleted: a deletion would let a third daemon lock a new file while the first still runs.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None
        self._info: dict[str, Any] = {}

    def acquire(self, now: datetime) -> dict[str, Any]:
        """Take the lock; return what the previous holder wrote. Raises :class:`DataDirBusy`."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot create the lock: {_os_cause(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_lock(fd)
            os.close(fd)
            raise DataDirBusy(_busy_message(self.path.parent, holder)) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"{self.path}: cannot lock: {_os_cause(exc)}") from None
        previous = _read_lock(fd)
        self._fd = fd
        self._info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": iso(now),
            "state_created": bool(previous.get("state_created")),
        }
        self._write()
        return previous

    def mark_state_created(self) -> None:
        """Remember that this data_dir has a state file from now on."""
        if self._fd is not None and not self._info.get("state_created"):
            self._info["state_created"] = True
            self._write()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _write(self) -> None:
        assert self._fd is not None
        data = (json.dumps(self._info) + "\n").encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            self.release()
            raise StateError(f"{self.path}: cannot write: {_os_cause(exc)}") from None


def _read_lock(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _busy_message(data_dir: Path, holder: dict[str, Any]) -> str:
    who = f"PID {holder['pid']}" if holder.get("pid") else "a process that has not written its PID"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        who += f" on host {holder['host']}"
    if holder.get("since"):
        who += f", running since {holder['since']}"
    return (
        f"{data_dir} is in use by another keymon run ({who}); two daemons on one data_dir "
        "would send every alert twice. Stop the other one, or give this one its own data_dir"
    )


def _alert(r: sqlite3.Row) -> AlertRow:
    return AlertRow(
        r["key"],
        r["rule"],
        r["permission"],
        r["severity"],
        r["message"],
        parse_iso(r["firing_since"]),
        parse_iso(r["last_notified"]) if r["last_notified"] else None,
    )


def _outbox(r: sqlite3.Row) -> OutboxRow:
    """One outbox row, read strictly: a field of the wrong type raises."""
    return OutboxRow(
        _integer(r["id"]),
        _integer(r["slot"]),
        _text(r["kind"]),
        _text(r["key"]),
        _text(r["rule"]),
        _text(r["severity"]),
        _text(r["title"]),
        _text(r["body"]),
        parse_iso(_text(r["created_at"])),
        parse_iso(_text(r["next_attempt"])),
        _integer(r["attempts"]),
    )


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {type(value).__name__}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {type(value).__name__}")
    return value


def facts_to_json(facts: KeyFacts) -> str:
    return json.dumps(
        {
            "coverage": str(facts.coverage),
            "permissions": dict(facts.permissions),
            "ip_restricted": facts.ip_restricted,
            "ip_list": list(facts.ip_list) if facts.ip_list is not None else None,
            "created_at": iso(facts.created_at) if facts.created_at else None,
            "deadlines": [{"kind": d.kind, "at": iso(d.at)} for d in facts.deadlines],
            "ip_unrestricted_note": facts.ip_unrestricted_note,
            "key_locked": facts.key_locked,
            "account_kind": facts.account_kind,
            "third_party_app": facts.third_party_app,
            "last_used_at": iso(facts.last_used_at) if facts.last_used_at else None,
            "trading_locked": facts.trading_locked,
            "trading_recover_at": iso(facts.trading_recover_at)
            if facts.trading_recover_at
            else None,
            "trading_trigger": dict(facts.trading_trigger)
            if facts.trading_trigger is not None
            else None,
            "trading_indicators": [
                {"kind": i.kind, "symbol": i.symbol, "value": i.value, "trigger": i.trigger}
                for i in facts.trading_indicators
            ]
            if facts.trading_indicators is not None
            else None,
            "account_status": facts.account_status,
            "trading_status_error": {
                "reason": str(facts.trading_status_error.reason),
                "message": facts.trading_status_error.message,
            }
            if facts.trading_status_error is not None
            else None,
        }
    )


def facts_from_json(text: str) -> KeyFacts:
    data = json.loads(text)
    return KeyFacts(
        coverage=Coverage(data["coverage"]),
        permissions={str(k): bool(v) for k, v in data["permissions"].items()},
        ip_restricted=data["ip_restricted"],
        ip_list=tuple(data["ip_list"]) if data["ip_list"] is not None else None,
        created_at=parse_iso(data["created_at"]) if data["created_at"] else None,
        deadlines=tuple(Deadline(d["kind"], parse_iso(d["at"])) for d in data["deadlines"]),
        # Absent from rows written before the field existed.
        ip_unrestricted_note=data.get("ip_unrestricted_note"),
        key_locked=data.get("key_locked"),
        account_kind=data.get("account_kind"),
        third_party_app=data.get("third_party_app"),
        last_used_at=parse_iso(data["last_used_at"]) if data.get("last_used_at") else None,
        trading_locked=data.get("trading_locked"),
        trading_recover_at=parse_iso(data["trading_recover_at"])
        if data.get("trading_recover_at")
        else None,
        trading_trigger={str(k): float(v) for k, v in data["trading_trigger"].items()}
        if data.get("trading_trigger") is not None
        else None,
        trading_indicators=tuple(
            TradingIndicator(
                str(i["kind"]), str(i["symbol"]), float(i["value"]), float(i["trigger"])
            )
            for i in data["trading_indicators"]
        )
        if data.get("trading_indicators") is not None
        else None,
        account_status=data.get("account_status"),
        trading_status_error=AuditError(
            Reason(data["trading_status_error"]["reason"]),
            str(data["trading_status_error"]["message"]),
        )
        if data.get("trading_status_error")
        else None,
    )
