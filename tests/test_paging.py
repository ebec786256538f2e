"""Incident paging as Alertmanager, the on-call engineers and the team meet it: real
HTTP requests to the bot's one web server, posts in the fake Telegram, pages at the fake
WhatsMate, answers coming back at the bridge's inbound URLs. Time moves with the
injected clock."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from bot.errors import StorageUnavailable
from bot.paging import posts as paging_posts
from tests.alertmanager import webhook_alert, webhook_body
from tests.conftest import ADMIN, STRANGER, TEAM, USER, BotUnderTest, free_port
from tests.fakes import HANG, HOLD, KICKED, TAKEN_THEN_DROP, Sent, migrated

SECRET = "alerts-secret-0123456789"
INBOUND = "inbound-secret-0123456789"
ON_CALL = -100777  # where inbound messages without a thread go
ALICE, BOB, CAROL = "4412345678", "447700900123", "4915112345678"
CPU = "CPU above 90% on db-1"
WA, TG = "/v1/whatsapp/single/message/0", "/v1/telegram/single/message/0"
PRIMARY = {
    "steps": [{"page": "alice"}, {"wait": "5m"}, {"page": "bob", "via": "telegram"}],
    "repeat": 1,
}


def paging_config(port: int, **alerts: Any) -> dict[str, Any]:
    return {
        "http": {"listen": "127.0.0.1", "port": port},
        "inbound": {"secret": INBOUND, "chat": ON_CALL},
        "alerts": {
            "secret": SECRET,
            "chat": TEAM,
            "routes": [{"match": {"severity": "critical"}, "escalation": "primary"}],
            "escalations": {"primary": PRIMARY},
            **alerts,
        },
    }


@pytest.fixture
async def pager(make_bot: BotUnderTest) -> BotUnderTest:
    return await make_bot.start(**paging_config(free_port()))


def base(bot: BotUnderTest) -> str:
    assert bot.config is not None
    return f"http://127.0.0.1:{bot.config.http.port}"


async def notify(bot: BotUnderTest, body: Any, secret: str = SECRET) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{base(bot)}/alerts/{secret}", json=body)


async def reply_from(bot: BotUnderTest, number: str, message: str) -> httpx.Response:
    body = {"instance_id": "1", "gateway_number": "4400000000", "number": number}
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{base(bot)}/inbound/whatsapp/{INBOUND}", json={**body, "message": message}
        )


def firing(*instances: str) -> dict[str, Any]:
    return webhook_body(*(webhook_alert(i, f"CPU above 90% on {i}") for i in instances))


def resolved(*instances: str) -> dict[str, Any]:
    return webhook_body(
        *(webhook_alert(i, f"CPU above 90% on {i}", status="resolved") for i in instances)
    )


async def advance(bot: BotUnderTest, seconds: float) -> None:
    """Move the bot's clock once the sends in flight have ended (a jump past their lease
    would read as a sender that died); the runner looks at once."""
    assert bot.runtime is not None and bot.runtime.pager is not None
    await bot.runtime.pager.wait_sent()
    bot.clock.advance(seconds)
    bot.runtime.pager.wake()


async def sends(bot: BotUnderTest, count: int) -> list[tuple[str, Any]]:
    await bot.whatsmate.wait_for(lambda: len(bot.whatsmate.sends()) >= count)
    return [(r.path, r.json()) for r in bot.whatsmate.sends()]


async def posts(bot: BotUnderTest, count: int) -> list[Sent]:
    return await bot.telegram.wait_replies(count, TEAM)


def page(number: int, summary: str = CPU) -> str:
    return f"FIRING #{number} HighCPU: {summary}\nReply ACK to acknowledge"


async def settled(bot: BotUnderTest) -> None:
    """One more pass of the runner and every send it started: nothing else is owed."""
    assert bot.runtime is not None and bot.runtime.pager is not None
    await bot.runtime.pager.run_due()
    await bot.runtime.pager.wait_sent()


async def answer(bot: BotUnderTest, text: str, user: int = USER) -> str:
    """The bot's answer to ``text`` typed in the incident chat (other posts may come
    between: incident posts go to the same chat)."""
    message = bot.telegram.message(text, user=user, chat=TEAM)

    def answers() -> list[Sent]:
        return [p for p in bot.telegram.replies(TEAM) if p.reply_to == message["message_id"]]

    await bot.telegram.wait_for(lambda: bool(answers()))
    return answers()[0].text


OPENING = f"FIRING #1 HighCPU\n• {CPU}\nPaging: primary. Acknowledge below, /ack 1, or ACK."


async def test_the_incident_post_and_the_first_page(pager: BotUnderTest) -> None:
    response = await notify(pager, firing("db-1"))
    assert (response.status_code, response.json()) == (200, {"status": "stored"})
    assert await sends(pager, 1) == [(WA, {"number": ALICE, "message": page(1)})]
    opening, outcome = await posts(pager, 2)
    assert opening.text == OPENING
    assert opening.buttons == [("Acknowledge", "incident:1:ack")]
    assert (outcome.text, outcome.reply_to) == (
        "paged alice on WhatsApp: queued",
        opening.message_id,
    )
    history = await pager.reply_text("/history 2")
    assert "user 0 · page · → 44•••678 · ok · #1 queued" in history


async def test_ack_by_whatsapp_reply_stops_the_paging(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    opening, _ = await posts(pager, 2)
    await advance(pager, 190)
    response = await reply_from(pager, ALICE, "ACK")
    assert response.status_code == 200
    (*_, ack) = await posts(pager, 3)
    assert (ack.text, ack.reply_to) == (
        "acknowledged by alice on WhatsApp after 3m 10s",
        opening.message_id,
    )
    await advance(pager, 3600)
    await settled(pager)
    assert len(pager.whatsmate.sends()) == 1  # bob is never paged
    listed = await answer(pager, "/incidents", USER)
    assert re.fullmatch(
        r"#1 HighCPU — firing since \d{4}-\d\d-\d\d \d\d:\d\d — acknowledged by alice", listed
    )
    assert pager.telegram.replies(ON_CALL) == []  # the ack was not an ordinary message


async def test_nobody_answers_every_step_and_repeat_in_order(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    await posts(pager, 2)
    state = await answer(pager, "/incidents", USER)
    assert state.endswith("— paging, step 2 of 3, round 1 of 2")
    await advance(pager, 300)
    await sends(pager, 3)  # bob on Telegram, then the repeat begins: alice again at once
    await advance(pager, 300)
    got = await sends(pager, 4)
    assert got == [
        (WA, {"number": ALICE, "message": page(1)}),
        (TG, {"number": BOB, "message": page(1)}),
        (WA, {"number": ALICE, "message": page(1)}),
        (TG, {"number": BOB, "message": page(1)}),
    ]
    await settled(pager)
    assert not any("nobody acknowledged" in p.text for p in pager.telegram.replies(TEAM))
    await advance(pager, 300)  # bob's page, the last, had the chain's last wait to be answered
    await pager.telegram.wait_for(
        lambda: any("nobody acknowledged" in p.text for p in pager.telegram.replies(TEAM))
    )
    texts = [line for p in pager.telegram.replies(TEAM)[2:] for line in p.text.splitlines()]
    assert [t for t in texts if "nobody" in t] == [
        "#1 HighCPU: nobody acknowledged (all 6 steps of primary ran)"
    ]
    assert sorted(t for t in texts if t.startswith("paged")) == sorted(
        ["paged bob on Telegram: Message sent"] * 2 + ["paged alice on WhatsApp: queued"]
    )
    await advance(pager, 3600)
    await settled(pager)
    assert len(pager.whatsmate.sends()) == 4
    state = await answer(pager, "/incidents", USER)
    assert state.endswith("— nobody acknowledged")


async def test_the_button_refuses_a_stranger_then_takes_a_user(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    opening, _ = await posts(pager, 2)
    telegram = pager.telegram
    telegram.press(opening, "Acknowledge", user=STRANGER)
    await telegram.wait_for(lambda: len(telegram.callback_answers) == 1)
    assert "not allowed" in telegram.callback_answers[0]["text"]
    await advance(pager, 60)
    telegram.press(opening, "Acknowledge", user=USER)
    await telegram.wait_for(lambda: len(telegram.callback_answers) == 2)
    assert telegram.callback_answers[1]["text"] == (
        "#1 acknowledged by user1002 on Telegram after 1m."
    )
    (*_, ack) = await posts(pager, 3)
    assert (ack.text, ack.reply_to) == (
        "acknowledged by user1002 on Telegram after 1m",
        opening.message_id,
    )
    await advance(pager, 600)
    await settled(pager)
    assert len(pager.whatsmate.sends()) == 1
    assert len(telegram.replies(TEAM)) == 3


async def test_ack_twice_is_answered_with_who_took_it(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    await posts(pager, 2)
    first = await answer(pager, "/ack 1", USER)
    assert first == "#1 acknowledged by user1002 on Telegram after 0s."
    second = await answer(pager, "/ack #1", ADMIN)
    assert second == "#1 was already acknowledged by user1002 on Telegram after 0s."
    assert (await answer(pager, "/ack 9", USER)) == "No incident #9."
    usage = await answer(pager, "/ack one", USER)
    assert usage.startswith("Usage: /ack <n>")
    refused = await answer(pager, "/ack 1", STRANGER)
    assert "not allowed" in refused


async def test_resolved_tells_the_chat_and_everyone_paged(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    opening, _ = await posts(pager, 2)
    await advance(pager, 190)
    assert (await notify(pager, resolved("db-1"))).status_code == 200
    got = await sends(pager, 2)
    assert got[1] == (WA, {"number": ALICE, "message": f"RESOLVED #1 HighCPU: {CPU}"})
    await posts(pager, 4)
    later = pager.telegram.replies(TEAM)[2:]
    assert {(p.text, p.reply_to) for p in later} == {
        ("RESOLVED #1 HighCPU: resolved after 3m 10s", opening.message_id),
        ("RESOLVED sent to alice on WhatsApp: queued", opening.message_id),
    }
    await advance(pager, 600)
    await settled(pager)
    assert len(pager.whatsmate.sends()) == 2  # bob is never paged for a resolved incident
    assert await answer(pager, "/incidents", USER) == "No open incidents."
    assert (await notify(pager, resolved("db-1"))).status_code == 200  # changes nothing
    assert (await notify(pager, firing("db-1"))).status_code == 200  # a new incident
    (*_, reopened) = await posts(pager, 6)
    assert reopened.text.startswith("FIRING #2 HighCPU")


async def test_a_changed_firing_set_is_one_reply_and_a_repeat_nothing(
    pager: BotUnderTest,
) -> None:
    await notify(pager, firing("db-1"))
    opening, _ = await posts(pager, 2)
    for _ in range(2):  # Alertmanager's repeat, and its HA twin
        assert (await notify(pager, firing("db-1"))).status_code == 200
    await notify(pager, firing("db-1", "db-2"))
    (*_, change) = await posts(pager, 3)
    assert (change.text, change.reply_to) == (
        "#1 HighCPU changed\nstarted firing: CPU above 90% on db-2",
        opening.message_id,
    )
    await notify(pager, firing("db-2"))
    (*_, change) = await posts(pager, 4)
    assert change.text == "#1 HighCPU changed\nstopped firing: CPU above 90% on db-1"
    await settled(pager)
    assert len(pager.whatsmate.sends()) == 1  # the escalation runs on its own clock


async def test_an_ack_from_a_number_not_paged_is_an_ordinary_message(
    pager: BotUnderTest,
) -> None:
    await notify(pager, firing("db-1"))
    await posts(pager, 2)
    assert (await reply_from(pager, CAROL, "ack 1")).status_code == 200
    (post,) = await pager.telegram.wait_replies(1, ON_CALL)
    assert post.text == "49•••678 on WhatsApp:\nack 1"
    state = await answer(pager, "/incidents", USER)
    assert state.endswith("— paging, step 2 of 3, round 1 of 2")


async def test_an_answer_that_is_not_an_ack_lands_under_the_incident(
    pager: BotUnderTest,
) -> None:
    await notify(pager, firing("db-1"))
    opening, _ = await posts(pager, 2)
    await reply_from(pager, ALICE, "looking, 5 min")
    (*_, answer) = await posts(pager, 3)
    assert (answer.text, answer.reply_to) == (
        "alice on WhatsApp:\nlooking, 5 min",
        opening.message_id,
    )


ALERTS_BAD = [
    ("POST", "wrong-secret-0123456789", b"{}", 404),
    ("GET", "wrong-secret-0123456789", b"", 404),
    ("GET", SECRET, b"", 405),
    ("PUT", SECRET, b"{}", 405),
    ("POST", SECRET, b"not json", 400),
    ("POST", SECRET, b'["a list"]', 400),
    ("POST", SECRET, b'{"status": "firing", "alerts": []}', 400),
    ("POST", SECRET, b'{"groupKey": "g", "status": "pending", "alerts": []}', 400),
    ("POST", SECRET, b'{"groupKey": "g", "status": "firing"}', 400),
    ("POST", SECRET, b'{"groupKey": "g", "status": "firing", "alerts": [], "x": "\\ud800"}', 400),
    (
        "POST",
        SECRET,
        b'{"groupKey": "g", "status": "firing", "alerts": ["' + b"x" * 1_000_001 + b'"]}',
        413,
    ),
]


@pytest.mark.parametrize(("method", "secret", "body", "status"), ALERTS_BAD)
async def test_intake_refusals(
    pager: BotUnderTest, method: str, secret: str, body: bytes, status: int
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.request(method, f"{base(pager)}/alerts/{secret}", content=body)
    assert response.status_code == status
    await pager.say("/whoami")  # a round trip: anything posted would be there by now
    assert pager.telegram.replies(TEAM) == [] and pager.whatsmate.sends() == []
    assert SECRET not in pager.log_text()


async def test_a_chunked_body_over_the_limit_is_413(pager: BotUnderTest) -> None:
    async def pieces() -> Any:
        for _ in range(11):
            yield b" " * 100_000

    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base(pager)}/alerts/{SECRET}", content=pieces())
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        {"groupKey": "g", "status": "resolved", "alerts": []},
        {"groupKey": "g", "status": "firing", "alerts": [], "version": "5"},
        {"groupKey": "g", "status": "firing", "alerts": [{"labels": {"alertname": "X"}}]},
        {"groupKey": "g2", "status": "firing", "alerts": [{"labels": "odd", "annotations": 3}]},
    ],
)
async def test_a_valid_body_is_never_a_4xx(pager: BotUnderTest, body: dict[str, Any]) -> None:
    assert (await notify(pager, body)).status_code == 200


async def test_a_notification_that_cannot_be_stored_is_503(
    pager: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pager.runtime is not None and pager.runtime.pager is not None

    async def broken(*args: Any) -> None:
        raise ConnectionError("database away")

    monkeypatch.setattr(pager.runtime.pager._store, "notifications", broken)
    assert (await notify(pager, firing("db-1"))).status_code == 503


async def test_the_answer_comes_whatever_telegram_and_whatsmate_do(pager: BotUnderTest) -> None:
    pager.telegram.fail("/sendMessage$", *[HANG] * 10)
    pager.whatsmate.fail("/whatsapp/", *[HANG] * 10)
    started = time.perf_counter()
    responses = await asyncio.gather(*(notify(pager, firing(f"db-{n}")) for n in range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    assert time.perf_counter() - started < 2  # SPEC: the 200 comes within 2 s


async def test_metrics_count_notifications_pages_and_acks(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    await posts(pager, 2)
    await advance(pager, 90)
    await reply_from(pager, ALICE, "ack")
    await posts(pager, 3)
    async with httpx.AsyncClient() as client:
        await client.post(f"{base(pager)}/alerts/{SECRET}", content=b"garbage")
        text = (await client.get(f"{base(pager)}/metrics")).text
    for line in (
        'whatsmate_bot_alert_notifications_total{result="opened",status="firing"} 1.0',
        'whatsmate_bot_alert_notifications_total{result="unchanged",status="firing"} 1.0',
        'whatsmate_bot_alert_notifications_total{result="rejected",status="unknown"} 1.0',
        'whatsmate_bot_pages_total{outcome="ok"} 1.0',
        'whatsmate_bot_time_to_acknowledge_seconds_bucket{le="120.0"} 1.0',
        "whatsmate_bot_open_incidents 1.0",
    ):
        assert line in text, line


async def test_a_storm_of_100_groups_under_telegrams_real_group_limit(
    make_bot: BotUnderTest,
) -> None:
    """Every notification answered 200, every incident paged once, and all 100 visible in
    at most 30 posts: Telegram allows about 20 a minute in a group. (How fast: ``make
    bench``, ``intake``.)"""
    real_limits = {"messages_per_second": 30, "messages_per_minute_per_group": 20}
    bot = await make_bot.start(**paging_config(free_port()), telegram=real_limits)
    bodies = [
        webhook_body(webhook_alert("db-1", f"storm {n}", alertname=f"Storm{n}"), group=f"Storm{n}")
        for n in range(100)
    ]
    responses = await asyncio.gather(*(notify(bot, body) for body in bodies))
    assert [r.status_code for r in responses] == [200] * 100
    await sends(bot, 100)
    firsts = [r.json()["message"].split("\n")[0] for r in bot.whatsmate.sends()]
    found = [re.fullmatch(r"FIRING #(\d+) Storm(\d+): storm (\d+)", line) for line in firsts]
    assert all(found)
    assert sorted(int(m[1]) for m in found if m) == list(range(1, 101))  # one incident each
    assert sorted(int(m[2]) for m in found if m) == list(range(100))

    def visible() -> set[str]:
        return {
            line.split()[1]
            for p in bot.telegram.replies(TEAM)
            for line in p.text.splitlines()
            if line.startswith("FIRING #")
        }

    await bot.telegram.wait_for(lambda: len(visible()) == 100, timeout=30)
    assert len(bot.telegram.replies(TEAM)) <= 30


async def test_silence_errors_are_one_line_and_paging_goes_on(make_bot: BotUnderTest) -> None:
    """An Alertmanager that refuses (here: a server answering 401) or that is not there."""
    bot = await make_bot.start(
        **paging_config(free_port(), alertmanager_url=make_bot.whatsmate.url)
    )
    await notify(bot, firing("db-1"))
    opening, _ = await posts(bot, 2)
    assert [label for label, _ in opening.buttons] == ["Acknowledge", "Silence 1h"]
    refused = await answer(bot, "/silence 1 2h")
    assert refused == (
        "Not silenced: Alertmanager refused the silence: HTTP 401: Invalid client id or "
        "secret. Paging goes on."
    )
    bot.telegram.press(opening, "Silence 1h", user=USER)
    await bot.telegram.wait_for(lambda: len(bot.telegram.callback_answers) == 1)
    assert bot.telegram.callback_answers[0]["text"].startswith("Not silenced: Alertmanager")
    (*_, said) = await posts(bot, 4)
    assert said.reply_to == opening.message_id and said.text.startswith("user1002: Not silenced")
    await advance(bot, 300)
    await sends(bot, 2)  # bob is paged: the escalation did not stop
    usage = await answer(bot, "/silence 1 forever")
    assert usage.startswith("Usage: /silence <n> <duration>")


async def test_without_alertmanager_url_there_is_no_silence_button(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    opening, _ = await posts(pager, 2)
    assert [label for label, _ in opening.buttons] == ["Acknowledge"]
    assert await answer(pager, "/silence 1 1h") == (
        "Silencing needs alerts.alertmanager_url in the config."
    )


async def test_ack_names_its_incident_and_plain_ack_takes_the_latest(pager: BotUnderTest) -> None:
    """alice is paged for two incidents; ``ack #1`` (on Telegram) takes #1, a plain
    ``ack`` (on WhatsApp) the latest that paged her."""
    await notify(pager, firing("db-1"))
    other = webhook_body(webhook_alert("db-9", "disk full", alertname="Disk"), group="Disk")
    await notify(pager, other)
    await sends(pager, 2)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{base(pager)}/inbound/telegram/{INBOUND}", json={"number": ALICE, "message": "Ack #1"}
        )
    assert response.status_code == 200
    await pager.telegram.wait_for(
        lambda: any(
            "acknowledged by alice on Telegram" in p.text for p in pager.telegram.replies(TEAM)
        )
    )
    await reply_from(pager, ALICE, "ack")
    await pager.telegram.wait_for(
        lambda: any(
            "acknowledged by alice on WhatsApp" in p.text for p in pager.telegram.replies(TEAM)
        )
    )
    listed = (await answer(pager, "/incidents", USER)).splitlines()
    assert [line.split(" — ")[0] for line in listed] == ["#1 HighCPU", "#2 Disk"]
    assert all(line.endswith("— acknowledged by alice") for line in listed)
    await reply_from(pager, ALICE, "ack 2")  # again: told who took it, under the post
    await pager.telegram.wait_for(
        lambda: any(
            "ack — #2 was already acknowledged" in p.text for p in pager.telegram.replies(TEAM)
        )
    )


async def test_an_incident_post_whose_answer_was_lost_is_never_silently_doubled(
    pager: BotUnderTest,
) -> None:
    pager.telegram.fail("/sendMessage$", TAKEN_THEN_DROP)
    await notify(pager, firing("db-1"))
    await pager.telegram.wait_for(lambda: len(pager.telegram.replies(TEAM)) >= 2, 20)
    first, again = pager.telegram.replies(TEAM)[:2]
    assert first.text == OPENING
    assert again.text == f"(may be a repeat)\n{OPENING}"
    assert again.buttons == [("Acknowledge", "incident:1:ack")]


async def test_a_chat_that_moved_gets_the_incident(pager: BotUnderTest) -> None:
    pager.telegram.refuse(TEAM, migrated(-100999))
    await notify(pager, firing("db-1"))
    (post,) = await pager.telegram.wait_replies(1, -100999, timeout=20)
    assert post.text == OPENING


async def test_marking_a_post_done_is_retried_and_the_post_never_doubled(
    pager: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses "posted" once: it is written again until stored, so the
    claim running out later never posts the opening a second (unmarked) time."""
    assert pager.runtime is not None and pager.runtime.pager is not None
    store = pager.runtime.pager._store
    real, stored, calls = store.mark_posted, asyncio.Event(), []

    async def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise StorageUnavailable("database away for a moment")
        await real(*args, **kwargs)
        stored.set()

    monkeypatch.setattr(store, "mark_posted", flaky)
    await notify(pager, firing("db-1"))
    await pager.wait_logged("incident_post_marked_not_stored")
    await asyncio.wait_for(stored.wait(), 10)
    pager.clock.advance(61)  # past the 60 s claim
    pager.runtime.pager.poster.wake()
    await notify(pager, resolved("db-1"))  # one more post: the poster has looked again
    await pager.telegram.wait_for(
        lambda: any("resolved" in p.text for p in pager.telegram.replies(TEAM))
    )
    openings = [p.text for p in pager.telegram.replies(TEAM) if p.text.startswith("FIRING")]
    assert openings == [OPENING]


async def test_a_post_held_back_keeps_its_claim(
    pager: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front end holds a post back (Telegram's limit) past the 60 s claim: the claim
    is renewed meanwhile, so another replica's poster finds nothing to take."""
    monkeypatch.setattr(paging_posts, "RENEW_EVERY_S", 0.05)
    assert pager.runtime is not None and pager.runtime.pager is not None
    store = pager.runtime.pager._store
    renewed = asyncio.Event()
    real = store.renew_posts

    async def renew(*args: Any) -> bool:
        held = await real(*args)
        renewed.set()
        return held

    monkeypatch.setattr(store, "renew_posts", renew)
    pager.telegram.fail("/sendMessage$", HOLD)
    await notify(pager, firing("db-1"))
    await pager.telegram.wait_for(lambda: bool(pager.telegram.calls("/sendMessage$")))
    pager.clock.advance(61)
    renewed.clear()
    await asyncio.wait_for(renewed.wait(), 10)  # a renewal after the jump
    other: list[str] = []

    async def post(chat_id: int, text: str, reply_to: int | None, buttons: Any = ()) -> int:
        other.append(text)
        return 1

    await paging_posts.IncidentPoster(store, pager.clock).post_all(post)
    assert other == []
    pager.telegram.release()
    await pager.telegram.wait_replies(1, TEAM)
    assert [p.text for p in pager.telegram.replies(TEAM)] == [OPENING]


async def nothing_waits(bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until no incident post waits: looked at again after each write that ends or
    moves posts (the database has no event to wait on)."""
    assert bot.runtime is not None and bot.runtime.pager is not None
    store, wrote = bot.runtime.pager._store, asyncio.Event()
    for name in ("mark_posted", "give_up_posts", "move_posts"):
        real = getattr(store, name)

        async def written(*args: Any, real: Any = real) -> None:
            await real(*args)
            wrote.set()

        monkeypatch.setattr(store, name, written)
    bot.runtime.pager.poster.wake()
    query = "SELECT id FROM incident_posts WHERE posted IS NULL"
    async with asyncio.timeout(10):
        while True:
            wrote.clear()
            if not await bot.runtime.storage.driver.fetch(query):
                return
            await wrote.wait()


async def test_a_chat_refused_for_good_falls_back_to_inbound_chat(
    pager: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot was removed from the incident chat: the incident goes to inbound.chat,
    its replies under its post there, and later ones too."""
    pager.telegram.refuse(TEAM, KICKED)
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    opening, reply = await pager.telegram.wait_replies(2, ON_CALL)
    assert opening.text == OPENING
    assert (reply.text, reply.reply_to) == ("paged alice on WhatsApp: queued", opening.message_id)
    await pager.wait_logged("incident_chat_moved")
    await notify(pager, resolved("db-1"))
    *_, last = await pager.telegram.wait_replies(3, ON_CALL)
    assert last.reply_to == opening.message_id and "resolved" in last.text
    await nothing_waits(pager, monkeypatch)


async def test_every_chat_refused_gives_the_incident_posts_up(
    pager: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused in the incident chat and in inbound.chat: the opening and its replies are
    given up (logged), never left waiting — and never block later posts."""
    pager.telegram.refuse(TEAM, KICKED)
    pager.telegram.refuse(ON_CALL, KICKED)
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    await pager.wait_logged("incident_chat_refused")
    await settled(pager)
    await nothing_waits(pager, monkeypatch)
    assert pager.telegram.replies(TEAM) == [] and pager.telegram.replies(ON_CALL) == []


async def test_a_repeated_ack_delivery_is_taken_once(pager: BotUnderTest) -> None:
    """WhatsMate delivers the same `ack` again (its retry): a repeat, answered with
    nothing — not a second 'already acknowledged' under the post."""
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    await posts(pager, 2)
    assert (await reply_from(pager, ALICE, "ack")).status_code == 200
    await posts(pager, 3)
    assert (await reply_from(pager, ALICE, "ack")).status_code == 200
    await pager.wait_logged("inbound_repeated")
    await notify(pager, resolved("db-1"))  # one more post: anything owed went before it
    *before, last = await posts(pager, 4)
    assert "resolved" in last.text
    assert [p.text for p in before][1:] == [
        "paged alice on WhatsApp: queued",
        "acknowledged by alice on WhatsApp after 0s",
    ]


async def test_an_ack_is_audited_as_inbound(pager: BotUnderTest) -> None:
    await notify(pager, firing("db-1"))
    await sends(pager, 1)
    await posts(pager, 2)
    await reply_from(pager, ALICE, "ack")
    await posts(pager, 3)
    history = await answer(pager, "/history 10", ADMIN)
    assert "inbound" in history and ALICE not in history, history


async def test_an_edited_escalation_never_stops_every_other_incident(
    make_bot: BotUnderTest,
) -> None:
    """#1's stored cursor (step 2, a page) rests on a wait once the config is edited: it
    goes on to the next page, and another incident is paged all the same."""
    bot = await make_bot.start(**paging_config(free_port()))
    await notify(bot, firing("db-1"))
    await sends(bot, 1)
    await posts(bot, 2)
    await bot.stop()
    edited = paging_config(free_port())
    edited["alerts"]["escalations"] = {
        "primary": {"steps": [{"page": "alice"}, {"wait": "1m"}, {"wait": "5m"}, {"page": "bob"}]}
    }
    await bot.start(**edited)
    await advance(bot, 300)
    other = webhook_body(webhook_alert("db-9", "disk full", alertname="Disk"), group="Disk")
    assert (await notify(bot, other)).status_code == 200
    got = await sends(bot, 3)
    assert sorted((body["number"], body["message"].split(":")[0]) for _, body in got) == [
        (ALICE, "FIRING #1 HighCPU"),
        (ALICE, "FIRING #2 Disk"),
        (BOB, "FIRING #1 HighCPU"),
    ]
    assert "paging_pass_failed" not in bot.log_text()


async def test_a_step_that_fails_never_holds_up_another_incidents(
    pager: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.paging import incidents as rules

    real = rules.run_step

    def failing_for_1(incident: rules.Incident, *args: Any, **kwargs: Any) -> rules.Decision:
        if incident.number == 1:
            raise RuntimeError("a bug in one incident's step")
        return real(incident, *args, **kwargs)

    monkeypatch.setattr(rules, "run_step", failing_for_1)
    await notify(pager, firing("db-1"))
    other = webhook_body(webhook_alert("db-9", "disk full", alertname="Disk"), group="Disk")
    await notify(pager, other)
    ((_, body),) = await sends(pager, 1)
    assert body["message"].startswith("FIRING #2 Disk")
    assert "paging_step_failed" in pager.log_text()
    assert "paging_pass_failed" not in pager.log_text()


async def test_sigterm_with_a_page_in_flight_finishes_it(make_bot: BotUnderTest) -> None:
    """Stopping takes no new step and lets the page at the gateway end: its outcome is
    stored (and posted at the next start), not called ``outcome unknown``."""
    bot = await make_bot.start(**paging_config(free_port()))
    bot.whatsmate.fail("/whatsapp/", HOLD)
    await notify(bot, firing("db-1"))
    await bot.whatsmate.wait_for(lambda: bot.whatsmate.in_flight == 1)
    stopping = asyncio.create_task(bot.stop())
    await bot.wait_logged("paging_finishing_sends")
    bot.whatsmate.release()
    await stopping
    await bot.start(**paging_config(free_port()))
    await bot.telegram.wait_for(
        lambda: any(p.text.startswith("paged alice") for p in bot.telegram.replies(TEAM))
    )
    lines = [p.text for p in bot.telegram.replies(TEAM) if p.text.startswith("paged alice")]
    assert lines == ["paged alice on WhatsApp: queued"]
    assert len(bot.whatsmate.sends()) == 1


async def test_v3_resolved_message_is_cut_to_the_limit_like_the_page(
    make_bot: BotUnderTest,
) -> None:
    config = paging_config(free_port())
    config["whatsmate"] = {"api_version": 3, "whatsapp_instance": 7, "telegram_instance": 7}
    config["alerts"]["escalations"] = {"primary": {"steps": [{"page": "alice"}]}}
    bot = await make_bot.start(**config)
    long = "x" * 1200
    await notify(bot, webhook_body(webhook_alert("db-1", long)))
    await sends(bot, 1)
    await notify(bot, webhook_body(webhook_alert("db-1", long, status="resolved")))
    (_, paged), (_, told) = await sends(bot, 2)
    assert len(paged["message"]) == len(told["message"]) == 900
    assert told["message"].startswith("RESOLVED #1 HighCPU: xxx")
    assert told["message"].endswith("x…")


async def test_a_slow_page_in_a_live_process_is_not_called_interrupted(
    pager: BotUnderTest,
) -> None:
    """SQLite: one process owns the file, so its own send still at the gateway when the
    lease (by its clock) runs out is not "the bot stopped while sending"."""
    pager.whatsmate.fail("/whatsapp/", HOLD)
    await notify(pager, firing("db-1"))
    await pager.whatsmate.wait_for(lambda: pager.whatsmate.in_flight == 1)
    pager.clock.advance(200)  # past the send lease, timeout_s * attempts + 30
    assert pager.runtime is not None and pager.runtime.pager is not None
    pager.runtime.pager._last_scan = -1e9  # a scan for what dead processes left, now
    await pager.runtime.pager.run_due()
    pager.whatsmate.release()
    await pager.runtime.pager.wait_sent()

    def said() -> list[str]:
        return [
            line
            for p in pager.telegram.replies(TEAM)
            for line in p.text.splitlines()
            if line.startswith("paged alice")
        ]

    await pager.telegram.wait_for(lambda: any(line.endswith("queued") for line in said()))
    assert said() == ["paged alice on WhatsApp: queued"]
    history = await pager.reply_text("/history 5")
    assert "unknown" not in history
