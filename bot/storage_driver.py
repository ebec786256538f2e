"""INTERIM, until the storage branch's ``bot/storage/driver.py`` lands: the Driver
protocol of /work/notes/driver.md and a minimal SQLite driver, so paging's queries can
be written once against the contract now. Deleted at the merge."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from enum import Enum
from pathlib import Path
from typing import Any, Protocol


class Dialect(Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


class Connection(Protocol):
    async def execute(self, sql: str, *args: object) -> int: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...
    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]: ...
    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None: ...


class Driver(Connection, Protocol):
    dialect: Dialect

    def transaction(self, lock: str | None = None) -> AbstractAsyncContextManager[Connection]: ...

    async def aclose(self) -> None: ...


class _Tx:
    def __init__(self, driver: SqliteDriver) -> None:
        self._driver = driver

    async def execute(self, sql: str, *args: object) -> int:
        count: int = await self._driver._run(lambda c: c.execute(sql, args).rowcount)
        return count

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._driver._run(lambda c: c.executemany(sql, rows))

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._driver._run(
            lambda c: c.execute(sql, args).fetchall()
        )
        return rows

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = await self._driver._run(
            lambda c: c.execute(sql, args).fetchone()
        )
        return row


class SqliteDriver:
    dialect = Dialect.SQLITE

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-paging")
        self._lock = asyncio.Lock()
        self._connection: sqlite3.Connection | None = None
        self._executor.submit(self._open, path).result()

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        self._connection = connection

    async def _run(self, work: Any) -> Any:
        assert self._connection is not None
        connection = self._connection
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: work(connection)
        )

    async def script(self, sql: str) -> None:
        await self._run(lambda c: c.executescript(sql))

    async def execute(self, sql: str, *args: object) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await _Tx(self).fetch(sql, *args)

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        async with self._lock:
            return await _Tx(self).fetchone(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[Connection]:
        async with self._lock:
            await self._run(lambda c: c.execute("BEGIN IMMEDIATE"))
            try:
                yield _Tx(self)
            except BaseException:
                await self._run(lambda c: c.execute("ROLLBACK"))
                raise
            await self._run(lambda c: c.execute("COMMIT"))

    async def aclose(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=True)
