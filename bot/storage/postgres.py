"""The PostgreSQL driver (``database.url``): the database several replicas share.

Why asyncpg: it is asyncio-native (no thread hop per statement, unlike the SQLite
worker), fast, keeps a pool and caches prepared statements per connection, and gives
the advisory locks replicas need. Queries arrive with ``?`` placeholders and are
renumbered to ``$1…$n`` once per text (cached); row counts are read from the command
tag asyncpg returns, here and nowhere else. A transaction with a lock name takes
``pg_advisory_xact_lock`` first, so it is serialised against every replica's
transaction taking the same name; ``hold_lock`` keeps a session advisory lock on a
connection of its own (the poller election).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.errors import StorageUnavailable
from bot.storage.driver import Connection, Dialect

# The lock ids replicas took before lock names existed ("WMB1", "WMB2"): an old and a new
# replica running side by side during an upgrade still exclude each other.
_LOCK_KEYS = {"schema": 0x57_4D_42_31, "poller": 0x57_4D_42_32}
_FAILURES = (asyncpg.PostgresError, OSError, TimeoutError)


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1…$n`` (our queries hold no literal ``?``)."""
    first, *rest = sql.split("?")
    return first + "".join(f"${n}{part}" for n, part in enumerate(rest, start=1))


def rows_affected(status: str) -> int:
    """The row count in a command tag: ``INSERT 0 1`` → 1, ``UPDATE 3`` → 3, DDL → 0."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


def _lock(function: str, name: str) -> tuple[str, object]:
    """``SELECT function(key)`` for the lock ``name``, and the key to pass."""
    key = _LOCK_KEYS.get(name)
    if key is not None:
        return f"SELECT {function}($1::bigint)", key
    return f"SELECT {function}(hashtext($1))", name


class _Statements:
    """Statements on the pool (each its own transaction) or on one connection."""

    def __init__(self, target: asyncpg.Pool | PoolConnectionProxy) -> None:
        self._target = target

    async def execute(self, sql: str, *args: object) -> int:
        return rows_affected(await self._target.execute(numbered(sql), *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._target.executemany(numbered(sql), rows)  # atomic, as asyncpg runs it

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._target.fetch(numbered(sql), *args)]

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        row = await self._target.fetchrow(numbered(sql), *args)
        return None if row is None else tuple(row)


class PostgresDriver(_Statements):
    """``Driver`` on a pool of asyncpg connections, plus one session for ``hold_lock``."""

    dialect = Dialect.POSTGRES

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        super().__init__(pool)
        self._pool = pool
        self._url = url
        self._session: asyncpg.Connection | None = None  # holds the session locks
        self._held: set[str] = set()

    @classmethod
    async def connect(cls, url: str) -> PostgresDriver:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=10, command_timeout=30, timeout=15
            )
        except _FAILURES as exc:
            reason = type(exc).__name__
            raise StorageUnavailable(
                f"database.url: cannot connect to PostgreSQL ({reason})"
            ) from None
        return cls(pool, url)

    @asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as connection, connection.transaction():
            if lock is not None:
                await connection.execute(*_lock("pg_advisory_xact_lock", lock))
            yield _Statements(connection)

    async def hold_lock(self, name: str) -> bool:
        """The lock lives as long as its session: when the process dies, PostgreSQL frees
        it and another replica takes it on its next try. A session that stops answering
        is dropped, and every lock with it."""
        try:
            if self._session is None or self._session.is_closed():
                self._session, self._held = await asyncpg.connect(self._url, timeout=5), set()
            if name in self._held:
                await self._session.fetchval("SELECT 1", timeout=5)
            elif await self._session.fetchval(*_lock("pg_try_advisory_lock", name), timeout=5):
                self._held.add(name)
        except _FAILURES:
            await self._drop_session()
        return name in self._held

    async def _drop_session(self) -> None:
        session, self._session, self._held = self._session, None, set()
        if session is not None:
            with contextlib.suppress(*_FAILURES):
                await session.close(timeout=2)

    async def aclose(self) -> None:
        await self._drop_session()
        await self._pool.close()
