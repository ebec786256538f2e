"""The two-way bridge as WhatsMate and the team meet it: real HTTP requests to the bot's
one web server, posts in the fake Telegram, replies that go back out, restarts."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN,
    STRANGER,
    TEAM,
    USER,
    BotUnderTest,
    free_port,
    start_bot_process,
)
from tests.fakes import HOLD, Sent, answer
from tests.postgres import PostgresServer

SECRET = "inbound-secret-0123456789"
ON_CALL_CHAT = -100777
CAROL = "4915112345678"  # not a contact: shown masked


def bridge_config(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "http": {"listen": "127.0.0.1", "port": port},
        "inbound": {"secret": SECRET, "chat": ON_CALL_CHAT},
        **extra,
    }


@pytest.fixture
async def bridge(make_bot: BotUnderTest) -> BotUnderTest:
    return await make_bot.start(**bridge_config(free_port()))


def url(bot: BotUnderTest, channel: str = "whatsapp", secret: str = SECRET) -> str:
    assert bot.config is not None
    return f"http://127.0.0.1:{bot.config.http.port}/inbound/{channel}/{secret}"


async def deliver(
    bot: BotUnderTest, number: str, message: str, channel: str = "whatsapp"
) -> httpx.Response:
    body = {"number": number, "message": message}
    if channel == "whatsapp":
        body = {"instance_id": "1", "gateway_number": "4400000000", **body}
    async with httpx.AsyncClient() as client:
        return await client.post(url(bot, channel), json=body)


async def wait_posts(bot: BotUnderTest, chat: int, count: int = 1) -> list[Sent]:
    return await bot.telegram.wait_replies(count, chat)


async def test_an_answer_lands_under_the_page_that_asked(bridge: BotUnderTest) -> None:
    await bridge.say("/wa alice db-1 is down", chat=TEAM, user=USER)
    page = bridge.telegram.updates[-1]["message"]["message_id"]
    response = await deliver(bridge, "4412345678", "on it, 10 min")
    assert (response.status_code, response.json()) == (200, {"status": "stored"})
    (_, post) = await wait_posts(bridge, TEAM, 2)
    assert post.text == "alice on WhatsApp:\non it, 10 min"
    assert post.reply_to == page


async def test_an_answer_a_day_later_goes_to_the_inbound_chat(bridge: BotUnderTest) -> None:
    """The page's thread (stored by the service) and the answer's arrival (the bridge)
    read the one clock: moving it past 24 h ends the thread without waiting."""
    await bridge.say("/wa alice db-1 is down", chat=TEAM, user=USER)
    bridge.clock.advance(24 * 3600 + 1)
    assert (await deliver(bridge, "4412345678", "sorry, only saw it now")).status_code == 200
    (post,) = await wait_posts(bridge, ON_CALL_CHAT)
    assert (post.text, post.reply_to) == ("alice on WhatsApp:\nsorry, only saw it now", None)
    assert len(bridge.telegram.replies(TEAM)) == 1  # only the send's own answer


async def test_an_answer_without_a_thread_goes_to_the_inbound_chat(bridge: BotUnderTest) -> None:
    assert (await deliver(bridge, CAROL, "who is this?", "telegram")).status_code == 200
    (post,) = await wait_posts(bridge, ON_CALL_CHAT)
    assert post.text == "49•••678 on Telegram:\nwho is this?"
    assert post.reply_to is None


@pytest.mark.parametrize(
    ("channel", "path", "title"),
    [
        ("whatsapp", "/v1/whatsapp/single/message/0", "WhatsApp (instance 0)"),
        ("telegram", "/v1/telegram/single/message/0", "Telegram"),
    ],
)
async def test_a_reply_to_the_post_goes_back_on_the_same_channel(
    bridge: BotUnderTest, channel: str, path: str, title: str
) -> None:
    await deliver(bridge, "4412345678", "need help?", channel)
    (post,) = await wait_posts(bridge, ON_CALL_CHAT)
    bridge.telegram.message(
        "yes, call me", user=ADMIN, chat=ON_CALL_CHAT, reply_to=post.as_message()
    )
    (_, answer_sent) = await wait_posts(bridge, ON_CALL_CHAT, 2)
    (request,) = bridge.whatsmate.sends()
    assert (request.path, request.json()) == (
        path,
        {"number": "4412345678", "message": "yes, call me"},
    )
    status = "queued" if channel == "whatsapp" else "Message sent"
    assert answer_sent.text == f"{title}\nalice: {status}"
    history = await bridge.reply_text("/history 3")
    assert f"/{'wa' if channel == 'whatsapp' else 'tg'} · → 44•••678 · ok" in history
    assert "inbound · → 44•••678 · ok" in history


async def test_a_strangers_reply_is_refused(bridge: BotUnderTest) -> None:
    await deliver(bridge, "4412345678", "need help?")
    (post,) = await wait_posts(bridge, ON_CALL_CHAT)
    bridge.telegram.message(
        "i'll answer", user=STRANGER, chat=ON_CALL_CHAT, reply_to=post.as_message()
    )
    (_, refusal) = await wait_posts(bridge, ON_CALL_CHAT, 2)
    assert refusal.text == "Sorry, you are not allowed to use this bot here."
    assert bridge.whatsmate.requests == []


async def test_a_repeated_delivery_is_posted_once(bridge: BotUnderTest) -> None:
    for _ in range(3):
        assert (await deliver(bridge, CAROL, "same words")).status_code == 200
    await deliver(bridge, CAROL, "new words")
    posts = await wait_posts(bridge, ON_CALL_CHAT, 2)
    await bridge.stop()
    texts = [p.text for p in bridge.telegram.replies(ON_CALL_CHAT)]
    assert texts in (
        ["49•••678 on WhatsApp:\nsame words", "49•••678 on WhatsApp:\nnew words"],
        ["2 messages (answer with /wa or /tg, not by reply):\n"
         "49•••678 on WhatsApp: same words\n49•••678 on WhatsApp: new words"],
    )  # fmt: skip
    assert posts


BAD = [
    ("whatsapp", "wrong-secret-0123456789", b'{"number": "4412345678", "message": "x"}', 404),
    ("sms", SECRET, b'{"number": "4412345678", "message": "x"}', 404),
    ("whatsapp", SECRET, b"not json", 400),
    ("whatsapp", SECRET, b'["a list"]', 400),
    ("whatsapp", SECRET, b'{"message": "no number"}', 400),
    ("telegram", SECRET, b'{"number": "1234", "message": "short number"}', 400),
    ("telegram", SECRET, b'{"number": "4412345678"}', 400),
    ("telegram", SECRET, b'{"number": "4412345678", "message": 7}', 400),
    (
        "whatsapp",
        SECRET,
        json.dumps({"number": "4412345678", "message": "x" * 70_000}).encode(),
        413,
    ),
]


@pytest.mark.parametrize(("channel", "secret", "body", "status"), BAD)
async def test_refused_bodies_get_their_status_and_are_never_posted(
    bridge: BotUnderTest, channel: str, secret: str, body: bytes, status: int
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(url(bridge, channel, secret), content=body)
        assert response.status_code == status
        assert (await client.get(url(bridge))).status_code in (404, 405)
    await bridge.say("/whoami")  # a round trip: anything posted would be there by now
    await bridge.stop()
    assert [s.chat_id for s in bridge.telegram.sent] == [ADMIN]
    assert SECRET not in bridge.log_text()


async def test_a_message_the_database_cannot_take_is_503_so_whatsmate_sends_it_again(
    bridge: BotUnderTest,
) -> None:
    assert bridge.runtime is not None
    await bridge.runtime.storage.driver.execute("PRAGMA query_only = ON")  # as a full disk
    response = await deliver(bridge, CAROL, "hi")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")
    assert response.json() == {"error": "storage unavailable, try again later"}
    await bridge.runtime.storage.driver.execute("PRAGMA query_only = OFF")
    assert (await deliver(bridge, CAROL, "hi")).status_code == 200  # its retry is stored
    (post,) = await wait_posts(bridge, ON_CALL_CHAT)
    assert post.text == "49•••678 on WhatsApp:\nhi"


async def test_a_message_while_postgres_is_down_is_503(
    make_bot: BotUnderTest, postgres: PostgresServer, database_url: str
) -> None:
    bot = await make_bot.start(**bridge_config(free_port()), database={"url": database_url})
    await asyncio.to_thread(postgres.shut_down)
    try:
        response = await deliver(bot, CAROL, "hi")
    finally:
        await asyncio.to_thread(postgres.start_again)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")


async def test_a_message_while_postgres_hangs_is_503_within_2_s(
    make_bot: BotUnderTest, postgres: PostgresServer, database_url: str
) -> None:
    bot = await make_bot.start(**bridge_config(free_port()), database={"url": database_url})
    postgres.signal_all(signal.SIGSTOP)  # every session open, none answering
    try:
        started = asyncio.get_running_loop().time()
        response = await deliver(bot, CAROL, "hi")
        took = asyncio.get_running_loop().time() - started
    finally:
        postgres.signal_all(signal.SIGCONT)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")
    assert took < 5  # the 2 s deadline, with room for a loaded machine; never the 30 s timeout
    assert (await deliver(bot, CAROL, "hi")).status_code == 200  # sent again: stored


async def test_a_burst_is_merged_never_dropped_under_telegrams_real_group_limit(
    make_bot: BotUnderTest,
) -> None:
    """60 messages in a second against 20 posts a minute per group: all 60 lines arrive
    in far fewer posts, promptly. This test keeps Telegram's real flood limits."""
    real_limits = {"messages_per_second": 30, "messages_per_minute_per_group": 20}
    bot = await make_bot.start(**bridge_config(free_port(), telegram=real_limits))
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(
                client.post(url(bot), json={"number": CAROL, "message": f"burst line {n:02d}"})
                for n in range(60)
            )
        )
    assert {r.status_code for r in responses} == {200}

    def lines() -> list[str]:
        return [
            line
            for sent in bot.telegram.replies(ON_CALL_CHAT)
            for line in sent.text.splitlines()
            if "burst line" in line
        ]

    await bot.telegram.wait_for(lambda: len(lines()) >= 60, timeout=20)
    assert sorted(line.rsplit(" ", 1)[1] for line in lines()) == [f"{n:02d}" for n in range(60)]
    assert len(bot.telegram.replies(ON_CALL_CHAT)) <= 25


async def test_a_merged_post_cannot_be_answered_by_reply(make_bot: BotUnderTest) -> None:
    port = free_port()
    bot = await make_bot.start(**bridge_config(port))
    bot.telegram.fail("/sendMessage$", *[answer(502, {"ok": False, "description": "down"})] * 99)
    await deliver(bot, "4412345678", "first")
    await deliver(bot, CAROL, "second")
    await bot.telegram.wait_for(lambda: bool(bot.telegram.calls("/sendMessage$")))
    bot.telegram.clear_faults()  # Telegram is back: the next try posts both, merged
    (post,) = await wait_posts(bot, ON_CALL_CHAT)
    assert post.text.startswith("2 messages")
    bot.telegram.message("ok", user=ADMIN, chat=ON_CALL_CHAT, reply_to=post.as_message())
    (_, hint) = await wait_posts(bot, ON_CALL_CHAT, 2)
    assert hint.text.startswith("That post merges several messages")
    assert bot.whatsmate.requests == []


async def test_bodies_are_kept_only_until_posted_and_never_logged(bridge: BotUnderTest) -> None:
    await deliver(bridge, CAROL, "TOPSECRET-INBOUND-BODY")
    await wait_posts(bridge, ON_CALL_CHAT)
    await bridge.say("/whoami")
    await bridge.stop()
    stored = b"".join(p.read_bytes() for p in bridge.tmp_path.glob("audit.sqlite3*"))
    assert b"TOPSECRET-INBOUND-BODY" not in stored
    assert "TOPSECRET-INBOUND-BODY" not in bridge.log_text()


async def test_metrics_count_inbound_messages(bridge: BotUnderTest) -> None:
    await deliver(bridge, CAROL, "hello")
    await deliver(bridge, CAROL, "hello")
    assert bridge.config is not None
    async with httpx.AsyncClient() as client:
        await client.post(url(bridge), content=b"garbage")
        metrics = (await client.get(f"http://127.0.0.1:{bridge.config.http.port}/metrics")).text
    for result, count in (("stored", 1), ("repeated", 1), ("rejected", 1)):
        line = f'whatsmate_bot_inbound_messages_total{{channel="whatsapp",result="{result}"}}'
        assert f"{line} {count}.0" in metrics


async def test_accepted_then_killed_is_posted_once_after_restart(make_bot: BotUnderTest) -> None:
    """Telegram fails, the message is accepted (200), the process is SIGKILLed while its
    next try is in flight; the next process posts it, exactly once, and — since the killed
    one may have got it out — says that it may be a repeat."""
    telegram, port = make_bot.telegram, free_port()
    path = make_bot.write_config(**bridge_config(port))
    telegram.fail("/sendMessage$", answer(502, {"ok": False, "description": "down"}), HOLD)
    process = await start_bot_process(path)
    await telegram.wait_polling()
    body = {"number": CAROL, "message": "survives a kill"}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"http://127.0.0.1:{port}/inbound/telegram/{SECRET}", json=body
        )
    assert response.status_code == 200
    await telegram.wait_for(lambda: len(telegram.calls("/sendMessage$")) == 2)  # held
    process.send_signal(signal.SIGKILL)
    await process.wait()
    process = await start_bot_process(path)
    try:
        await telegram.wait_replies(1, ON_CALL_CHAT)
        telegram.message("/whoami", user=ADMIN)  # a round trip: a second post would be out
        await telegram.wait_replies(1, ADMIN)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)
    assert [s.text for s in telegram.replies(ON_CALL_CHAT)] == [
        "(may be a repeat)\n49•••678 on Telegram:\nsurvives a kill"
    ]
