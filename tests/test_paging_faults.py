"""Paging's "once, always" with real processes: SIGKILL in the middle of a wait and with a
page held at the gateway (SQLite), and two replicas on a real PostgreSQL given the same
notification."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.alertmanager import webhook_alert, webhook_body
from tests.conftest import ADMIN, TEAM, BotUnderTest, free_port, start_bot_process
from tests.fakes import HOLD, FakeTelegram, FakeWhatsMate
from tests.test_replicas import Replicas, replicas  # noqa: F401 - the fixture

SECRET = "alerts-secret-0123456789"
ALICE, BOB = "4412345678", "447700900123"
STEPS = {"steps": [{"page": "alice"}, {"wait": "1s"}, {"page": "bob"}]}
BODY = webhook_body(webhook_alert("db-1", "CPU above 90% on db-1"))


def alerts_config(port: int) -> dict[str, Any]:
    return {
        "http": {"listen": "127.0.0.1", "port": port},
        "alerts": {
            "secret": SECRET,
            "chat": TEAM,
            "routes": [{"match": {}, "escalation": "primary"}],
            "escalations": {"primary": STEPS},
        },
    }


async def notify(port: int) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://127.0.0.1:{port}/alerts/{SECRET}", json=BODY)
        return response.status_code


def pages_to(whatsmate: FakeWhatsMate, number: str) -> int:
    return sum(1 for r in whatsmate.calls("/whatsapp/") if r.json()["number"] == number)


class Process:
    """One bot process on the SQLite file of ``make_bot``'s config."""

    def __init__(self, bot: BotUnderTest) -> None:
        self.port = free_port()
        self.path = bot.write_config(**alerts_config(self.port))
        self.telegram, self.whatsmate = bot.telegram, bot.whatsmate
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        polls = len(self.telegram.calls("/getUpdates$"))
        self.process = await start_bot_process(self.path)
        await self.telegram.wait_for(lambda: len(self.telegram.calls("/getUpdates$")) > polls, 20)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """A round trip first (anything owed is out by then), then SIGTERM."""
        assert self.process is not None
        before = len(self.telegram.replies(ADMIN))
        self.telegram.message("/whoami", user=ADMIN)
        await self.telegram.wait_replies(before + 1, ADMIN, timeout=15)
        self.process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.process.communicate(), 30)
        assert self.process.returncode == 0, err.decode()[-2000:]


@pytest.fixture
async def process(make_bot: BotUnderTest) -> AsyncIterator[Process]:
    found = Process(make_bot)
    yield found
    if found.process is not None and found.process.returncode is None:
        await found.kill()


def team_texts(telegram: FakeTelegram) -> list[str]:
    return [p.text for p in telegram.replies(TEAM)]


def team_lines(telegram: FakeTelegram) -> list[str]:
    """Every line posted in the incident chat (replies of one incident may share a post)."""
    return [line for text in team_texts(telegram) for line in text.splitlines()]


async def test_killed_in_the_middle_of_a_wait_the_next_page_fires_once(process: Process) -> None:
    telegram, whatsmate = process.telegram, process.whatsmate
    await process.start()
    assert await notify(process.port) == 200
    await telegram.wait_for(lambda: "paged alice on WhatsApp: queued" in team_lines(telegram))
    await process.kill()  # in the 1 s wait before bob
    await process.start()
    await whatsmate.wait_for(lambda: pages_to(whatsmate, BOB) == 1, 15)
    await telegram.wait_for(lambda: "paged bob on WhatsApp: queued" in team_lines(telegram), 15)
    await process.stop()
    assert (pages_to(whatsmate, ALICE), pages_to(whatsmate, BOB)) == (1, 1)
    assert [t for t in team_texts(telegram) if t.startswith("FIRING")] == [
        "FIRING #1 HighCPU\n• CPU above 90% on db-1\n"
        "Paging: primary. Acknowledge below, /ack 1, or ACK."
    ]


async def test_killed_with_a_page_held_at_the_gateway_it_is_never_sent_again(
    process: Process,
) -> None:
    telegram, whatsmate = process.telegram, process.whatsmate
    whatsmate.fail("/whatsapp/", HOLD)
    await process.start()
    assert await notify(process.port) == 200
    await whatsmate.wait_for(lambda: whatsmate.in_flight == 1)
    await process.kill()
    whatsmate.release()  # the answer no longer reaches anyone
    await process.start()
    await whatsmate.wait_for(lambda: pages_to(whatsmate, BOB) == 1, 15)
    await telegram.wait_for(lambda: "paged bob on WhatsApp: queued" in team_lines(telegram), 15)
    await process.stop()
    assert pages_to(whatsmate, ALICE) == 1  # one POST in all
    assert (
        "paged alice on WhatsApp: outcome unknown — the bot stopped while sending, so it may "
        "have been delivered. Not sent again."
    ) in team_lines(telegram)


async def test_two_replicas_given_the_same_notification_open_one_incident(
    replicas: Replicas,  # noqa: F811 - the fixture of tests/test_replicas.py
) -> None:
    alerts = {k: v for k, v in alerts_config(0).items() if k == "alerts"}
    await replicas.start("a", **alerts)
    await replicas.start("b", **alerts)
    path = f"/alerts/{SECRET}"
    for _ in range(3):  # the HA pair's twins, and a repeat: to both replicas at once
        statuses = await asyncio.gather(
            replicas.post("a", path, BODY), replicas.post("b", path, BODY)
        )
        assert statuses == [200, 200]
    whatsmate, telegram = replicas.whatsmate, replicas.telegram
    await whatsmate.wait_for(lambda: pages_to(whatsmate, BOB) >= 1, 15)
    await telegram.wait_for(lambda: "paged bob on WhatsApp: queued" in team_lines(telegram), 15)
    telegram.message("/whoami", user=ADMIN)  # a round trip on the poller
    await telegram.wait_replies(1, ADMIN)
    await replicas.stop_all()
    assert (pages_to(whatsmate, ALICE), pages_to(whatsmate, BOB)) == (1, 1)
    assert len([t for t in team_texts(telegram) if t.startswith("FIRING")]) == 1
    connection = await asyncpg.connect(replicas.url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM incidents") == 1
        assert await connection.fetchval("SELECT count(*) FROM incident_sends") == 2
    finally:
        await connection.close()
