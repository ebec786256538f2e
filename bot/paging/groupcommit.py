"""Group commit: writes that arrive while one is being committed go in the next, together.

A burst of Alertmanager notifications (a storm) would otherwise cost one transaction —
one fsync on SQLite, one round trip on PostgreSQL — each, one after another; with this
a burst costs a few, and each caller still returns only once its own write is committed
("200 means stored"). Each caller gets its own result, or the error of the batch it was
in. Nothing waits for a batch to fill: a write that finds none in progress goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """``await commit(item)``: ``item`` written with whatever arrived meanwhile."""

    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R]]], most: int = 200) -> None:
        self._write = write
        self._most = most
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
