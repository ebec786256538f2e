"""Several replicas of the bot on one PostgreSQL: which one polls Telegram, and a fence
so that a poller that froze or was cut off never acts once it has lost the role.

Telegram allows one ``getUpdates`` consumer per bot. The replicas elect it with a
**lease**: one row in PostgreSQL (``Storage.claim_poller``) naming the holder, a term
and an expiry set by the *database's* clock. The poller renews it every
``ELECTION_EVERY_S``; a standby takes it once it has lapsed (the term then grows by
one); a clean shutdown gives it back at once (``Storage.release_poller``).

Why a lease and not the session advisory lock we had: a lock lives as long as its
session, and PostgreSQL ends a session only when TCP notices a dead peer — about two
hours by default, and never while a frozen process's kernel still acknowledges (a
paused VM, a ``SIGSTOP``ped container). Keepalive or ``tcp_user_timeout`` settings
would shorten the first case but not the second, and they still leave a resumed poller
free to poll beside the new one. A lease runs out by itself, whatever the holder's
machine does, and its holder can tell from its own monotonic clock, without asking
anyone, when it can no longer be sure it holds it. That is the fence:

* **getUpdates**: the poller sends one only while its lease is known valid for a whole
  long poll plus a margin (``may_poll``: ``POLL_TIMEOUT_S + MARGIN_S`` left, counted from
  *before* the renewal that granted it, so the database's expiry is later still). So
  Telegram has finished the old poller's last ``getUpdates`` before a standby can take
  the lease — no 409 — and a poller that resumes after a freeze sends none.
* **Handling**: an update is journaled before it is handled, in one transaction with a
  check that the lease is still this replica's and unexpired by the database's clock
  (``Storage.record_polled_update``); an update fetched before a freeze is therefore
  not recorded, not confirmed to Telegram, and the new poller gets it again.
* **Answering**: a handler checks ``holds(term)`` before every message it sends; an
  update whose handler ran into a lost term is left unfinished in the journal, and the
  new poller's recovery answers it (a send: ``outcome unknown``) or runs it again.

One gap is left to the operating system: a VM whose monotonic clock stands still while
it is paused resumes believing its lease is fresh and may send one more getUpdates (a
409 for the new poller); the journal's database-side check still keeps it from
handling or confirming what it fetched, and its next renewal tells it the lease is
gone. A WhatsMate call already under way when the lease runs out is not stopped (the
gateway takes no fencing token): the new poller answers that command ``outcome
unknown``, which stays true.

With SQLite (one process) the lease is never shared: this replica polls from the start
and never lapses. What the new poller must finish of the old one's work is the Telegram
front end's business (``TelegramFrontend.recover``).

In the lifecycle (``bot.lifecycle``) the lease is a part of its own, held from the first
part on and given back after the last (``hold`` / ``release``), so that a standby never
takes over while this replica still answers the updates it took in; polling is the
``Polling`` part, which starts following the lease (``lead``) once everything else is up
and stops (``stand_down``) before anything else stops. Time is the injected
``Clock``'s ``monotonic()``: the fence must not move when the wall clock is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.logs import get_logger
from bot.storage import Storage
from bot.vocabulary import Role

LEASE_S = 8.0  # a poller that stops renewing loses the role this long after its last renewal
ELECTION_EVERY_S = 1.0  # renew (poller) or try to take over (standby) this often
POLL_TIMEOUT_S = 3  # getUpdates long poll: it must end at Telegram before the lease can
MARGIN_S = 2.0  # network delay and clock-rate drift between this replica and the database
log = get_logger("bot.replicas")


def replica_id() -> str:
    """This process's name in the update journal and on the lease."""
    return uuid.uuid4().hex[:12]


class Election:
    """This replica's part in the poller election: the lease it holds (if any), and the
    polling it starts and stops accordingly (``start_polling`` / ``stop_polling``)."""

    def __init__(
        self,
        storage: Storage,
        holder: str,
        *,
        shared: bool,
        clock: Clock,
        every_s: float = ELECTION_EVERY_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self._storage = storage
        self.holder = holder
        self._shared = shared
        self._clock = clock
        self._every_s = every_s
        self._lease_s = lease_s
        self.term: int | None = None  # the lease term held, by the last renewal
        self._valid_until = -math.inf  # by ``clock``: the lease is surely ours until then
        self._polling: int | None = None  # the term polling was started under
        self._draining = False
        self._changed = asyncio.Event()
        self._renewing: asyncio.Task[None] | None = None
        self._steering: asyncio.Task[None] | None = None

    @property
    def role(self) -> Role:
        return Role.POLLER if self._polling is not None else Role.STANDBY

    def _left(self) -> float:
        return self._valid_until - self._clock.monotonic()

    def holds(self, term: int) -> bool:
        """True while ``term`` is surely this replica's lease: a handler may answer."""
        return term == self.term and self._left() > MARGIN_S

    def may_poll(self) -> bool:
        """True while a ``getUpdates`` sent now ends before the lease could lapse."""
        polling = self._polling is not None and self._polling == self.term
        return polling and self._left() > POLL_TIMEOUT_S + MARGIN_S

    def _may_lead(self) -> bool:
        return self.term is not None and self._left() > POLL_TIMEOUT_S + MARGIN_S

    def lost(self) -> None:
        """The database said the lease is not ours (any more): stop acting at once."""
        if self.term is not None:
            log.warning("poller_lease_lost", term=self.term)
        self.term, self._valid_until = None, -math.inf
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def hold(self) -> None:
        """Renew the lease, or try to take it, every ``every_s`` until ``release``."""
        self._renewing = asyncio.create_task(self._renew(), name="poller lease")

    async def lead(
        self, lead: Callable[[int], Awaitable[None]], step_down: Callable[[], Awaitable[None]]
    ) -> None:
        """From now on ``lead(term)`` once the lease is ours for long enough to poll,
        ``step_down()`` as soon as it may not be."""
        self._steering = asyncio.create_task(self._steer(lead, step_down), name="polling")
        self._wake()  # the lease may be ours already

    async def stand_down(self) -> None:
        """Stop polling for good (shutting down) but keep the lease renewed, so updates in
        flight may still be answered. ``release`` gives the lease back."""
        self._draining = True
        self._wake()
        if self._steering is not None:
            await self._steering

    async def release(self) -> None:
        """Stop renewing and give the lease back (a standby takes over at once)."""
        self._draining = True
        tasks = [task for task in (self._steering, self._renewing) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._steering = self._renewing = None
        if self.term is not None and self._shared:
            try:
                async with asyncio.timeout(2):
                    await self._storage.release_poller(self.holder)
            except Exception:  # the lease runs out by itself
                log.warning("poller_release_failed", exc_info=True)
        self.term, self._valid_until = None, -math.inf

    async def _renew(self) -> None:
        while True:
            asked = self._clock.monotonic()  # the lease runs from no earlier than this
            try:
                async with asyncio.timeout(self._every_s * 2):
                    term = (
                        None
                        if self._draining and self.term is None  # never take it to leave
                        else await self._storage.claim_poller(self.holder, self._lease_s)
                    )
            except Exception:  # the database is away: the lease runs out by itself
                log.warning("poller_lease_renewal_failed", exc_info=True)
            else:
                if term is None:
                    if self.term is not None:
                        self.lost()
                else:
                    if term != self.term:
                        log.info("poller_lease_taken", term=term)
                    self.term = term
                    self._valid_until = asked + self._lease_s if self._shared else math.inf
            self._wake()
            await asyncio.sleep(self._every_s)

    async def _steer(
        self, lead: Callable[[int], Awaitable[None]], step_down: Callable[[], Awaitable[None]]
    ) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                if self._polling is not None and self._draining:
                    try:
                        await step_down()  # still holding: its last getUpdates confirms
                    finally:
                        self._polling = None
                elif self._polling is not None and not self.may_poll():
                    log.warning("stopped_polling", term=self._polling, lease=self.term)
                    self._polling = None
                    await step_down()
                elif self._polling is None and not self._draining and self._may_lead():
                    assert self.term is not None
                    log.info("became_poller", term=self.term)
                    self._polling = self.term
                    await lead(self.term)
            except Exception:  # Telegram or the database away: try again next round
                log.exception("election_step_failed")
                if self._polling is not None and not self._draining:
                    self._polling = None
                    with contextlib.suppress(Exception):
                        await step_down()
            if self._draining and self._polling is None:
                return
