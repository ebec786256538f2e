"""The audit trail: every command, allowed or refused, and every inbound message.

``AuditLog.record`` never blocks the caller: it appends to a buffer that is written to
``Storage`` in one transaction per batch, so a burst of commands costs one fsync, not
hundreds. No secret and no message body is ever passed in here — only who, where, what
command, to which numbers, and how it ended.

An entry leaves the buffer only once it is written: when the database cannot take a
batch (PostgreSQL restarting, a full disk) the batch stays where it was, in order, and
is tried again with a growing pause (tenacity) until it goes in. The buffer is bounded
(``MAX_BUFFERED``): past it a new entry is logged in full (numbers masked) instead of
kept, so a long outage cannot exhaust memory and still loses nothing silently. At
shutdown ``close`` tries once more and logs every entry it still could not write.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential
from tenacity.wait import wait_base

from bot.clock import Clock
from bot.logs import get_logger
from bot.recipients import mask
from bot.storage import Storage
from bot.vocabulary import AuditEntry

MAX_BUFFERED = 100_000  # entries waiting for the database; past this they go to the log
BATCH_MAX = 1_000  # entries per transaction
log = get_logger("bot.audit")


class AuditLog:
    """Append-only record of commands; ``record`` never blocks the caller."""

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        *,
        max_buffered: int = MAX_BUFFERED,
        retry_wait: wait_base | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._max_buffered = max_buffered
        self._retry_wait = retry_wait or wait_exponential(multiplier=0.5, max=30)
        self._buffer: list[AuditEntry] = []
        self._writing = asyncio.Lock()  # one batch in flight: never written twice
        self._writer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def record(self, entry: AuditEntry) -> None:
        """Queue ``entry``; it is written within one batch, soon, off the event loop."""
        if not entry.at:
            entry = replace(entry, at=self._clock.now())
        if len(self._buffer) >= self._max_buffered:
            log.error("audit_entry_dropped", reason="buffer full", **_fields(entry))
            return
        self._buffer.append(entry)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._keep_writing())

    async def _keep_writing(self) -> None:
        """Write until the buffer is empty, pausing longer after each failure; stops
        trying when ``close`` begins (which makes the last attempt itself)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=self._retry_wait,
            stop=lambda state: self._closing.is_set(),
            sleep=self._pause,
            before_sleep=_log_failure,
            reraise=True,
        )
        with contextlib.suppress(Exception):
            async for attempt in retrying:
                with attempt:
                    await self._write_buffered()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    async def _write_buffered(self) -> None:
        """Write what is buffered, batch by batch; a batch leaves the buffer once stored."""
        async with self._writing:
            while self._buffer:
                batch = self._buffer[:BATCH_MAX]
                await self._storage.add_audit(batch)
                del self._buffer[: len(batch)]

    async def flush(self) -> None:
        """Write everything recorded so far, now. Raises the storage's error when it
        cannot; the entries stay buffered and are tried again."""
        await self._write_buffered()

    async def close(self) -> None:
        """At shutdown: stop retrying, try once more, log whatever still cannot be written."""
        self._closing.set()
        if self._writer is not None:
            await self._writer
        try:
            await self.flush()
        except Exception as exc:
            log.error("audit_not_written", entries=len(self._buffer), error=type(exc).__name__)
            for entry in self._buffer:
                log.error("audit_entry_dropped", reason="database unavailable", **_fields(entry))

    async def recent(self, count: int, user_id: int | None = None) -> list[AuditEntry]:
        """The last ``count`` entries, newest first; only ``user_id``'s when given. Entries
        still waiting for the database are included."""
        try:
            await self.flush()
        except Exception as exc:
            log.warning("audit_flush_failed", error=type(exc).__name__)
        waiting = [e for e in reversed(self._buffer) if user_id in (None, e.user_id)]
        stored = await self._storage.recent_audit(count, user_id)
        return (waiting + stored)[:count]


def _log_failure(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    pause = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "audit_write_failed",
        error=type(error).__name__,
        attempt=state.attempt_number,
        retry_in_s=pause,
    )


def _fields(entry: AuditEntry) -> dict[str, Any]:
    """An entry as log fields: what the audit table would hold, numbers masked."""
    return {
        "at": entry.at,
        "chat": entry.chat_id,
        "user": entry.user_id,
        "command": entry.command,
        "recipients": [mask(n) for n in entry.recipients],
        "outcome": entry.outcome.value,
        "detail": entry.detail[:200],
        "job_ids": list(entry.job_ids),
    }
