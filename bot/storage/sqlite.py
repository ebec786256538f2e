"""The SQLite driver: the embedded default, one file at ``audit.path``.

SQLite calls block, so they never run on the event loop: one worker thread owns the
connection and every statement is queued to it, in order. Because there is one
connection, a transaction is one asyncio lock held from ``BEGIN IMMEDIATE`` to
``COMMIT``: no other coroutine's statement can land inside it, and a statement outside
any transaction waits for it too. WAL: a committed write survives the process dying;
a durable transaction (``synchronous=FULL`` for its commit: inbound messages, alerts)
is on disk before the caller hears so ("200 means stored"), even if the machine loses
power. The rest skip that fsync per commit (``NORMAL``), which is what made every
command's audit, thread and journal write cost one.
A statement SQLite could not run for want of the database (``OperationalError``: disk
full, I/O, locked, read-only) leaves as ``StorageUnavailable``, in the one hop every
statement, ``COMMIT`` and ``ROLLBACK`` takes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import StorageUnavailable
from bot.storage.driver import Connection, Dialect

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # FULL for durable transactions
    connection.execute("PRAGMA secure_delete=ON")  # a dropped message body is overwritten
    return connection


def _end(connection: sqlite3.Connection, commit: bool, durable: bool = False) -> None:
    """COMMIT (or ROLLBACK) the open transaction, if one is open; after a durable one,
    back to ``synchronous=NORMAL``."""
    try:
        _finish(connection, commit)
    finally:
        if durable:
            connection.execute("PRAGMA synchronous=NORMAL")


def _finish(connection: sqlite3.Connection, commit: bool) -> None:
    if not connection.in_transaction:
        return  # no statement of it ran (cancelled before the first one did)
    if commit:
        try:
            connection.execute("COMMIT")
            return
        except sqlite3.Error:
            connection.execute("ROLLBACK")
            raise
    connection.execute("ROLLBACK")


def _in_transaction(work: Work[T]) -> Work[T]:
    """``work``, after ``BEGIN IMMEDIATE`` if the transaction has not begun (one hop)."""

    def run(connection: sqlite3.Connection) -> T:
        if not connection.in_transaction:
            connection.execute("BEGIN IMMEDIATE")
        return work(connection)

    return run


def _atomic(work: Work[T]) -> Work[T]:
    """``work`` as a transaction of its own, all in one hop to the worker thread."""

    def run(connection: sqlite3.Connection) -> T:
        try:
            result = _in_transaction(work)(connection)
        except BaseException:
            _end(connection, commit=False)
            raise
        _end(connection, commit=True)
        return result

    return run


def _closed(cursor: sqlite3.Cursor) -> sqlite3.Cursor:
    """``cursor``, closed: a cursor left to the garbage collector keeps its statement,
    and with it the file, open after ``close()`` (sqlite3_close_v2 only marks the
    connection a zombie) — the WAL, which still holds dropped message bodies, would
    outlive the process's own shutdown. ``rowcount`` stays readable."""
    cursor.close()
    return cursor


class _Statements:
    """Statements run on the worker thread, in order: the driver's one at a time under
    the lock, a transaction's (whose caller holds the lock) after its ``BEGIN``."""

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        connection: sqlite3.Connection,
        lock: asyncio.Lock | None,
    ) -> None:
        self._executor = executor
        self._connection = connection
        self._lock = lock  # None: in the one open transaction

    async def _run(self, work: Work[T], *, whole: bool = False) -> T:
        future = asyncio.wrap_future(self._executor.submit(work, self._connection))
        # ``whole``: it runs (a COMMIT, a ROLLBACK) even if the caller is cancelled meanwhile.
        try:
            return await (asyncio.shield(future) if whole else future)
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"the database did not take it ({exc})") from exc

    async def _statement(self, work: Work[T], *, atomic: bool = False) -> T:
        if self._lock is None:  # the transaction begins with its first statement, one hop
            return await self._run(_in_transaction(work))
        async with self._lock:
            return await self._run(_atomic(work) if atomic else work, whole=atomic)

    async def execute(self, sql: str, *args: object) -> int:
        return await self._statement(lambda c: _closed(c.execute(sql, args)).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        # All or none, and one fsync; on its own, BEGIN, rows and COMMIT in one hop.
        await self._statement(lambda c: _closed(c.executemany(sql, rows)), atomic=True)

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        # fetchall, always: a statement read halfway would keep its transaction open.
        def rows(connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
            cursor = connection.execute(sql, args)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()

        return await self._statement(rows)

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class SqliteDriver(_Statements):
    """``Driver`` on one SQLite file, used only from its own worker thread."""

    dialect = Dialect.SQLITE
    _lock: asyncio.Lock  # held for a whole transaction, or one statement

    @classmethod
    async def open(cls, path: Path) -> SqliteDriver:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        connection = await asyncio.wrap_future(executor.submit(_connect, path))
        return cls(executor, connection, asyncio.Lock())

    @asynccontextmanager
    async def transaction(
        self, lock: str | None = None, *, durable: bool = False
    ) -> AsyncIterator[Connection]:
        """``BEGIN IMMEDIATE`` (with the first statement): the write lock is taken at the
        start, so a transaction never fails half-way for want of it; ``lock`` needs
        nothing more here, where one process owns the file. ``durable``: its COMMIT is
        on disk before it returns (``synchronous=FULL``), even if the machine loses
        power; every other commit survives the process dying (WAL, ``NORMAL``)."""
        async with self._lock:
            if durable:
                await self._run(lambda c: c.execute("PRAGMA synchronous=FULL"), whole=True)
            try:
                yield _Statements(self._executor, self._connection, lock=None)
            except BaseException:
                await self._run(lambda c: _end(c, commit=False, durable=durable), whole=True)
                raise
            await self._run(lambda c: _end(c, commit=True, durable=durable), whole=True)

    async def aclose(self) -> None:
        async with self._lock:
            await self._run(lambda c: c.close(), whole=True)
        self._executor.shutdown(wait=True)
