"""The running bot's parts, started in one fixed order and stopped in the reverse order.

``python -m bot run`` is ``Lifecycle.of_bot(runtime, frontend).run(stop)``. Everything
that runs for as long as the bot does is a ``Part`` (``start()``, ``stop()``), and
``bot_parts`` lists them once, in the order they start:

0. ``poller lease`` (polling mode): this replica's lease renewed, or tried for, from the
   start (``replicas.Election``); it is given back last, once the front end has
   answered every update in flight, so a standby takes over only then — at once.
1. ``front end``: the chat front end (``telegram_app``) ready to handle updates; it is
   stopped last, and stopping it finishes every update in flight.
2. ``pruning``: what the storage keeps past its time is dropped (``Storage.prune``) before
   the bot is up, then every ``PRUNE_EVERY_S``.
3. ``schedules``: the schedules armed, then their timers run (a run in flight finishes);
   with replicas they follow, every ``SCHEDULE_SYNC_S``, what other replicas added or
   removed.
4. ``poster``: the bridge's outbox poster (with ``inbound``); what it has not posted
   stays stored for the next start or another replica. Then, with ``alerts``, paging's
   ``escalation`` runner (due steps and the sends they owe) and its ``incident posts``
   (the incidents' outbox): what they have not done is stored, and done once, later.
5. ``web server``: ``/healthz``, ``/metrics``, the webhook and the inbound URLs
   (with ``http.port``).
6. ``polling`` (poll while this replica's lease says it may, with a fresh updater for
   each term; stand by otherwise) or ``webhook`` (register the web server's URL with
   Telegram, once it listens).

Stopping runs backwards: first no update is taken in any more (polling stops; in
webhook mode the web server closes), then the web server, the poster and the timers
stop, the front end finishes what it was handling, and last the lease goes. SIGTERM
(``__main__``) only sets ``stop``; the audit is flushed when the runtime closes after
``run`` returns.

Adding a part is one line in ``bot_parts``, at its place in the order (``None`` when it
is not configured) — as paging's two are, coroutines that run until cancelled, built by
``open_runtime`` like the bridge, after the poster::

    Task("escalation", pager.run), Task("incident posts", lambda: pager.poster.run(...))

(``prepare=`` is awaited before the coroutine starts, so what must be loaded before the
bot is up fails the start instead of the part; a long-running part that is a start/stop
pair instead of a coroutine is ``Step(name, start, stop)``.)

A part that fails to start stops the ones started before it (in reverse) and the error
ends ``run``; a part that fails to stop is logged and the others still stop.

This module knows no Telegram: the front end is the ``FrontEnd`` interface below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.bridge import Button
from bot.errors import StorageUnavailable
from bot.health import Health
from bot.logs import get_logger
from bot.replicas import Election
from bot.runtime import Runtime
from bot.schedules import SCHEDULE_SYNC_S, Schedule, Timers
from bot.vocabulary import Role

log = get_logger("bot.lifecycle")
PRUNE_EVERY_S = 3600.0  # each table also drops its expired rows as it grows


class FrontEnd(Protocol):
    """What the lifecycle drives of the chat front end (``telegram_app.TelegramFrontend``)."""

    def start(self) -> Awaitable[None]:
        """Ready to handle updates; none is taken in yet."""
        ...

    def stop(self) -> Awaitable[None]:
        """Finish every update in flight, then close."""
        ...

    def start_polling(self, term: int) -> Awaitable[None]:
        """Become the poller under lease ``term``: finish what an earlier poller left,
        then take updates in (each one only under that term)."""
        ...

    def stop_polling(self) -> Awaitable[None]:
        """Take no more updates in (those taken are confirmed to Telegram)."""
        ...

    @property
    def polling(self) -> bool: ...

    def register_webhook(self) -> Awaitable[None]: ...

    def deliver(self, data: dict[str, Any]) -> Awaitable[None]:
        """An update received by the webhook (``InboundRejected`` when it is none)."""
        ...

    def post(
        self, chat_id: int, text: str, reply_to: int | None, buttons: Sequence[Button] = ()
    ) -> Awaitable[int]:
        """Post in a chat (the bridge's and paging's way in); the id of the message."""
        ...

    def run_schedule(self, schedule: Schedule) -> Coroutine[Any, Any, None]:
        """Run a schedule that came due and post its answer."""
        ...


class Part(Protocol):
    @property
    def name(self) -> str: ...

    def start(self) -> Awaitable[None]: ...

    def stop(self) -> Awaitable[None]: ...


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Step:
    """A part that is a pair of calls (the front end, the web server)."""

    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]] = _nothing


class Task:
    """A part that is a coroutine running until cancelled (the poster, the timers).

    ``prepare`` is awaited first, so a part that cannot begin stops the start. Stopping
    cancels the coroutine; what it must finish, it finishes in its ``finally``.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        prepare: Callable[[], Awaitable[None]] = _nothing,
    ) -> None:
        self.name = name
        self._run = run
        self._prepare = prepare
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._prepare()
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        log.error("part_ended", part=self.name, exc_info=task.exception())


class Polling:
    """Poll Telegram while this replica's lease says it may (always, on SQLite); the
    lease itself is held by its own part (``poller lease``), started first."""

    name = "polling"

    def __init__(self, election: Election, frontend: FrontEnd) -> None:
        self._election = election
        self._frontend = frontend

    @property
    def role(self) -> Role:
        return self._election.role

    @property
    def taking(self) -> bool:
        return self.role is not Role.POLLER or self._frontend.polling

    async def start(self) -> None:
        await self._election.lead(self._frontend.start_polling, self._frontend.stop_polling)

    async def stop(self) -> None:
        """Stop polling for good; the lease stays held until the ``poller lease`` part
        stops, so the updates in flight are still answered."""
        try:
            await self._election.stand_down()  # a round in progress (a takeover) finishes
        finally:
            await self._frontend.stop_polling()


class WebhookRegistration:
    """Webhook mode: Telegram delivers to the web server, which is listening by now."""

    name = "webhook"
    role = Role.WEBHOOK
    taking = True

    def __init__(self, frontend: FrontEnd) -> None:
        self._frontend = frontend

    async def start(self) -> None:
        await self._frontend.register_webhook()

    async def stop(self) -> None:
        """The webhook stays registered: another replica, or the next start, takes it."""


def bot_parts(runtime: Runtime, frontend: FrontEnd) -> list[Part]:
    """The bot's parts, in the order they start (they stop in reverse)."""
    config, timers, bridge, pager = runtime.config, runtime.timers, runtime.bridge, runtime.pager
    election = runtime.election
    polling = not config.telegram.webhook_url
    intake = Polling(election, frontend) if polling else WebhookRegistration(frontend)
    health = Health(runtime.storage, intake, runtime.gateway_health)
    parts: list[Part | None] = [
        Step("poller lease", election.hold, election.release) if polling else None,
        Step("front end", frontend.start, frontend.stop),
        _pruning(runtime),
        _schedules(runtime, timers, frontend) if timers is not None else None,
        Task("poster", lambda: bridge.run_poster(frontend.post)) if bridge is not None else None,
        *(
            (
                Task("escalation", pager.run),
                Task(
                    "incident posts",
                    lambda: pager.poster.run(
                        frontend.post, config.inbound.chat if config.inbound else None
                    ),
                ),
            )
            if pager is not None
            else ()
        ),
        _web_server(runtime, frontend, health),
        intake,
    ]
    return [part for part in parts if part is not None]


def _schedules(runtime: Runtime, timers: Timers, frontend: FrontEnd) -> Part:
    service = runtime.service

    async def arm() -> None:
        await service.start_schedules()
        if runtime.config.database_url is not None:  # replicas: follow the others' changes
            timers.follow(service.sync_schedules, SCHEDULE_SYNC_S)

    return Task("schedules", lambda: timers.run(frontend.run_schedule), prepare=arm)


def _pruning(runtime: Runtime) -> Part:
    storage, clock = runtime.storage, runtime.clock

    async def sweep() -> None:
        log.info("pruned", rows=await storage.prune(clock.now()))

    async def every_hour() -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                await sweep()
            except StorageUnavailable:  # the database is away: the next sweep takes it all
                log.warning("prune_failed", exc_info=True)

    return Task("pruning", every_hour, prepare=sweep)


def _web_server(runtime: Runtime, frontend: FrontEnd, health: Health) -> Part | None:
    config = runtime.config
    if not config.http.port:
        return None
    from bot.web import Webhook, WebServer, make_app  # aiohttp.web only when serving

    telegram = config.telegram
    webhook = (
        Webhook(telegram.secret_token or "", frontend.deliver) if telegram.webhook_url else None
    )
    app = make_app(
        health=health,
        metrics=runtime.metrics,
        webhook=webhook,
        bridge=runtime.bridge,
        pager=runtime.pager,
    )
    server = WebServer(app, config.http.listen, config.http.port)
    return Step("web server", server.start, server.stop)


class Lifecycle:
    """Starts ``parts`` in order, and stops the started ones in reverse."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = tuple(parts)

    @classmethod
    def of_bot(cls, runtime: Runtime, frontend: FrontEnd) -> Lifecycle:
        return cls(bot_parts(runtime, frontend))

    async def run(self, stop: asyncio.Event) -> None:
        """Start every part, wait for ``stop``, then stop them all, newest first."""
        started: list[Part] = []
        try:
            for part in self.parts:
                await part.start()
                started.append(part)
                log.debug("part_started", part=part.name)
            log.info("started", parts=[part.name for part in started])
            await stop.wait()
            log.info("stopping")
        finally:
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception:
                    log.exception("part_stop_failed", part=part.name)
                else:
                    log.debug("part_stopped", part=part.name)
