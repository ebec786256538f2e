"""The SQLite driver: the embedded default, one file at ``audit.path``.

SQLite calls block, so they never run on the event loop: one worker thread owns the
connection and every statement is queued to it, in order. Because there is one
connection, a transaction is one asyncio lock held from ``BEGIN IMMEDIATE`` to
``COMMIT``: no other coroutine's statement can land inside it, and a statement outside
any transaction waits for it too. WAL with ``synchronous=FULL``: a committed write is on
disk before the caller hears so ("200 means stored"), even if the machine loses power.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from bot.storage.driver import Connection, Dialect

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA secure_delete=ON")  # a dropped message body is overwritten
    return connection


def _finish(commit: bool) -> Work[None]:
    def finish(connection: sqlite3.Connection) -> None:
        if not connection.in_transaction:
            return  # BEGIN never ran (cancelled before it did)
        if commit:
            try:
                connection.execute("COMMIT")
                return
            except sqlite3.Error:
                connection.execute("ROLLBACK")
                raise
        connection.execute("ROLLBACK")

    return finish


class _Statements:
    """Statements run on the worker thread; ``_Transaction`` and the driver add the lock."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        self._executor = executor
        self._connection = connection

    async def _run(self, work: Work[T], *, finish: bool = False) -> T:
        future = asyncio.wrap_future(self._executor.submit(work, self._connection))
        # A COMMIT or ROLLBACK runs even if the caller is cancelled while it waits.
        return await (asyncio.shield(future) if finish else future)

    async def _execute(self, sql: str, args: Sequence[object]) -> int:
        return await self._run(lambda c: c.execute(sql, args).rowcount)

    async def _executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._run(lambda c: c.executemany(sql, rows))

    async def _fetch(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        # fetchall, always: a statement read halfway would keep its transaction open.
        return await self._run(lambda c: c.execute(sql, args).fetchall())


class _Transaction(_Statements):
    """The one open transaction: its statements run without taking the lock again."""

    async def execute(self, sql: str, *args: object) -> int:
        return await self._execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._executemany(sql, rows)

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return await self._fetch(sql, args)

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        rows = await self._fetch(sql, args)
        return rows[0] if rows else None


class SqliteDriver(_Statements):
    """``Driver`` on one SQLite file, used only from its own worker thread."""

    dialect = Dialect.SQLITE

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        super().__init__(executor, connection)
        self._lock = asyncio.Lock()  # held for a whole transaction, or one statement

    @classmethod
    async def open(cls, path: Path) -> SqliteDriver:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        connection = await asyncio.wrap_future(executor.submit(_connect, path))
        return cls(executor, connection)

    async def execute(self, sql: str, *args: object) -> int:
        async with self._lock:
            return await self._execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        async with self.transaction() as transaction:  # all or none, and one fsync
            await transaction.executemany(sql, rows)

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await self._fetch(sql, args)

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    @asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[Connection]:
        """``BEGIN IMMEDIATE``: the write lock is taken at the start, so a transaction
        never fails half-way for want of it; ``lock`` needs nothing more here."""
        async with self._lock:
            try:
                await self._run(lambda c: c.execute("BEGIN IMMEDIATE"))
                yield _Transaction(self._executor, self._connection)
            except BaseException:
                await self._run(_finish(commit=False), finish=True)
                raise
            await self._run(_finish(commit=True), finish=True)

    async def hold_lock(self, name: str) -> bool:
        return True  # one process owns the file: it holds every lock

    async def aclose(self) -> None:
        async with self._lock:
            await self._run(lambda c: c.close(), finish=True)
        self._executor.shutdown(wait=True)
