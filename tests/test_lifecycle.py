"""The lifecycle: the bot's parts start in one fixed order and stop in reverse, and
stopping (SIGTERM) finishes the commands in flight."""

from __future__ import annotations

import ast
import asyncio
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bot
from bot.lifecycle import Lifecycle, Step, Task
from tests.conftest import ADMIN, TEAM, BotUnderTest, free_port
from tests.fakes import HOLD


@dataclass
class Journal:
    events: list[str] = field(default_factory=list)

    def step(self, name: str, fail_start: bool = False, fail_stop: bool = False) -> Step:
        async def start() -> None:
            self.events.append(f"start {name}")
            if fail_start:
                raise RuntimeError(name)

        async def stop() -> None:
            self.events.append(f"stop {name}")
            if fail_stop:
                raise RuntimeError(name)

        return Step(name, start, stop)


async def test_parts_start_in_order_and_stop_in_reverse() -> None:
    journal, stop = Journal(), asyncio.Event()
    ran = asyncio.Event()

    async def run() -> None:
        ran.set()
        try:
            await asyncio.Event().wait()
        finally:
            journal.events.append("task finished")

    parts = [journal.step("a"), Task("t", run), journal.step("b", fail_stop=True)]
    running = asyncio.create_task(Lifecycle(parts).run(stop))
    await asyncio.wait_for(ran.wait(), 5)
    assert journal.events == ["start a", "start b"]
    stop.set()
    await asyncio.wait_for(running, 5)  # a part that fails to stop does not stop the others
    assert journal.events == ["start a", "start b", "stop b", "task finished", "stop a"]


async def test_a_part_that_cannot_start_stops_the_started_ones() -> None:
    journal = Journal()
    parts = [journal.step("a"), journal.step("b"), journal.step("c", fail_start=True)]
    parts.append(journal.step("d"))
    with pytest.raises(RuntimeError, match="c"):
        await asyncio.wait_for(Lifecycle(parts).run(asyncio.Event()), 5)
    assert journal.events == ["start a", "start b", "start c", "stop b", "stop a"]


class WatchedLog(io.StringIO):
    """The bot's log, telling when polling has stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.polling_stopped = asyncio.Event()

    def write(self, text: str) -> int:
        if '"part_stopped"' in text and '"polling"' in text:
            self.polling_stopped.set()
        return super().write(text)


def _parts(bot: BotUnderTest, event: str) -> list[str]:
    lines = [json.loads(line) for line in bot.log_text().splitlines() if line.startswith("{")]
    return [line["part"] for line in lines if line.get("event") == event]


async def test_the_bot_starts_its_parts_in_order_and_stopping_finishes_a_send(
    make_bot: BotUnderTest,
) -> None:
    ping = {"name": "p", "every": "1h", "chat": TEAM, "command": "/whoami"}
    make_bot.logs = logs = WatchedLog()
    bot = await make_bot.start(
        http={"listen": "127.0.0.1", "port": free_port()},
        inbound={"secret": "inbound-secret-0123456789", "chat": TEAM},
        schedules=[ping],
        whatsmate={"timeout_s": 30},  # the held send is answered when released, not timed out
    )
    order = ["poller lease", "front end", "pruning", "schedules", "poster", "web server", "polling"]
    assert _parts(bot, "part_started") == order
    bot.whatsmate.fail("/whatsapp/", HOLD)
    bot.telegram.message("/wa alice deploy done", user=ADMIN)
    await bot.whatsmate.wait_for(lambda: bot.whatsmate.in_flight == 1)
    stopping = asyncio.create_task(bot.stop())
    await asyncio.wait_for(logs.polling_stopped.wait(), 10)
    assert bot.telegram.replies(ADMIN) == []  # still sending, and nothing new is taken in
    bot.whatsmate.release()
    await asyncio.wait_for(stopping, 10)
    assert [r.text for r in bot.telegram.replies(ADMIN)] == ["WhatsApp (instance 0)\nalice: queued"]
    assert _parts(bot, "part_stopped") == order[::-1]


def test_only_the_telegram_adapter_imports_telegram() -> None:
    for path in Path(bot.__file__).parent.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert ("telegram" in imported) == (path.name == "telegram_app.py"), path.name
