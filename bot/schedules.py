"""Scheduled commands: what runs when, what is posted, and what survives a restart.

Pure decisions live here (when is the first run after a restart, should this result be
posted under ``notify: change``), and ``Timers``, the timer behind them (APScheduler's
asyncio scheduler, which python-telegram-bot's JobQueue is made of): the service arms
and disarms it, the lifecycle runs it. Schedules added from the chat and the last run of
every schedule are kept in ``Storage``, so a restart neither forgets them nor replays
every slot it missed: a missed schedule runs once at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, assert_never

from bot import commands as c
from bot.config import ScheduleConfig
from bot.errors import StorageUnavailable
from bot.logs import get_logger
from bot.replies import Reply, Result
from bot.storage import LastRun, Storage, StoredSchedule
from bot.vocabulary import Notify, Outcome, duration_s

log = get_logger("bot.schedules")
SCHEDULE_SYNC_S = 10.0  # replicas pick up schedules added or removed elsewhere this often
_FOLLOW = "follow other replicas"  # the id of the job that does


@dataclass(frozen=True)
class Schedule:
    name: str
    chat_id: int
    command: str
    every_s: int | None = None
    cron: str | None = None
    notify: Notify = Notify.ALWAYS
    from_chat: bool = False  # added with /schedule add (stored), not from the config

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> Schedule:
        return cls(
            config.name, config.chat, config.command, config.every_s, config.cron, config.notify
        )

    @classmethod
    def from_stored(cls, stored: StoredSchedule) -> Schedule:
        every_s = duration_s(stored.every)
        return cls(
            stored.name,
            stored.chat_id,
            stored.command,
            every_s,
            notify=Notify.CHANGE,
            from_chat=True,
        )

    @property
    def when(self) -> str:
        return f"cron {self.cron}" if self.cron else f"every {_duration(self.every_s or 0)}"


class Scheduler(Protocol):
    """The timer behind the schedules (``Timers`` in production)."""

    def start(self, schedule: Schedule, first_in_s: float) -> None: ...

    def stop(self, name: str) -> None: ...

    def names(self) -> set[str]:
        """The schedules running here."""
        ...


Fire = Callable[[Schedule], Coroutine[Any, Any, None]]
"""Run a schedule that came due (and post what it says)."""


class Timers:
    """``Scheduler`` on APScheduler: schedules are armed at any time and come due while
    ``run`` runs (a part of the lifecycle)."""

    def __init__(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # A run that is late (a busy loop, a slow start) still runs, once.
        self._scheduler = AsyncIOScheduler(
            job_defaults={"misfire_grace_time": None, "coalesce": True}
        )
        self._due: asyncio.Queue[Schedule] = asyncio.Queue()

    def start(self, schedule: Schedule, first_in_s: float) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        if first_in_s <= 0:  # no trigger: once, as soon as the timers run
            self._scheduler.add_job(self._come_due, args=(schedule,), name=schedule.name)
        if schedule.every_s:
            first = datetime.now().astimezone() + timedelta(
                seconds=first_in_s if first_in_s > 0 else schedule.every_s
            )
            trigger = IntervalTrigger(seconds=schedule.every_s, start_date=first)
        else:
            trigger = cron_trigger(schedule.cron or "")
        self._scheduler.add_job(self._come_due, trigger, args=(schedule,), name=schedule.name)

    def stop(self, name: str) -> None:
        for job in self._scheduler.get_jobs():
            if job.name == name:
                job.remove()

    def names(self) -> set[str]:
        return {job.name for job in self._scheduler.get_jobs() if job.id != _FOLLOW}

    def follow(self, sync: Callable[[], Awaitable[None]], every_s: float) -> None:
        """Call ``sync`` every ``every_s`` while the timers run (replicas: start and stop
        what other replicas added and removed); a failure is logged, tried next time."""
        from apscheduler.triggers.interval import IntervalTrigger

        async def follow() -> None:
            try:
                await sync()
            except StorageUnavailable as exc:  # the database is away: next round
                log.warning("schedule_sync_failed", error=type(exc).__name__)

        self._scheduler.add_job(follow, IntervalTrigger(seconds=every_s), id=_FOLLOW)

    async def _come_due(self, schedule: Schedule) -> None:
        self._due.put_nowait(schedule)

    async def run(self, fire: Fire) -> None:
        """``fire`` every schedule as it comes due, until cancelled; runs in flight then
        finish (a scheduled send is never cut off half-way)."""
        self._scheduler.start()
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                schedule = await self._due.get()
                task = asyncio.create_task(fire(schedule))
                running.add(task)
                task.add_done_callback(_ran)
                task.add_done_callback(running.discard)
        finally:
            self._scheduler.shutdown(wait=False)
            await asyncio.gather(*running, return_exceptions=True)


def _ran(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("schedule_failed", exc_info=task.exception())


def cron_trigger(expression: str) -> Any:
    """An APScheduler trigger for a five-field crontab line, in the server's timezone."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(expression)


def first_run_in(schedule: Schedule, last: LastRun | None, now: float) -> float:
    """Seconds until the first run after start: 0 when never run or a slot was missed."""
    if last is None:
        return 0.0
    if schedule.every_s:
        return max(0.0, last.at + schedule.every_s - now)
    trigger = cron_trigger(schedule.cron or "")
    previous = datetime.fromtimestamp(last.at).astimezone()
    upcoming = trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1))
    if upcoming is None or upcoming.timestamp() <= now:
        return 0.0
    return float(upcoming.timestamp()) - now


def slot_of(schedule: Schedule, now: float, first_run: float) -> str:
    """The slot a run at ``now`` belongs to: replicas that fire together share it.

    ``every``: the interval counted from the schedule's first run (rounded, so a timer
    a little early or late still lands in its own slot); cron: the minute it fired in.
    """
    if schedule.every_s:
        return f"every {schedule.every_s}s #{round((now - first_run) / schedule.every_s)}"
    return f"cron {schedule.cron} @{int(now // 60)}"


def should_post(schedule: Schedule, previous_reply: str | None, reply: str) -> bool:
    """``notify: always`` posts every result; ``change`` the first, then only changes."""
    return schedule.notify is Notify.ALWAYS or reply != previous_reply


def parse_schedule_every(text: str) -> int | None:
    """The interval of ``/schedule add``: 30s, 15m, 1h, 1d (at least 10 s)."""
    seconds = duration_s(text)
    return seconds if seconds is not None and seconds >= 10 else None


async def added_schedules(storage: Storage) -> list[Schedule]:
    """The schedules added from the chat."""
    return [Schedule.from_stored(s) for s in await storage.added_schedules()]


async def manage_schedules(
    command: c.ScheduleCommand,
    *,
    configured: Sequence[Schedule],
    storage: Storage,
    scheduler: Scheduler,
    chat_id: int,
    user_id: int,
) -> Result:
    """``/schedule list | add <every> <command> | remove <name>`` (admins)."""
    added = await added_schedules(storage)
    match command:
        case c.ScheduleList():
            rows = [
                f"{s.name}: {s.when} in chat {s.chat_id}: {s.command}"
                + (" (config)" if not s.from_chat else "")
                for s in (*configured, *added)
            ]
            return Result(Reply("\n".join(rows) or "No schedules.", Outcome.OK))
        case c.ScheduleRemove():
            return await _remove(command.name, configured, storage, scheduler)
        case c.ScheduleAdd():
            return await _add(command, (*configured, *added), storage, scheduler, chat_id, user_id)
        case _:
            assert_never(command)


async def _remove(
    name: str, configured: Sequence[Schedule], storage: Storage, scheduler: Scheduler
) -> Result:
    if any(s.name == name for s in configured):
        return Result(Reply(f"{name} comes from the config file; edit it there.", Outcome.USAGE))
    if not await storage.remove_schedule(name):
        return Result(Reply(f"No schedule named {name!r}.", Outcome.USAGE))
    scheduler.stop(name)
    return Result(Reply(f"Removed schedule {name}.", Outcome.OK), name)


async def _add(
    command: c.ScheduleAdd,
    existing: Sequence[Schedule],
    storage: Storage,
    scheduler: Scheduler,
    chat_id: int,
    user_id: int,
) -> Result:
    every_s = parse_schedule_every(command.every)
    usage = c.SPECS["schedule"]
    if every_s is None:
        raise usage.fail("<every> is a number and s, m, h or d, at least 10s (e.g. 15m).")
    if isinstance(c.parse(command.command).command, c.SCHEDULE_COMMANDS):
        raise usage.fail("A schedule cannot manage schedules.")
    taken = {s.name for s in existing}
    while (name := f"s{await storage.next_schedule_number()}") in taken:
        pass  # a configured schedule has this name: never reuse a name, even a freed one
    schedule = Schedule(
        name, chat_id, command.command, every_s, notify=Notify.CHANGE, from_chat=True
    )
    await storage.add_schedule(
        StoredSchedule(name, chat_id, command.every, command.command), user_id
    )
    scheduler.start(schedule, first_in_s=0)
    text = f"Added schedule {name}: {schedule.when}: {command.command} (posts changes only)."
    return Result(Reply(text, Outcome.OK), name)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
