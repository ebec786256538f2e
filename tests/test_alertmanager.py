"""With a real Prometheus Alertmanager (Debian's 0.25, started by the suite on loopback):
its webhook reaches the bot and opens an incident, a resolve through ``endsAt`` resolves
it, an HA pair of unclustered Alertmanagers makes one incident, and the Silence button
leaves a silence that Alertmanager's API shows with the incident's labels."""

from __future__ import annotations

import asyncio
from base64 import b64encode
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from bot.config import url_passwords
from bot.paging.alertmanager import Alertmanager as AlertmanagerClient
from bot.transport import AiohttpTransport
from tests.alertmanager import Alertmanager
from tests.conftest import TEAM, USER, BotUnderTest, free_port
from tests.fakes import HttpRequest, HttpResponse, HttpServer, Sent
from tests.test_paging import ALICE, SECRET, WA, page, paging_config

ALERT = {
    "labels": {"alertname": "HighCPU", "instance": "db-1", "severity": "critical"},
    "annotations": {"summary": "CPU above 90% on db-1"},
}


class Managers:
    """Alertmanagers whose webhook receiver is the bot's /alerts/<secret>."""

    def __init__(self) -> None:
        self.running: list[Alertmanager] = []

    async def start(self, port: int, count: int = 1) -> list[Alertmanager]:
        url = f"http://127.0.0.1:{port}/alerts/{SECRET}"
        started = await asyncio.gather(*(Alertmanager.start(url) for _ in range(count)))
        self.running += started
        return list(started)


@pytest.fixture
async def managers() -> AsyncIterator[Managers]:
    found = Managers()
    yield found
    await asyncio.gather(*(m.stop() for m in found.running))


def count_notifications(bot: BotUnderTest) -> Callable[[int], Awaitable[None]]:
    """Wrap the bot's intake; the returned coroutine waits until ``n`` were taken."""
    assert bot.runtime is not None and bot.runtime.pager is not None
    pager = bot.runtime.pager
    accept, taken, changed = pager.accept, [0], asyncio.Condition()

    async def counting(raw: bytes) -> None:
        await accept(raw)
        async with changed:
            taken[0] += 1
            changed.notify_all()

    pager.accept = counting  # type: ignore[method-assign]

    async def wait(count: int) -> None:
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: taken[0] >= count), 20)

    return wait


async def started_bot(make_bot: BotUnderTest, **alerts: Any) -> tuple[BotUnderTest, int]:
    port = free_port()
    return await make_bot.start(**paging_config(port, **alerts)), port


def lines(bot: BotUnderTest) -> list[str]:
    return [line for p in bot.telegram.replies(TEAM) for line in p.text.splitlines()]


async def test_the_webhook_opens_an_incident_and_endsat_resolves_it(
    make_bot: BotUnderTest, managers: Managers
) -> None:
    bot, port = await started_bot(make_bot)
    (manager,) = await managers.start(port)
    await manager.push(ALERT)
    whatsmate, telegram = bot.whatsmate, bot.telegram
    await whatsmate.wait_for(lambda: len(whatsmate.sends()) == 1, 20)
    (request,) = whatsmate.sends()
    assert (request.path, request.json()) == (WA, {"number": ALICE, "message": page(1)})
    opening = (await telegram.wait_replies(1, TEAM, timeout=20))[0]
    assert opening.text.startswith("FIRING #1 HighCPU\n• CPU above 90% on db-1\n")
    await manager.resolve(ALERT)
    await telegram.wait_for(
        lambda: any(x.startswith("RESOLVED #1 HighCPU: resolved after") for x in lines(bot)), 20
    )
    assert await bot.reply_text("/incidents") == "No open incidents."


async def test_an_ha_pair_makes_one_incident(make_bot: BotUnderTest, managers: Managers) -> None:
    bot, port = await started_bot(make_bot)
    taken = count_notifications(bot)
    first, second = await managers.start(port, 2)  # not clustered: both notify
    await asyncio.gather(first.push(ALERT), second.push(ALERT))
    await taken(2)
    await bot.telegram.wait_for(lambda: "paged alice on WhatsApp: queued" in lines(bot), 20)
    assert bot.runtime is not None and bot.runtime.pager is not None
    await bot.runtime.pager.run_due()
    await bot.runtime.pager.wait_sent()
    assert len(bot.whatsmate.sends()) == 1
    assert [x for x in lines(bot) if x.startswith("FIRING")] == ["FIRING #1 HighCPU"]


async def test_the_silence_button_leaves_a_silence_with_the_incidents_labels(
    make_bot: BotUnderTest, managers: Managers
) -> None:
    port = free_port()
    (manager,) = await managers.start(port)
    bot = await make_bot.start(**paging_config(port, alertmanager_url=manager.url))
    await manager.push(ALERT)
    telegram = bot.telegram
    opening: Sent = (await telegram.wait_replies(1, TEAM, timeout=20))[0]
    assert opening.buttons == [
        ("Acknowledge", "incident:1:ack"),
        ("Silence 1h", "incident:1:silence"),
    ]
    telegram.press(opening, "Silence 1h", user=USER)
    await telegram.wait_for(lambda: bool(telegram.callback_answers), 20)
    toast = telegram.callback_answers[0]["text"]
    assert toast.startswith("Silenced #1 until ") and "(silence " in toast
    (silence,) = await manager.silences()
    assert toast.endswith(f"(silence {silence['id']}).")
    assert sorted(
        (m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]
    ) == [
        ("alertname", "HighCPU", True, False),
        ("instance", "db-1", True, False),
        ("severity", "critical", True, False),
    ]
    assert silence["createdBy"] == "user1002"
    assert silence["comment"] == "whatsmate-bot incident #1 HighCPU"
    assert silence["status"]["state"] == "active"
    await telegram.wait_for(
        lambda: any(x.startswith("silenced by user1002 until ") for x in lines(bot)), 20
    )
    state = await bot.reply_text("/incidents")
    assert "— silenced until " in state


class _AlertmanagerBehindAuth(HttpServer):
    """Answers a silence like Alertmanager's API v2, and records how it was asked."""

    async def handle(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.of_json({"silenceID": "5f0c1a2b"})


async def test_credentials_in_alertmanager_url_are_basic_auth_never_in_the_url() -> None:
    server = _AlertmanagerBehindAuth()
    await server.start()
    try:
        url = f"http://ops:p%40ss-w0rd@127.0.0.1:{server.port}/"
        async with httpx.AsyncClient(transport=AiohttpTransport(httpx.Limits())) as client:
            silence = await AlertmanagerClient(client, url).create_silence(
                {"alertname": "HighCPU"}, starts=0, ends=3600, created_by="u", comment="c"
            )
    finally:
        await server.stop()
    assert silence == "5f0c1a2b"
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/api/v2/silences")
    assert request.headers["authorization"] == "Basic " + b64encode(b"ops:p@ss-w0rd").decode()
    assert "p@ss-w0rd" in url_passwords(url)  # Config.secrets: redacted from every log
