"""The one schema and the drivers under it: both databases end up with the same tables,
columns and indexes (read back from each one's own catalogue), databases written by the
code before versions were kept on SQLite are migrated in place, and a transaction on the
SQLite driver is never interleaved with another coroutine's statements."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from bot.storage import Storage
from bot.storage.driver import Driver
from bot.storage.postgres import PostgresDriver, numbered, rows_affected
from bot.storage.schema import MIGRATIONS, migrate
from bot.storage.sqlite import SqliteDriver
from bot.vocabulary import AuditEntry, Channel, Outcome
from tests.conftest import fresh_database
from tests.postgres import PostgresServer
from tests.schemas_before import POSTGRES_BEFORE, SQLITE_BEFORE

Catalogue = tuple[dict[str, dict[str, tuple[str, bool, bool]]], dict[str, tuple[str, str, str]]]
"""{table: {column: (type, not null, in the primary key)}}, {index: (table, columns, where)}"""

SQLITE_TYPES = {"TEXT": "text", "BIGINT": "bigint", "DOUBLE PRECISION": "double precision",
                "BOOLEAN": "boolean", "INTEGER": "integer", "REAL": "real"}  # fmt: skip
_INDEX = re.compile(r"ON\s+(?:\w+\.)?(\w+)\s+(?:USING\s+\w+\s+)?\(([^)]*)\)(?:\s+WHERE\s+(.*))?$")


def _index(definition: str) -> tuple[str, str, str]:
    match = _INDEX.search(" ".join(definition.split()))
    assert match is not None, definition
    table, columns, where = match.groups()
    return table, columns.replace(" ", ""), (where or "").strip("()").lower()


async def sqlite_catalogue(driver: Driver) -> Catalogue:
    tables: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for name, sql in await driver.fetch(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ):
        columns = await driver.fetch(f"PRAGMA table_info({name})")
        tables[name] = {
            # {id}: INTEGER PRIMARY KEY AUTOINCREMENT here, BIGSERIAL (a bigint) there
            column: ("bigint" if "AUTOINCREMENT" in sql and pk else SQLITE_TYPES[kind],
                     bool(notnull or pk), bool(pk))
            for _, column, kind, notnull, _, pk in columns
        }  # fmt: skip
    indexes = {
        name: _index(sql)
        for name, sql in await driver.fetch(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
    }
    return tables, indexes


async def postgres_catalogue(driver: Driver) -> Catalogue:
    keys = {
        (table, column)
        for table, column in await driver.fetch(
            "SELECT k.table_name, k.column_name FROM information_schema.key_column_usage k"
            " JOIN information_schema.table_constraints c USING (constraint_name, table_name)"
            " WHERE c.constraint_type = 'PRIMARY KEY' AND k.table_schema = 'public'"
        )
    }
    tables: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for table, column, kind, nullable in await driver.fetch(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'public'"
    ):
        primary = (table, column) in keys
        tables.setdefault(table, {})[column] = (kind, nullable == "NO", primary)
    indexes = {
        name: _index(definition)
        for name, definition in await driver.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " AND indexname NOT LIKE '%\\_pkey'"
        )
    }
    return tables, indexes


async def test_the_schema_is_the_same_on_both_databases(tmp_path: Path, database_url: str) -> None:
    sqlite = await SqliteDriver.open(tmp_path / "state.sqlite3")
    postgres = await PostgresDriver.connect(database_url)
    try:
        assert await migrate(sqlite) == await migrate(postgres) == 0
        assert await migrate(sqlite) == await migrate(postgres) == len(MIGRATIONS)  # once
        tables, indexes = await sqlite_catalogue(sqlite)
        assert (tables, indexes) == await postgres_catalogue(postgres)
        assert indexes["inbound_pending"] == ("inbound", "chat_id,id", "posted is null")
        assert indexes["updates_unfinished"] == ("updates", "update_id", "not done")
        assert tables["updates"]["done"] == ("boolean", True, False)
        assert await sqlite.fetch("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
        assert await postgres.fetch("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
    finally:
        await sqlite.aclose()
        await postgres.aclose()


async def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    drivers = await asyncio.gather(*(PostgresDriver.connect(database_url) for _ in range(3)))
    try:
        versions = [0, len(MIGRATIONS), len(MIGRATIONS)]  # one applies them, the others wait
        assert sorted(await asyncio.gather(*(migrate(d) for d in drivers))) == versions
    finally:
        await asyncio.gather(*(d.aclose() for d in drivers))


async def test_a_sqlite_transaction_is_not_interleaved(tmp_path: Path) -> None:
    """Another coroutine's statement waits for the transaction: it is not rolled back
    with it (it would be, run on the one connection in the middle of it)."""
    driver = await SqliteDriver.open(tmp_path / "state.sqlite3")
    await driver.execute("CREATE TABLE t (v TEXT)")
    other_started = asyncio.Event()

    async def failing_transaction() -> None:
        async with driver.transaction() as transaction:
            await transaction.execute("INSERT INTO t VALUES (?)", "a1")
            await other_started.wait()
            await transaction.execute("INSERT INTO t VALUES (?)", "a2")
            raise RuntimeError("rolled back")

    async def other() -> None:
        other_started.set()
        assert await driver.execute("INSERT INTO t VALUES (?)", "b") == 1

    try:
        failed, _ = await asyncio.gather(failing_transaction(), other(), return_exceptions=True)
        assert isinstance(failed, RuntimeError)
        assert await driver.fetch("SELECT v FROM t") == [("b",)]
        async with driver.transaction() as transaction:
            await transaction.executemany("INSERT INTO t VALUES (?)", [("c",), ("d",)])
        assert await driver.fetch("SELECT v FROM t ORDER BY v") == [("b",), ("c",), ("d",)]
        async with driver.transaction(durable=True) as transaction:
            assert await transaction.fetchone("PRAGMA synchronous") == (2,)  # FULL: on disk
        assert await driver.fetchone("PRAGMA synchronous") == (1,)  # NORMAL: no fsync each
    finally:
        await driver.aclose()


async def test_a_cancelled_sqlite_transaction_leaves_the_connection_usable(
    tmp_path: Path,
) -> None:
    driver = await SqliteDriver.open(tmp_path / "state.sqlite3")
    await driver.execute("CREATE TABLE t (v TEXT)")
    inside = asyncio.Event()

    async def stuck() -> None:
        async with driver.transaction() as transaction:
            await transaction.execute("INSERT INTO t VALUES (?)", "lost")
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        async with driver.transaction() as transaction:
            await transaction.execute("INSERT INTO t VALUES (?)", "kept")
        assert await driver.fetch("SELECT v FROM t") == [("kept",)]
    finally:
        await driver.aclose()


async def test_postgres_driver_counts_rows_and_serialises_on_a_lock(database_url: str) -> None:
    assert numbered("SELECT ? + ?, ?") == "SELECT $1 + $2, $3"
    assert [rows_affected(tag) for tag in ("INSERT 0 1", "UPDATE 3", "CREATE TABLE")] == [1, 3, 0]
    driver = await PostgresDriver.connect(database_url)
    try:
        await driver.execute("CREATE TABLE t (v BIGINT)")
        await driver.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
        assert await driver.execute("UPDATE t SET v = v + 1 WHERE v > ?", 1) == 2

        async def add_one() -> None:  # read-modify-write: lost updates without the lock
            async with driver.transaction(lock="counter") as transaction:
                row = await transaction.fetchone("SELECT max(v) FROM t")
                assert row is not None
                await transaction.execute("INSERT INTO t VALUES (?)", row[0] + 1)

        await asyncio.gather(*(add_one() for _ in range(5)))
        assert await driver.fetchone("SELECT count(DISTINCT v), max(v) FROM t") == (8, 9)
    finally:
        await driver.aclose()


def _names(catalogue: Catalogue) -> tuple[dict[str, set[str]], dict[str, tuple[str, str, str]]]:
    """Tables, their column names and the indexes (SQLite files of before declared
    INTEGER and REAL where the one schema says BIGINT and DOUBLE PRECISION: the same
    storage classes on SQLite)."""
    tables, indexes = catalogue
    return {table: set(columns) for table, columns in tables.items()}, indexes


@pytest.mark.parametrize("columns_added_later", [False, True], ids=["main", "older"])
async def test_a_sqlite_file_of_before_is_migrated_in_place(
    tmp_path: Path, columns_added_later: bool
) -> None:
    schema = SQLITE_BEFORE
    if columns_added_later:  # a file from before audit.job_ids and inbound.claimed_until
        schema = schema.replace(",\n    job_ids TEXT NOT NULL DEFAULT ''", "")
        schema = schema.replace(",\n    claimed_until REAL", "")
        assert "job_ids" not in schema and "claimed_until" not in schema
    path = tmp_path / "audit.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as before:
        before.executescript(schema)
        before.execute(
            "INSERT INTO audit (at, chat_id, user_id, command, recipients, outcome, detail)"
            " VALUES (1.5, -1, 7, '/wa', '4412345678', 'ok', 'queued')"
        )
        before.execute(
            "INSERT INTO inbound (received, channel, number, body, digest, chat_id)"
            " VALUES (2.5, 'whatsapp', '4412345678', 'hi', 'd1', -100)"
        )
        before.execute(
            "INSERT INTO updates (update_id, received, owner, payload) VALUES (5, 3, 'a', '{}')"
        )
        before.commit()
    storage = await Storage.open(await SqliteDriver.open(path))
    fresh = await SqliteDriver.open(tmp_path / "fresh.sqlite3")
    try:
        entry = AuditEntry(-1, 7, "/wa", ("4412345678",), Outcome.OK, "queued", 1.5)
        assert await storage.recent_audit(5, None) == [entry]
        (waiting,) = (await storage.claim_inbound(-100, 10.0, 15, "a")).messages
        assert (waiting.channel, waiting.body) == (Channel.WHATSAPP, "hi")
        assert [e.update_id for e in await storage.unfinished_updates("b", 4.0)] == [5]
        await migrate(fresh)
        upgraded = _names(await sqlite_catalogue(storage.driver))
        assert upgraded == _names(await sqlite_catalogue(fresh))
        assert upgraded[1]["inbound_pending"] == ("inbound", "chat_id,id", "posted is null")
        assert await storage.driver.fetch("SELECT version FROM schema_version") == [
            (len(MIGRATIONS),)
        ]
    finally:
        await storage.aclose()
        await fresh.aclose()


async def test_a_postgres_database_of_before_is_migrated_in_place(
    postgres: PostgresServer, database_url: str
) -> None:
    before = await asyncpg.connect(database_url)
    try:
        await before.execute(POSTGRES_BEFORE)
        await before.execute("INSERT INTO schema_version (version) VALUES (1)")
        await before.execute(
            "INSERT INTO audit (at, chat_id, user_id, command, recipients, outcome, detail,"
            " job_ids) VALUES (1.5, -1, 7, '/pdf', '', 'ok', 'done', 'job-1')"
        )
    finally:
        await before.close()
    storage = await Storage.open(await PostgresDriver.connect(database_url))
    fresh = await PostgresDriver.connect(await fresh_database(postgres))
    try:
        entry = AuditEntry(-1, 7, "/pdf", (), Outcome.OK, "done", 1.5, ("job-1",))
        assert await storage.recent_audit(5, None) == [entry]
        await migrate(fresh)
        assert await postgres_catalogue(storage.driver) == await postgres_catalogue(fresh)
        assert await storage.driver.fetch("SELECT version FROM schema_version") == [
            (len(MIGRATIONS),)
        ]
    finally:
        await storage.aclose()
        await fresh.aclose()
