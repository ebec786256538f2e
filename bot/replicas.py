"""Several replicas of the bot on one PostgreSQL: which one polls Telegram.

Telegram allows one ``getUpdates`` consumer per bot. The replicas elect it through
``Storage.try_poller`` (a PostgreSQL advisory lock held on a session of its own; with
SQLite the one process always wins). The others stand by — serving ``/healthz`` and
the inbound URLs, posting the outbox — and try again every ``ELECTION_EVERY_S``: when
the poller dies its session ends, the lock is free, and a standby takes over within a
few seconds (the contract says 15). What the new poller must finish of the dead one's
work is the Telegram front end's business (``TelegramFrontend.recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

from bot.logs import get_logger
from bot.storage import Storage
from bot.vocabulary import Role

ELECTION_EVERY_S = 2.0
log = get_logger("bot.replicas")


def replica_id() -> str:
    """This process's name in the update journal (who recorded an update)."""
    return uuid.uuid4().hex[:12]


class Election:
    """Keeps this replica polling while it holds the poller lock, standing by otherwise."""

    def __init__(self, storage: Storage, every_s: float = ELECTION_EVERY_S) -> None:
        self._storage = storage
        self._every_s = every_s
        self.role = Role.STANDBY

    async def run(
        self,
        lead: Callable[[], Awaitable[None]],
        step_down: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        """Until ``stop``: ``lead()`` on winning the lock, ``step_down()`` on losing it."""
        while not stop.is_set():
            try:
                leading = await self._storage.try_poller()
            except Exception:  # the database is away: nobody can be sure to lead
                log.warning("election_failed", exc_info=True)
                leading = False
            try:
                if leading and self.role is not Role.POLLER:
                    log.info("became_poller")
                    await lead()
                    self.role = Role.POLLER
                elif not leading and self.role is Role.POLLER:
                    log.warning("lost_poller_lock")
                    self.role = Role.STANDBY
                    await step_down()
            except Exception:  # Telegram or the database away: try again next round
                log.exception("election_step_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every_s):
                    await stop.wait()
