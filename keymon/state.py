"""Embedded state in ``data_dir`` (SQLite): last facts, change journal, alert state, outbox.

Everything an audit changes is written in **one transaction**: the key's last facts, the
journal rows of what changed, the alert state of each finding and the notifications those
transitions queue. SQLite in WAL mode makes a committed transaction durable against the
process dying and an interrupted one invisible, so a crash at any instant (kill -9 included)
loses nothing already recorded and leaves no half-written state. (``synchronous=NORMAL``: an
OS crash or power cut may lose the last transactions, never consistency.)

The schema is versioned (``PRAGMA user_version``) and migrated forward on start; a database
written by a newer keymon is refused rather than guessed at.

Channel URLs are secrets, and they are rotated: a queued message belongs to a channel's place
in ``notify.urls`` (its *slot*), not to its URL. The outbox stores the slot; the ``channels``
table the SHA-256 fingerprint of the URL each place held when last configured (so a change
made while keymon was down is recognised at the next start); neither ever holds a URL. How a
new list re-routes the queues is :func:`keymon.notify.route_channels`. A row that cannot be read
is *quarantined* (``outbox.quarantined`` says why): kept for inspection, out of the queue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keymon.changes import Change
from keymon.model import Coverage, Deadline, KeyFacts

DB_NAME = "keymon.sqlite3"

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


class StateError(Exception):
    """The state database cannot be used (newer schema, unreadable file)."""


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
                # Autocommit mode: transactions are begun and committed explicitly below.
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except (OSError, sqlite3.Error) as exc:
                raise StateError(f"{self.path}: cannot open: {exc}") from None
        self._db.row_factory = sqlite3.Row
        try:
            if not read_only:
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
            raise StateError(f"{self.path}: not a keymon state database: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _check_version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: written by a newer keymon (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); refusing to touch it"
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
    )
