"""The audit keeps what the database could not take yet: a failed batch stays, in order,
is written once the database is back, and what shutdown still cannot write is logged.

The database's failure is the real exception SQLite raises (``sqlite3.OperationalError``)
from a real SQLite file's storage; only ``add_audit`` is made to fail, and only here."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_fixed, wait_none

from bot.audit import AuditLog
from bot.logs import configure_logging
from bot.storage import Storage
from bot.storage.sqlite import SqliteDriver
from bot.vocabulary import AuditEntry, Outcome
from tests.conftest import FakeClock


class FailingWrites:
    """A real SQLite ``Storage`` whose ``add_audit`` fails while ``failures`` remain."""

    def __init__(self, real: Storage, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.written = asyncio.Event()
        self.attempted = asyncio.Event()

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        self.attempted.set()
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        await self.real.add_audit(entries)
        self.written.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    @classmethod
    async def open(cls, path: Path, failures: int) -> FailingWrites:
        return cls(await Storage.open(await SqliteDriver.open(path)), failures)


def entry(n: int) -> AuditEntry:
    return AuditEntry(-1, 7, f"/wa{n}", ("4412345678",), Outcome.OK, "queued", 1000.0 + n)


@pytest.fixture
def logs() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=stream)
    return stream


def events(logs: io.StringIO, name: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in logs.getvalue().splitlines()]
    return [e for e in parsed if e["event"] == name]


async def stored_commands(storage: FailingWrites) -> list[str]:
    return [e.command for e in reversed(await storage.real.recent_audit(100, None))]


async def test_a_failed_batch_is_kept_in_order_and_written_later(
    tmp_path: Path, logs: io.StringIO
) -> None:
    storage = await FailingWrites.open(tmp_path / "audit.sqlite3", failures=2)
    audit = AuditLog(storage, FakeClock(), retry_wait=wait_none())
    audit.record(entry(1))
    audit.record(entry(2))
    await asyncio.wait_for(storage.written.wait(), 10)
    audit.record(entry(3))
    await audit.flush()
    assert await stored_commands(storage) == ["/wa1", "/wa2", "/wa3"]
    assert [e["error"] for e in events(logs, "audit_write_failed")] == ["OperationalError"] * 2
    await audit.close()
    await storage.real.aclose()


async def test_flush_raises_while_the_database_fails_and_loses_nothing(tmp_path: Path) -> None:
    storage = await FailingWrites.open(tmp_path / "audit.sqlite3", failures=1000)
    audit = AuditLog(storage, FakeClock(), retry_wait=wait_fixed(3600))
    audit.record(entry(1))
    with pytest.raises(sqlite3.OperationalError):
        await audit.flush()
    audit.record(entry(2))
    assert [e.command for e in await audit.recent(5)] == ["/wa2", "/wa1"]  # still waiting
    storage.failures = 0  # the database is back
    await audit.flush()
    assert await stored_commands(storage) == ["/wa1", "/wa2"]
    assert [e.command for e in await audit.recent(5)] == ["/wa2", "/wa1"]  # once each
    await audit.close()
    await storage.real.aclose()


async def test_shutdown_tries_again_then_logs_what_it_could_not_write(
    tmp_path: Path, logs: io.StringIO
) -> None:
    storage = await FailingWrites.open(tmp_path / "audit.sqlite3", failures=1)
    audit = AuditLog(storage, FakeClock(), retry_wait=wait_fixed(3600))
    audit.record(entry(1))
    await asyncio.wait_for(storage.attempted.wait(), 10)  # failed: now it pauses an hour
    await audit.close()  # does not wait the hour: it tries once more, and that works
    assert await stored_commands(storage) == ["/wa1"]

    storage.failures = 1000
    audit = AuditLog(storage, FakeClock(), retry_wait=wait_fixed(3600))
    audit.record(entry(2))
    audit.record(entry(3))
    await audit.close()
    dropped = events(logs, "audit_entry_dropped")
    assert [(e["command"], e["recipients"], e["reason"]) for e in dropped] == [
        ("/wa2", ["44•••678"], "database unavailable"),
        ("/wa3", ["44•••678"], "database unavailable"),
    ]
    await storage.real.aclose()


async def test_the_buffer_is_bounded_and_what_does_not_fit_is_logged(
    tmp_path: Path, logs: io.StringIO
) -> None:
    storage = await FailingWrites.open(tmp_path / "audit.sqlite3", failures=1000)
    audit = AuditLog(storage, FakeClock(), max_buffered=3, retry_wait=wait_fixed(3600))
    for n in range(5):
        audit.record(entry(n))
    assert [e["command"] for e in events(logs, "audit_entry_dropped")] == ["/wa3", "/wa4"]
    storage.failures = 0
    await audit.close()
    assert await stored_commands(storage) == ["/wa0", "/wa1", "/wa2"]
    await storage.real.aclose()
