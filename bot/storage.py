"""Every piece of persistent state, behind one interface: ``Storage``.

The audit trail, chat-added schedules and their last runs, the inbound outbox of the
two-way bridge, and the reply threads (which command last paged a number, so an answer
lands under it) all live here. No other module writes SQL: they call these methods with
and get back the small records below. ``SqliteStorage`` is the embedded default (the
file at ``audit.path``); a second implementation only has to keep the same promises.

SQLite calls block, so they never run on the event loop: one worker thread owns the
connection and every statement is queued to it, which also serialises writers. WAL
mode makes a committed write survive the process being killed right after it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    chat_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    recipients TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    job_ids TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user_id, id);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    every TEXT NOT NULL,
    command TEXT NOT NULL,
    created_by INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    name TEXT PRIMARY KEY,
    last_run REAL NOT NULL,
    last_reply TEXT
);
CREATE TABLE IF NOT EXISTS threads (
    number TEXT PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    channel TEXT NOT NULL,
    number TEXT NOT NULL,
    body TEXT,
    digest TEXT NOT NULL,
    chat_id INTEGER NOT NULL,
    reply_to INTEGER,
    posted REAL,
    post_id INTEGER,
    claimed_until REAL,
    holder TEXT,
    batch INTEGER,
    parts_done INTEGER NOT NULL DEFAULT 0,
    maybe_sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbound_pending ON inbound (posted, chat_id, id);
CREATE INDEX IF NOT EXISTS inbound_digest ON inbound (digest, received);
CREATE INDEX IF NOT EXISTS inbound_post ON inbound (chat_id, post_id);
CREATE TABLE IF NOT EXISTS prompts (
    token TEXT PRIMARY KEY,
    created REAL NOT NULL,
    user_id INTEGER NOT NULL,
    request TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_slots (
    name TEXT NOT NULL,
    slot TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (name, slot)
);
CREATE TABLE IF NOT EXISTS schedule_firsts (
    name TEXT PRIMARY KEY,
    first_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    update_id INTEGER PRIMARY KEY,
    received REAL NOT NULL,
    owner TEXT NOT NULL,
    payload TEXT,
    done INTEGER NOT NULL DEFAULT 0
);
"""
_ADDED_COLUMNS = (
    ("audit", "job_ids", "TEXT NOT NULL DEFAULT ''"),
    ("inbound", "claimed_until", "REAL"),
    ("inbound", "holder", "TEXT"),
    ("inbound", "batch", "INTEGER"),
    ("inbound", "parts_done", "INTEGER NOT NULL DEFAULT 0"),
    ("inbound", "maybe_sent", "INTEGER NOT NULL DEFAULT 0"),
)
SLOTS_KEPT_S = 7 * 24 * 3600.0
PROMPTS_KEPT_S = 3600.0  # a prompt expires after 5 minutes; its text goes within the hour
UPDATES_KEPT_S = 48 * 3600.0  # handled update ids: at least 24 hours, as promised


class Outcome(Enum):
    OK = "ok"
    ERROR = "error"
    DENIED = "denied"
    UNKNOWN = "unknown"
    DRY_RUN = "dry-run"
    USAGE = "usage"
    CANCELLED = "cancelled"
    PENDING = "pending"


@dataclass(frozen=True)
class AuditEntry:
    chat_id: int
    user_id: int
    command: str
    recipients: tuple[str, ...]
    outcome: Outcome
    detail: str
    at: float = 0.0
    job_ids: tuple[str, ...] = ()  # WhatsMate's ids of the jobs a v3 send or /pdf created


AUDIT_COLUMNS = "at, chat_id, user_id, command, recipients, outcome, detail, job_ids"


def audit_row(entry: AuditEntry) -> tuple[object, ...]:
    """An entry as the audit table's columns (``AUDIT_COLUMNS``, in order)."""
    return (
        entry.at,
        entry.chat_id,
        entry.user_id,
        entry.command,
        ",".join(entry.recipients),
        entry.outcome.value,
        entry.detail,
        ",".join(entry.job_ids),
    )


def audit_entry(row: Iterable[Any]) -> AuditEntry:
    """The entry of an audit row read as ``SELECT {AUDIT_COLUMNS}``."""
    at, chat_id, user_id, command, recipients, outcome, detail, job_ids = row
    return AuditEntry(
        chat_id,
        user_id,
        command,
        tuple(filter(None, recipients.split(","))),
        Outcome(outcome),
        detail,
        at,
        tuple(filter(None, job_ids.split(","))),
    )


@dataclass(frozen=True)
class Arrival:
    """An inbound message to store, and the windows that decide where it goes."""

    channel: str
    number: str
    body: str
    digest: str  # the same delivery again has the same digest
    received: float
    repeat_after: float  # a same digest received after this is a repeat
    thread_after: float  # a command that sent to the number after this is its thread
    default_chat: int


@dataclass(frozen=True)
class StoredSchedule:
    """A schedule added from the chat with ``/schedule add``."""

    name: str
    chat_id: int
    every: str
    command: str


@dataclass(frozen=True)
class LastRun:
    at: float
    reply: str | None


@dataclass(frozen=True)
class Thread:
    """The command that last sent to a number: where an answer from it belongs."""

    chat_id: int
    message_id: int


@dataclass(frozen=True)
class InboundMessage:
    """One accepted message from WhatsApp or Telegram, waiting to be posted."""

    id: int
    channel: str  # "whatsapp" | "telegram"
    number: str
    body: str
    chat_id: int
    reply_to: int | None


@dataclass(frozen=True)
class PostProgress:
    """How far the post of some inbound messages got, kept so that no part of it is
    posted twice unmarked: a post that failed half-way goes on from the part that failed."""

    parts_done: int = 0
    maybe_sent: bool = False  # part ``parts_done`` was sent and its answer lost (or due)
    first_id: int | None = None  # the message id of the post's first part, once posted

    @property
    def started(self) -> bool:
        """Something of the post may be in the chat: its messages stay one post."""
        return self.parts_done > 0 or self.maybe_sent


@dataclass(frozen=True)
class Taken:
    """Inbound messages one replica took to post, as one post, and how far it got."""

    messages: tuple[InboundMessage, ...]
    progress: PostProgress = PostProgress()


def pick_post(rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """Of the free rows waiting for a chat (``INBOUND_TAKEN`` columns, by id), those to
    post now: a post already started, alone (its text must not change), else them all."""
    started = [row for row in rows if row[6] is not None]
    if not started:
        return list(rows)
    batch = min(row[6] for row in started)
    return [row for row in rows if row[6] == batch]


INBOUND_TAKEN = (
    "id, channel, number, body, chat_id, reply_to, batch, parts_done, maybe_sent, post_id"
)


def taken_post(rows: Sequence[Sequence[Any]]) -> Taken:
    """The ``Taken`` of rows chosen by ``pick_post``."""
    if not rows:
        return Taken(())
    first = rows[0]
    progress = PostProgress(int(first[7]), bool(first[8]), first[9])
    return Taken(tuple(InboundMessage(*row[:6]) for row in rows), progress)


@dataclass(frozen=True)
class StoredPrompt:
    """A Send / Cancel prompt: who asked, when, and the request to run on Send (JSON)."""

    token: str
    created: float
    user_id: int
    request: str


@dataclass(frozen=True)
class JournalEntry:
    """An update a poller recorded before handling it, and had not finished."""

    update_id: int
    owner: str
    payload: str


@dataclass(frozen=True)
class PostRef:
    """What a bridge post in the chat stands for, so a reply to it can go back."""

    channel: str
    number: str
    merged: bool


class Storage(Protocol):
    """The bot's state. Every method is safe to call concurrently from the event loop."""

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None: ...

    async def recent_audit(self, count: int, user_id: int | None) -> list[AuditEntry]: ...

    async def added_schedules(self) -> list[StoredSchedule]: ...

    async def add_schedule(self, schedule: StoredSchedule, created_by: int) -> None: ...

    async def remove_schedule(self, name: str) -> bool: ...

    async def last_runs(self) -> dict[str, LastRun]: ...

    async def mark_run(self, name: str, at: float, reply: str) -> None: ...

    async def record_threads(self, numbers: Sequence[str], thread: Thread, at: float) -> None: ...

    async def accept_inbound(self, arrival: Arrival) -> int | None:
        """Store a message for posting; the chat it goes to, or None for a repeat."""
        ...

    async def waiting_chats(self) -> set[int]:
        """Chats that have inbound messages not yet posted."""
        ...

    async def claim_inbound(self, chat_id: int, now: float, lease_s: float, holder: str) -> Taken:
        """Take, for ``holder``, what waits for ``chat_id`` and is not taken (or whose
        taker's lease ran out): no two callers, on any replica, get the same message while
        a lease runs. A post already started comes alone, with its progress."""
        ...

    async def lease_inbound(self, ids: Sequence[int], holder: str, until: float | None) -> bool:
        """Extend ``holder``'s lease on taken messages (a slow post), or give them back
        (None). False, and nothing changed, when ``holder`` no longer holds them all."""
        ...

    async def record_progress(
        self, ids: Sequence[int], holder: str, progress: PostProgress
    ) -> bool:
        """Keep how far the post of ``ids`` got (before each part is sent, and after a part
        that surely failed); False, nothing written, unless ``holder`` still holds them."""
        ...

    async def mark_posted(self, ids: Sequence[int], post_id: int | None, at: float) -> None:
        """Posted as message ``post_id`` (None: given up): the bodies are dropped, the
        reference kept. A message already marked posted keeps its first mark."""
        ...

    async def move_inbound(self, ids: Sequence[int], from_chat: int, to_chat: int) -> None:
        """Telegram refuses ``from_chat`` for good: the messages go to ``to_chat``, from
        scratch and under no message; threads that pointed into ``from_chat`` are dropped."""
        ...

    async def find_post(self, chat_id: int, post_id: int) -> PostRef | None: ...

    async def save_prompt(self, prompt: StoredPrompt) -> None:
        """Keep a prompt until it is claimed; prompts left over an hour are dropped."""
        ...

    async def peek_prompt(self, token: str) -> StoredPrompt | None: ...

    async def claim_prompt(self, token: str) -> StoredPrompt | None:
        """Take the prompt away, atomically: of two presses, only one gets it."""
        ...

    async def claim_slot(self, name: str, slot: str, now: float) -> bool:
        """True for the one caller, on any replica, that runs schedule ``name`` in ``slot``."""
        ...

    async def first_run(self, name: str, now: float) -> float:
        """When schedule ``name`` first ran (``now`` if never): ``every`` slots count from it."""
        ...

    async def record_update(self, update_id: int, owner: str, payload: str, now: float) -> bool:
        """Journal an update before it is handled; False when it was seen before."""
        ...

    async def finish_update(self, update_id: int) -> None:
        """The update is handled: its payload is dropped, its id kept (dedupe)."""
        ...

    async def unfinished_updates(self, not_owner: str) -> list[JournalEntry]:
        """Updates another replica recorded and did not finish (it died)."""
        ...

    async def ping(self) -> None:
        """Raise unless the storage answers (for /healthz)."""
        ...

    async def try_poller(self) -> bool:
        """True while this replica is the one that polls Telegram (elected, and kept)."""
        ...

    async def aclose(self) -> None: ...


class SqliteStorage:
    """``Storage`` in one SQLite file, used only from its own worker thread."""

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None
        self._executor.submit(self._open, path).result()

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA secure_delete=ON")  # a dropped message body is overwritten
        connection.executescript(_SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:  # files from before these were kept
            columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        # One process owns this file: whatever an earlier process had taken to post and
        # did not finish (it died) is free to post again.
        connection.execute(
            "UPDATE inbound SET claimed_until = NULL, holder = NULL WHERE posted IS NULL"
        )
        self._connection = connection

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        assert self._connection is not None
        return work(self._connection)

    async def aclose(self) -> None:
        def close(connection: sqlite3.Connection) -> None:
            connection.close()

        if self._connection is not None:
            await self._run(close)
            self._connection = None
        self._executor.shutdown(wait=True)

    async def try_poller(self) -> bool:
        return True  # one process owns the file: it is always the poller

    # -- audit ------------------------------------------------------------------------

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        rows = [audit_row(e) for e in entries]

        def insert(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN")
                connection.executemany(
                    f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
                )

        await self._run(insert)

    async def recent_audit(self, count: int, user_id: int | None) -> list[AuditEntry]:
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        args: tuple[int, ...] = (count,)
        if user_id is not None:
            sql += " WHERE user_id = ?"
            args = (user_id, count)

        def query(connection: sqlite3.Connection) -> list[AuditEntry]:
            rows = connection.execute(sql + " ORDER BY id DESC LIMIT ?", args).fetchall()
            return [audit_entry(row) for row in rows]

        return await self._run(query)

    # -- schedules ----------------------------------------------------------------------

    async def added_schedules(self) -> list[StoredSchedule]:
        def query(connection: sqlite3.Connection) -> list[StoredSchedule]:
            rows = connection.execute(
                "SELECT name, chat_id, every, command FROM schedules ORDER BY name"
            )
            return [StoredSchedule(*row) for row in rows]

        return await self._run(query)

    async def add_schedule(self, schedule: StoredSchedule, created_by: int) -> None:
        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO schedules (name, chat_id, every, command, created_by)"
                " VALUES (?, ?, ?, ?, ?)",
                (schedule.name, schedule.chat_id, schedule.every, schedule.command, created_by),
            )

        await self._run(insert)

    async def remove_schedule(self, name: str) -> bool:
        def delete(connection: sqlite3.Connection) -> bool:
            for table in ("schedule_runs", "schedule_slots", "schedule_firsts"):
                connection.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
            return connection.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount > 0

        return await self._run(delete)

    async def last_runs(self) -> dict[str, LastRun]:
        def query(connection: sqlite3.Connection) -> dict[str, LastRun]:
            rows = connection.execute("SELECT name, last_run, last_reply FROM schedule_runs")
            return {name: LastRun(at, reply) for name, at, reply in rows}

        return await self._run(query)

    async def mark_run(self, name: str, at: float, reply: str) -> None:
        def upsert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO schedule_runs (name, last_run, last_reply) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET last_run = excluded.last_run,"
                " last_reply = excluded.last_reply",
                (name, at, reply),
            )

        await self._run(upsert)

    # -- the two-way bridge ---------------------------------------------------------------

    async def record_threads(self, numbers: Sequence[str], thread: Thread, at: float) -> None:
        def upsert(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "INSERT INTO threads (number, chat_id, message_id, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(number) DO UPDATE SET chat_id = excluded.chat_id,"
                " message_id = excluded.message_id, at = excluded.at",
                [(n, thread.chat_id, thread.message_id, at) for n in numbers],
            )

        await self._run(upsert)

    async def accept_inbound(self, arrival: Arrival) -> int | None:
        def insert(connection: sqlite3.Connection) -> int | None:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                repeated = connection.execute(
                    "SELECT 1 FROM inbound WHERE digest = ? AND received > ?",
                    (arrival.digest, arrival.repeat_after),
                ).fetchone()
                if repeated:
                    return None
                thread = connection.execute(
                    "SELECT chat_id, message_id FROM threads WHERE number = ? AND at > ?",
                    (arrival.number, arrival.thread_after),
                ).fetchone()
                chat_id, reply_to = thread if thread else (arrival.default_chat, None)
                connection.execute(
                    "INSERT INTO inbound (received, channel, number, body, digest, chat_id,"
                    " reply_to) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (arrival.received, arrival.channel, arrival.number, arrival.body,
                     arrival.digest, chat_id, reply_to),
                )  # fmt: skip
                return int(chat_id)

        return await self._run(insert)

    async def waiting_chats(self) -> set[int]:
        def query(connection: sqlite3.Connection) -> set[int]:
            rows = connection.execute("SELECT DISTINCT chat_id FROM inbound WHERE posted IS NULL")
            return {row[0] for row in rows}

        return await self._run(query)

    async def claim_inbound(self, chat_id: int, now: float, lease_s: float, holder: str) -> Taken:
        def claim(connection: sqlite3.Connection) -> Taken:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                rows = pick_post(
                    connection.execute(
                        f"SELECT {INBOUND_TAKEN} FROM inbound"
                        " WHERE posted IS NULL AND chat_id = ?"
                        " AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY id",
                        (chat_id, now),
                    ).fetchall()
                )
                connection.executemany(
                    "UPDATE inbound SET claimed_until = ?, holder = ? WHERE id = ?",
                    [(now + lease_s, holder, row[0]) for row in rows],
                )
                return taken_post(rows)

        return await self._run(claim)

    async def lease_inbound(self, ids: Sequence[int], holder: str, until: float | None) -> bool:
        keeper = holder if until is not None else None

        def update(connection: sqlite3.Connection) -> bool:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                if not _held(connection, ids, holder):
                    return False
                connection.executemany(
                    "UPDATE inbound SET claimed_until = ?, holder = ? WHERE id = ?",
                    [(until, keeper, i) for i in ids],
                )
                return True

        return await self._run(update)

    async def record_progress(
        self, ids: Sequence[int], holder: str, progress: PostProgress
    ) -> bool:
        batch = min(ids) if progress.started else None

        def update(connection: sqlite3.Connection) -> bool:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                if not _held(connection, ids, holder):
                    return False
                connection.executemany(
                    "UPDATE inbound SET parts_done = ?, maybe_sent = ?, post_id = ?, batch = ?"
                    " WHERE id = ?",
                    [(progress.parts_done, progress.maybe_sent, progress.first_id, batch, i)
                     for i in ids],
                )  # fmt: skip
                return True

        return await self._run(update)

    async def mark_posted(self, ids: Sequence[int], post_id: int | None, at: float) -> None:
        def update(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN")
                connection.executemany(
                    "UPDATE inbound SET posted = ?, post_id = ?, body = NULL"
                    " WHERE id = ? AND posted IS NULL",
                    [(at, post_id, row_id) for row_id in ids],
                )

        await self._run(update)

    async def move_inbound(self, ids: Sequence[int], from_chat: int, to_chat: int) -> None:
        def update(connection: sqlite3.Connection) -> None:
            with connection:
                connection.execute("BEGIN")
                connection.executemany(
                    "UPDATE inbound SET chat_id = ?, reply_to = NULL, batch = NULL,"
                    " parts_done = 0, maybe_sent = 0, post_id = NULL, claimed_until = NULL,"
                    " holder = NULL WHERE id = ? AND posted IS NULL",
                    [(to_chat, row_id) for row_id in ids],
                )
                connection.execute("DELETE FROM threads WHERE chat_id = ?", (from_chat,))

        await self._run(update)

    async def find_post(self, chat_id: int, post_id: int) -> PostRef | None:
        def query(connection: sqlite3.Connection) -> PostRef | None:
            rows = connection.execute(
                "SELECT channel, number FROM inbound WHERE chat_id = ? AND post_id = ?",
                (chat_id, post_id),
            ).fetchall()
            if not rows:
                return None
            return PostRef(rows[0][0], rows[0][1], merged=len(rows) > 1)

        return await self._run(query)

    # -- confirmations, schedules across replicas, the update journal -------------------

    async def save_prompt(self, prompt: StoredPrompt) -> None:
        def insert(connection: sqlite3.Connection) -> None:
            stale = prompt.created - PROMPTS_KEPT_S  # never answered, never expired (a crash)
            connection.execute("DELETE FROM prompts WHERE created < ?", (stale,))
            connection.execute(
                "INSERT INTO prompts (token, created, user_id, request) VALUES (?, ?, ?, ?)",
                (prompt.token, prompt.created, prompt.user_id, prompt.request),
            )

        await self._run(insert)

    async def peek_prompt(self, token: str) -> StoredPrompt | None:
        def query(connection: sqlite3.Connection) -> StoredPrompt | None:
            row = connection.execute(
                "SELECT token, created, user_id, request FROM prompts WHERE token = ?", (token,)
            ).fetchone()
            return StoredPrompt(*row) if row else None

        return await self._run(query)

    async def claim_prompt(self, token: str) -> StoredPrompt | None:
        def claim(connection: sqlite3.Connection) -> StoredPrompt | None:
            row = connection.execute(
                "DELETE FROM prompts WHERE token = ? RETURNING token, created, user_id, request",
                (token,),
            ).fetchone()
            return StoredPrompt(*row) if row else None

        return await self._run(claim)

    async def claim_slot(self, name: str, slot: str, now: float) -> bool:
        def claim(connection: sqlite3.Connection) -> bool:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("DELETE FROM schedule_slots WHERE at < ?", (now - SLOTS_KEPT_S,))
                inserted = connection.execute(
                    "INSERT INTO schedule_slots (name, slot, at) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (name, slot, now),
                ).rowcount
                return inserted > 0

        return await self._run(claim)

    async def first_run(self, name: str, now: float) -> float:
        def upsert(connection: sqlite3.Connection) -> float:
            connection.execute(
                "INSERT INTO schedule_firsts (name, first_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (name, now),
            )
            row = connection.execute(
                "SELECT first_at FROM schedule_firsts WHERE name = ?", (name,)
            ).fetchone()
            return float(row[0])

        return await self._run(upsert)

    async def record_update(self, update_id: int, owner: str, payload: str, now: float) -> bool:
        def insert(connection: sqlite3.Connection) -> bool:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(
                    "DELETE FROM updates WHERE received < ?", (now - UPDATES_KEPT_S,)
                )
                return (
                    connection.execute(
                        "INSERT INTO updates (update_id, received, owner, payload)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (update_id, now, owner, payload),
                    ).rowcount
                    > 0
                )

        return await self._run(insert)

    async def finish_update(self, update_id: int) -> None:
        def update(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE updates SET done = 1, payload = NULL WHERE update_id = ?", (update_id,)
            )

        await self._run(update)

    async def unfinished_updates(self, not_owner: str) -> list[JournalEntry]:
        def query(connection: sqlite3.Connection) -> list[JournalEntry]:
            rows = connection.execute(
                "SELECT update_id, owner, payload FROM updates"
                " WHERE done = 0 AND owner != ? ORDER BY update_id",
                (not_owner,),
            )
            return [JournalEntry(*row) for row in rows]

        return await self._run(query)

    async def ping(self) -> None:
        def query(connection: sqlite3.Connection) -> None:
            connection.execute("SELECT 1").fetchone()

        await self._run(query)


def _held(connection: sqlite3.Connection, ids: Sequence[int], holder: str) -> bool:
    """``holder`` holds every one of ``ids``, none of them posted yet."""
    marks = ", ".join("?" * len(ids))
    held = connection.execute(
        f"SELECT count(*) FROM inbound WHERE id IN ({marks}) AND holder = ? AND posted IS NULL",
        (*ids, holder),
    ).fetchone()[0]
    return bool(held == len(ids))
