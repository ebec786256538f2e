"""Scheduled commands: what runs when, what is posted, and what survives a restart.

Pure decisions live here (when is the first run after a restart, should this result be
posted under ``notify: change``); the timer itself is python-telegram-bot's JobQueue,
driven from ``telegram_app``. Schedules added from the chat and the last run of every
schedule are kept in the bot's SQLite file, so a restart neither forgets them nor
replays every slot it missed: a missed schedule runs once at start.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.audit import Database
from bot.config import ScheduleConfig, parse_every


@dataclass(frozen=True)
class Schedule:
    name: str
    chat_id: int
    command: str
    every_s: int | None = None
    cron: str | None = None
    notify: str = "always"
    from_chat: bool = False  # added with /schedule add (stored), not from the config

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> Schedule:
        return cls(
            config.name, config.chat, config.command, config.every_s, config.cron, config.notify
        )

    @property
    def when(self) -> str:
        return f"cron {self.cron}" if self.cron else f"every {_duration(self.every_s or 0)}"


@dataclass(frozen=True)
class LastRun:
    at: float
    reply: str | None


class Scheduler(Protocol):
    """The timer behind the schedules (the JobQueue in production)."""

    def start(self, schedule: Schedule, first_in_s: float) -> None: ...

    def stop(self, name: str) -> None: ...


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


def should_post(schedule: Schedule, previous_reply: str | None, reply: str) -> bool:
    """``notify: always`` posts every result; ``change`` the first, then only changes."""
    return schedule.notify == "always" or reply != previous_reply


def parse_schedule_every(text: str) -> int | None:
    """The interval of ``/schedule add``: 30s, 15m, 1h, 1d (at least 10 s)."""
    seconds = parse_every(text)
    return seconds if seconds is not None and seconds >= 10 else None


class ScheduleStore:
    """Chat-added schedules and the last run of every schedule, in the bot's SQLite file."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def added(self) -> list[Schedule]:
        def query(connection: sqlite3.Connection) -> list[Schedule]:
            rows = connection.execute(
                "SELECT name, chat_id, every, command FROM schedules ORDER BY name"
            ).fetchall()
            return [
                Schedule(name, chat, command, parse_every(every), notify="change", from_chat=True)
                for name, chat, every, command in rows
            ]

        return await self._db.run(query)

    async def add(self, schedule: Schedule, every: str, created_by: int) -> None:
        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO schedules (name, chat_id, every, command, created_by)"
                " VALUES (?, ?, ?, ?, ?)",
                (schedule.name, schedule.chat_id, every, schedule.command, created_by),
            )

        await self._db.run(insert)

    async def remove(self, name: str) -> bool:
        def delete(connection: sqlite3.Connection) -> bool:
            connection.execute("DELETE FROM schedule_runs WHERE name = ?", (name,))
            return connection.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount > 0

        return await self._db.run(delete)

    async def last_runs(self) -> dict[str, LastRun]:
        def query(connection: sqlite3.Connection) -> dict[str, LastRun]:
            rows = connection.execute("SELECT name, last_run, last_reply FROM schedule_runs")
            return {name: LastRun(at, reply) for name, at, reply in rows}

        return await self._db.run(query)

    async def mark_run(self, name: str, at: float, reply: str) -> None:
        def upsert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO schedule_runs (name, last_run, last_reply) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET last_run = excluded.last_run,"
                " last_reply = excluded.last_reply",
                (name, at, reply),
            )

        await self._db.run(upsert)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
