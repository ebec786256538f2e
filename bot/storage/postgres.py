"""The PostgreSQL driver (``database.url``): the database several replicas share.

Why asyncpg: it is asyncio-native (no thread hop per statement, unlike the SQLite
worker), fast, keeps a pool and caches prepared statements per connection, and gives
the advisory locks replicas need. Queries arrive with ``?`` placeholders and are
renumbered to ``$1…$n`` once per text (cached); row counts are read from the command
tag asyncpg returns, here and nowhere else. A transaction with a lock name takes
``pg_advisory_xact_lock`` first, so it is serialised against every replica's
transaction taking the same name. The poller election needs no session of its own: it
is a lease row (``SqlStorage.claim_poller``), judged by the database's clock. Every
failure of the database itself (asyncpg's, the socket's, a timeout) leaves here as
``StorageUnavailable``, from a statement or a whole transaction; an error that is our
own mistake (a constraint, bad data, bad SQL) stays what asyncpg raised.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.errors import StorageUnavailable
from bot.storage.driver import Connection, Dialect

# The schema lock id replicas took before lock names existed ("WMB1"): an old and a new
# replica starting together during an upgrade still migrate one at a time.
_LOCK_KEYS = {"schema": 0x57_4D_42_31}
# InternalClientError: a connection left broken by its server going away mid-operation.
_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Errors of the statement, not of the database: a bug, never "try again later".
_MISTAKES = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.exceptions.SyntaxOrAccessError,
    asyncpg.exceptions.ClientConfigurationError,  # a setting of database.url it refuses
)
T = TypeVar("T")


def unavailable(exc: BaseException) -> StorageUnavailable:
    """The one error for a database that did not take or answer a statement."""
    return StorageUnavailable(f"the database did not answer ({type(exc).__name__})")


async def _guarded(call: Awaitable[T]) -> T:
    """``call``'s result; a failure of the database raised as ``StorageUnavailable``."""
    try:
        return await call
    except _MISTAKES:
        raise
    except _FAILURES as exc:
        raise unavailable(exc) from exc


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
        return rows_affected(await _guarded(self._target.execute(numbered(sql), *args)))

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        # atomic, as asyncpg runs it
        await _guarded(self._target.executemany(numbered(sql), rows))

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await _guarded(self._target.fetch(numbered(sql), *args))]

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        row = await _guarded(self._target.fetchrow(numbered(sql), *args))
        return None if row is None else tuple(row)


class PostgresDriver(_Statements):
    """``Driver`` on a pool of asyncpg connections."""

    dialect = Dialect.POSTGRES

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDriver:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=10, command_timeout=30, timeout=15
            )
        except _MISTAKES:
            raise
        except _FAILURES as exc:
            reason = type(exc).__name__
            raise StorageUnavailable(
                f"database.url: cannot connect to PostgreSQL ({reason})"
            ) from None
        return cls(pool)

    @asynccontextmanager
    async def transaction(
        self, lock: str | None = None, *, durable: bool = False
    ) -> AsyncIterator[Connection]:
        """Every commit is durable here (``synchronous_commit`` on). Its statements
        raise ``StorageUnavailable`` themselves; so do taking a connection, ``BEGIN``
        and ``COMMIT`` (the transaction did not happen)."""
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                statements = _Statements(connection)
                if lock is not None:
                    await _guarded(connection.execute(*_lock("pg_advisory_xact_lock", lock)))
                yield statements
        except _MISTAKES:
            raise
        except _FAILURES as exc:
            raise unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._pool.close()
