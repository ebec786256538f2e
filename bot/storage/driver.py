"""What every query is written against: a ``Driver`` per database, and its ``Dialect``.

The storage layer writes each query once, with ``?`` placeholders, and runs it on a
``Connection``: the driver itself (each statement on its own, autocommitted) or one
open transaction. The two drivers (``sqlite``, ``postgres``) differ in how they run a
statement, never in what the statement says; the few places where the databases really
differ are data here (``Dialect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Dialect:
    """How one database spells what the others spell differently."""

    name: str
    id_column: str  # the {id} token of the schema: an integer key the database assigns
    skip_locked: str  # appended to a claim's SELECT: rows another transaction holds are skipped
    for_update: str  # appended to a read-then-write SELECT: the rows are held until commit
    columns_sql: str  # the names of a table's columns (one row each), from the catalogue
    one_process: bool  # one process owns the database: whatever an earlier one held is free

    SQLITE: ClassVar[Dialect]
    POSTGRES: ClassVar[Dialect]


Dialect.SQLITE = Dialect(
    name="sqlite",
    id_column="INTEGER PRIMARY KEY AUTOINCREMENT",
    skip_locked="",  # BEGIN IMMEDIATE: one writer at a time, nothing to skip
    for_update="",  # nor to hold
    columns_sql="SELECT name FROM pragma_table_info(?)",
    one_process=True,
)
Dialect.POSTGRES = Dialect(
    name="postgres",
    id_column="BIGSERIAL PRIMARY KEY",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    for_update=" FOR UPDATE",
    columns_sql="SELECT column_name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = ?",
    one_process=False,
)


class Connection(Protocol):
    """Where a query runs: the driver itself (autocommit) or one open transaction."""

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; the number of rows it inserted, updated or deleted."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement per row, all or none (one transaction)."""
        ...

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]: ...

    async def fetchone(self, sql: str, *args: object) -> tuple[Any, ...] | None: ...


class Driver(Connection, Protocol):
    dialect: Dialect

    def transaction(
        self, lock: str | None = None, *, durable: bool = False
    ) -> AbstractAsyncContextManager[Connection]:
        """One transaction; with ``lock``, serialised against every other transaction
        taking the same lock name, across replicas (``pg_advisory_xact_lock`` on
        PostgreSQL; the SQLite driver's ``BEGIN IMMEDIATE`` already serialises writers).
        Committed when the block ends, rolled back when it raises. ``durable``: the
        commit is on disk before the block ends, even if the machine loses power — for
        what "200 means stored" promises (inbound messages, alerts); every commit
        survives the process dying."""
        ...

    async def aclose(self) -> None: ...
