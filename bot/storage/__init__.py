"""Every piece of persistent state, behind one class: ``Storage``.

No other module writes SQL: callers use its methods and the small records of
``records``. The layer is a package: ``driver`` (the protocol every query is written
against, and ``Dialect``), ``sqlite`` and ``postgres`` (the two drivers), ``schema``
(the one schema, as migrations) and ``sql`` (every query, once). ``open_storage`` picks
the database from the config: SQLite at ``audit.path`` (embedded, the default), or
PostgreSQL at ``database.url`` (replicas; asyncpg is imported only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.storage.records import (
    Arrival,
    InboundMessage,
    JournalEntry,
    LastRun,
    PostProgress,
    PostRef,
    StoredPrompt,
    StoredSchedule,
    Taken,
    Thread,
)
from bot.storage.sql import SqlStorage
from bot.storage.sqlite import SqliteDriver

if TYPE_CHECKING:
    from bot.config import Config
    from bot.storage.driver import Driver

Storage = SqlStorage

__all__ = [
    "Arrival",
    "InboundMessage",
    "JournalEntry",
    "LastRun",
    "PostProgress",
    "PostRef",
    "Storage",
    "StoredPrompt",
    "StoredSchedule",
    "Taken",
    "Thread",
    "open_storage",
]


async def open_storage(config: Config) -> Storage:
    """PostgreSQL when ``database.url`` is set (replicas), else SQLite at ``audit.path``;
    the schema created or migrated. Raises ``StorageUnavailable`` when PostgreSQL does
    not answer."""
    driver: Driver
    if config.database_url is None:
        driver = await SqliteDriver.open(config.audit_path)
    else:
        from bot.storage.postgres import PostgresDriver  # asyncpg only for teams that use it

        driver = await PostgresDriver.connect(config.database_url)
    return await SqlStorage.open(driver)
