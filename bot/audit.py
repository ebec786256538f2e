"""The audit trail: every command, allowed or refused, in SQLite at ``audit.path``.

SQLite calls block, so they never run on the event loop: one worker thread owns the
connection (``Database``) and every statement is queued to it, which also serialises
concurrent writers. ``AuditLog.record`` only appends to a buffer; the buffer is written
in one transaction per batch, so a burst of commands costs one fsync, not hundreds.
No secret and no message body is ever passed in here — only who, where, what command,
to which numbers, and how it ended.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

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
"""


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


class Database:
    """One SQLite connection, used only from its own worker thread."""

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None
        self._executor.submit(self._open, path).result()

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(audit)")}
        if "job_ids" not in columns:  # a file from before job ids were kept
            connection.execute("ALTER TABLE audit ADD COLUMN job_ids TEXT NOT NULL DEFAULT ''")
        self._connection = connection

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)

    def run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant for start-up and shutdown paths outside the event loop."""
        return self._executor.submit(self._call, work).result()

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        assert self._connection is not None
        return work(self._connection)

    def close(self) -> None:
        def close(connection: sqlite3.Connection) -> None:
            connection.close()

        if self._connection is not None:
            self.run_sync(close)
            self._connection = None
        self._executor.shutdown(wait=True)


class AuditLog:
    """Append-only record of commands; ``record`` never blocks the caller."""

    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = database
        self._clock = clock
        self._buffer: list[AuditEntry] = []
        self._flushing: asyncio.Future[None] | None = None

    def record(self, entry: AuditEntry) -> None:
        """Queue ``entry``; it is written within one batch, soon, off the event loop."""
        if not entry.at:
            entry = AuditEntry(**{**entry.__dict__, "at": self._clock()})
        self._buffer.append(entry)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._write_batches())

    async def _write_batches(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            await self._db.run(functools.partial(_insert, batch=batch))

    async def flush(self) -> None:
        """Wait until everything recorded so far is on disk."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        if self._buffer:
            await self._write_batches()

    async def recent(self, count: int, user_id: int | None = None) -> list[AuditEntry]:
        """The last ``count`` entries, newest first; only ``user_id``'s when given."""
        await self.flush()

        def query(connection: sqlite3.Connection) -> list[AuditEntry]:
            sql = (
                "SELECT at, chat_id, user_id, command, recipients, outcome, detail, job_ids"
                " FROM audit"
            )
            args: tuple[int, ...] = (count,)
            if user_id is not None:
                sql += " WHERE user_id = ?"
                args = (user_id, count)
            rows = connection.execute(sql + " ORDER BY id DESC LIMIT ?", args).fetchall()
            return [
                AuditEntry(
                    chat_id=row[1],
                    user_id=row[2],
                    command=row[3],
                    recipients=tuple(filter(None, row[4].split(","))),
                    outcome=Outcome(row[5]),
                    detail=row[6],
                    at=row[0],
                    job_ids=tuple(filter(None, row[7].split(","))),
                )
                for row in rows
            ]

        return await self._db.run(query)


def _insert(connection: sqlite3.Connection, *, batch: list[AuditEntry]) -> None:
    with connection:
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO audit (at, chat_id, user_id, command, recipients, outcome, detail,"
            " job_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.at,
                    e.chat_id,
                    e.user_id,
                    e.command,
                    ",".join(e.recipients),
                    e.outcome.value,
                    e.detail,
                    ",".join(e.job_ids),
                )
                for e in batch
            ],
        )
