"""The audit trail: every command, allowed or refused, and every inbound message.

``AuditLog.record`` never blocks the caller: it appends to a buffer that is written to
``Storage`` in one transaction per batch, so a burst of commands costs one fsync, not
hundreds. No secret and no message body is ever passed in here — only who, where, what
command, to which numbers, and how it ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from bot.storage import Storage
from bot.vocabulary import AuditEntry


class AuditLog:
    """Append-only record of commands; ``record`` never blocks the caller."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock
        self._buffer: list[AuditEntry] = []
        self._flushing: asyncio.Future[None] | None = None

    def record(self, entry: AuditEntry) -> None:
        """Queue ``entry``; it is written within one batch, soon, off the event loop."""
        if not entry.at:
            entry = replace(entry, at=self._clock())
        self._buffer.append(entry)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._write_batches())

    async def _write_batches(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            await self._storage.add_audit(batch)

    async def flush(self) -> None:
        """Wait until everything recorded so far is on disk."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        if self._buffer:
            await self._write_batches()

    async def recent(self, count: int, user_id: int | None = None) -> list[AuditEntry]:
        """The last ``count`` entries, newest first; only ``user_id``'s when given."""
        await self.flush()
        return await self._storage.recent_audit(count, user_id)
