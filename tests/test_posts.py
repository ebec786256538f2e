"""Bridge posts on a network that loses answers, a database that restarts, replicas that
compete and chats that Telegram refuses for good — as the team sees it in the chat.

Every fault is real: the fake Telegram takes a sendMessage and then drops the connection
or never answers, PostgreSQL is stopped and started again, a replica is SIGKILLed. Time
that leases depend on is moved with the injected clock, never waited for.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from bot import bridge as bridge_module
from bot import telegram_app
from bot.bridge import LEASE_S, PART_MAX, REPEAT_MARK
from bot.replies import split_text
from tests.conftest import (
    ADMIN,
    TEAM,
    USER,
    BotUnderTest,
    FakeClock,
    free_port,
    start_bot_process,
)
from tests.fakes import (
    DROP,
    HOLD,
    KICKED,
    TAKEN_THEN_DROP,
    TAKEN_THEN_HANG,
    FakeTelegram,
    FakeWhatsMate,
    Fault,
    answer,
    delay,
    migrated,
)
from tests.postgres import PostgresServer
from tests.test_bridge import CAROL, ON_CALL_CHAT, SECRET, bridge_config, deliver

ALICE = "4412345678"  # the contact "alice"
SUPERGROUP = -1001234567890
DOWN = answer(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})


@pytest.fixture(autouse=True)
def quick_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases are renewed every 0.05 s (the lease itself still runs ``LEASE_S`` by the
    injected clock); a post held by the test is never given up for a read timeout."""
    monkeypatch.setattr(bridge_module, "RENEW_EVERY_S", 0.05)
    monkeypatch.setattr(telegram_app, "POST_READ_TIMEOUT_S", 60.0)


def texts(telegram: FakeTelegram, chat: int) -> list[str]:
    return [s.text for s in telegram.replies(chat)]


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait until ``check()`` (sync or async) is true: for state the fakes do not signal
    (the bot's log, the database), looked at every 20 ms, with a safety timeout."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def round_trip(bot: BotUnderTest) -> None:
    """A command and its answer: anything the bot was about to post is out by then."""
    await bot.say("/whoami")


# -- an answer lost after Telegram took the post ------------------------------------------

POST = "49•••678 on WhatsApp:\nare you there?"


@pytest.mark.parametrize(
    ("fault", "seen"),
    [
        (TAKEN_THEN_DROP, [POST, REPEAT_MARK + POST]),  # taken, connection dropped
        (TAKEN_THEN_HANG, [POST, REPEAT_MARK + POST]),  # taken, never answered (timeout)
        (DROP, [REPEAT_MARK + POST]),  # dropped before Telegram did it: the bot can't know
        (DOWN, [POST]),  # Telegram said no: surely not posted, so no mark
    ],
    ids=["taken-then-dropped", "taken-then-timed-out", "dropped", "refused-502"],
)
async def test_a_post_whose_answer_is_lost_is_posted_again_marked_as_a_possible_repeat(
    make_bot: BotUnderTest, fault: Fault, seen: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram_app, "POST_READ_TIMEOUT_S", 0.3)  # then it may have arrived
    bot = await make_bot.start(**bridge_config(free_port()))
    bot.telegram.fail("/sendMessage$", fault)
    assert (await deliver(bot, CAROL, "are you there?")).status_code == 200
    await bot.telegram.wait_replies(len(seen), ON_CALL_CHAT)
    await round_trip(bot)
    assert texts(bot.telegram, ON_CALL_CHAT) == seen


# -- a long post that fails half-way -----------------------------------------------------

LONG = "\n".join(f"line {n:03d} " + "x" * 40 for n in range(200))  # about 10,000 characters


@pytest.mark.parametrize(
    ("fault", "marked"), [(TAKEN_THEN_DROP, True), (DOWN, False)], ids=["lost", "refused"]
)
async def test_a_long_post_failing_on_its_second_part_goes_on_from_that_part(
    make_bot: BotUnderTest, fault: Fault, marked: bool
) -> None:
    bot = await make_bot.start(**bridge_config(free_port()))
    await bot.say("/wa alice db-1 is down", chat=TEAM, user=USER)
    page = bot.telegram.updates[-1]["message"]["message_id"]
    parts = split_text(f"alice on WhatsApp:\n{LONG}", PART_MAX)
    assert len(parts) == 3
    bot.telegram.fail("/sendMessage$", delay(0), fault)  # part 1 goes, part 2 fails
    assert (await deliver(bot, ALICE, LONG)).status_code == 200
    expected = [parts[0], parts[1], REPEAT_MARK + parts[1], parts[2]]
    if not marked:
        expected.remove(REPEAT_MARK + parts[1])
    posts = (await bot.telegram.wait_replies(1 + len(expected), TEAM))[1:]
    await round_trip(bot)
    assert [p.text for p in bot.telegram.replies(TEAM)[1:]] == expected
    assert [p.reply_to for p in posts] == [page] + [None] * (len(expected) - 1)
    assert all(len(p.text) <= 4096 for p in posts)
    # The first part stands for the post: a reply to it goes back to alice.
    bot.telegram.message("thanks", user=USER, chat=TEAM, reply_to=posts[0].as_message())
    await bot.telegram.wait_replies(2 + len(expected), TEAM)
    assert [r.json() for r in bot.whatsmate.sends()][-1] == {"number": ALICE, "message": "thanks"}


# -- a database that restarts, replicas that compete ---------------------------------------


async def inbound_rows(url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(
            "SELECT id, holder, claimed_until, posted, post_id FROM inbound ORDER BY id"
        )
    finally:
        await connection.close()


def replica_config(url: str, name: str, telegram: FakeTelegram) -> dict[str, Any]:
    return {
        **bridge_config(free_port()),
        "database": {"url": url},
        "telegram": telegram.replica_urls(name),
    }


async def start_replica(bot: BotUnderTest, config: dict[str, Any]) -> BotUnderTest:
    """Start ``bot`` as a poller or a standby (which never polls): until it is up."""
    started = '"event": "started"'
    before = bot.log_text().count(started)
    await bot.start("/setMyCommands$", **config)  # the front end is up, not yet the rest
    await until(lambda: bot.log_text().count(started) > before)
    return bot


async def lease_renewed_since(url: str, since: float) -> bool:
    """The lease on the first inbound message was renewed at ``since`` or later."""
    rows = await inbound_rows(url)
    return bool(rows) and rows[0]["claimed_until"] >= since + LEASE_S


async def test_posted_is_marked_with_retries_while_the_database_restarts(
    make_bot: BotUnderTest, postgres: PostgresServer, database_url: str
) -> None:
    """Telegram took the post; PostgreSQL is down when the bot marks it posted. The bot
    keeps trying while it holds the lease, so the post is not made again."""
    bot = await make_bot.start(**replica_config(database_url, "a", make_bot.telegram))
    telegram = bot.telegram
    telegram.fail("/sendMessage$", HOLD)
    assert (await deliver(bot, CAROL, "are you there?")).status_code == 200
    await telegram.wait_for(lambda: len(telegram.calls("/sendMessage$")) == 1)  # held
    postgres.shut_down()
    try:
        telegram.release()  # posted, answered; marking it posted fails
        await until(lambda: "mark_posted_not_stored" in bot.log_text())
    finally:
        postgres.start_again()
    await until(all_posted(database_url), timeout=15)
    bot.clock.advance(LEASE_S * 2)  # a lease left behind would have run out by now
    assert (await deliver(bot, CAROL, "second")).status_code == 200
    await telegram.wait_replies(2, ON_CALL_CHAT)
    assert texts(telegram, ON_CALL_CHAT) == [POST, "49•••678 on WhatsApp:\nsecond"]


def all_posted(url: str) -> Callable[[], Any]:
    """A check for ``until``: every inbound message stored in ``url`` is marked posted."""

    async def check() -> bool:
        rows = await inbound_rows(url)
        return bool(rows) and all(row["posted"] is not None for row in rows)

    return check


@pytest.fixture
async def two_replicas(
    fakes: tuple[FakeTelegram, FakeWhatsMate], tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[BotUnderTest, BotUnderTest]]:
    """Replicas a and b in this process, on one PostgreSQL database, one clock, one log."""
    clock, a = FakeClock(), BotUnderTest(*fakes, tmp_path / "a")
    b = BotUnderTest(*fakes, tmp_path / "b", clock=clock, logs=a.logs)
    a.clock = clock
    for replica, name in ((a, "a"), (b, "b")):
        replica.tmp_path.mkdir()
        await start_replica(replica, replica_config(database_url, name, fakes[0]))
    yield a, b
    for replica in (a, b):
        await replica.stop()
        replica.assert_no_secrets_logged()


async def test_two_replicas_never_post_the_same_message(
    two_replicas: tuple[BotUnderTest, BotUnderTest],
    postgres: PostgresServer,
    database_url: str,
) -> None:
    """One replica's post is slow; PostgreSQL restarts meanwhile (its lease renewal
    fails, is logged, and tried again), and the lease's time passes twice over. The other
    replica, woken by a new message, posts only that one."""
    a, b = two_replicas
    telegram, clock = a.telegram, a.clock
    telegram.fail("/sendMessage$", HOLD)
    assert (await deliver(a, CAROL, "first")).status_code == 200
    await telegram.wait_for(lambda: len(telegram.calls("/sendMessage$")) == 1)  # held
    tag = re.match(r"/r(\w+)/", telegram.calls("/sendMessage$")[0].path)
    holder, other = (a, b) if tag and tag[1] == "a" else (b, a)
    postgres.shut_down()
    try:
        await until(lambda: "lease_renewal_failed" in holder.log_text())
    finally:
        postgres.start_again()
    for _ in range(2):  # 2 x 10 s > the 15 s lease: only renewals keep it
        clock.advance(10)
        await until(partial(lease_renewed_since, database_url, clock.now()), timeout=15)
    assert (await deliver(other, CAROL, "second")).status_code == 200
    await telegram.wait_replies(1, ON_CALL_CHAT)
    telegram.release()
    await telegram.wait_replies(2, ON_CALL_CHAT)
    await until(all_posted(database_url), timeout=15)
    clock.advance(LEASE_S * 2)
    assert (await deliver(other, CAROL, "third")).status_code == 200
    await telegram.wait_replies(3, ON_CALL_CHAT)
    assert sorted(texts(telegram, ON_CALL_CHAT)) == [
        f"49•••678 on WhatsApp:\n{word}" for word in ("first", "second", "third")
    ]


async def test_a_replica_killed_after_telegram_took_its_post_leaves_it_to_another_marked(
    make_bot: BotUnderTest, database_url: str
) -> None:
    """Replica a (a real process) posts, Telegram takes it and a is SIGKILLed before the
    answer. Once a's lease has run out, replica b posts it again — marked."""
    telegram = make_bot.telegram
    a_config = replica_config(database_url, "a", telegram)
    process = await start_bot_process(make_bot.write_config(**a_config))
    try:
        await logged(process, '"event": "started"')
        telegram.fail("/sendMessage$", TAKEN_THEN_HANG)  # a keeps PTB's 5 s read timeout
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{a_config['http']['port']}/inbound/whatsapp/{SECRET}",
                json={"number": CAROL, "message": "are you there?"},
            )
        assert response.status_code == 200
        await telegram.wait_replies(1, ON_CALL_CHAT)  # taken; the answer never comes
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    b = await start_replica(make_bot, replica_config(database_url, "b", telegram))
    (row,) = await inbound_rows(database_url)
    b.clock.advance(row["claimed_until"] + 1 - b.clock.now())  # a's lease has run out
    assert (await deliver(b, CAROL, "second")).status_code == 200
    await telegram.wait_replies(3, ON_CALL_CHAT)
    await until(all_posted(database_url))  # nothing is left to post (b is not polling yet)
    assert texts(telegram, ON_CALL_CHAT) == [
        POST,
        REPEAT_MARK + POST,
        "49•••678 on WhatsApp:\nsecond",
    ]


async def logged(process: asyncio.subprocess.Process, marker: str) -> None:
    """Until ``process`` logs a line containing ``marker``."""
    assert process.stderr is not None
    while marker.encode() not in (line := await asyncio.wait_for(process.stderr.readline(), 30)):
        assert line, f"the bot exited before it logged {marker}"


# -- chats that Telegram refuses for good -------------------------------------------------


async def page_alice(bot: BotUnderTest) -> None:
    """A /wa to alice from the team chat: her answers belong under it."""
    await bot.say("/wa alice db-1 is down", chat=TEAM, user=USER)


async def test_a_group_that_became_a_supergroup_gets_the_post_there(
    make_bot: BotUnderTest,
) -> None:
    bot = await make_bot.start(**bridge_config(free_port()))
    telegram = bot.telegram
    await page_alice(bot)
    telegram.refuse(TEAM, migrated(SUPERGROUP))
    assert (await deliver(bot, ALICE, "on it")).status_code == 200
    (post,) = await telegram.wait_replies(1, SUPERGROUP)
    assert (post.text, post.reply_to) == ("alice on WhatsApp:\non it", None)
    assert '"event": "post_chat_refused"' in bot.log_text()
    # Her next answer is not tried in the old group again (its threads are dropped).
    assert (await deliver(bot, ALICE, "fixed")).status_code == 200
    (later,) = await telegram.wait_replies(1, ON_CALL_CHAT)
    assert later.text == "alice on WhatsApp:\nfixed"
    assert telegram.attempts("sendMessage", TEAM) == 2  # the page's reply, the refused post
    # A reply to the post in the supergroup goes back to her.
    telegram.message("thanks", user=ADMIN, chat=SUPERGROUP, reply_to=post.as_message())
    await telegram.wait_replies(2, SUPERGROUP)
    assert bot.whatsmate.sends()[-1].json() == {"number": ALICE, "message": "thanks"}


async def test_a_chat_that_removed_the_bot_gets_the_post_in_the_inbound_chat(
    make_bot: BotUnderTest,
) -> None:
    bot = await make_bot.start(**bridge_config(free_port()))
    await page_alice(bot)
    bot.telegram.refuse(TEAM, KICKED)
    assert (await deliver(bot, ALICE, "on it")).status_code == 200
    (post,) = await bot.telegram.wait_replies(1, ON_CALL_CHAT)
    assert (post.text, post.reply_to) == ("alice on WhatsApp:\non it", None)
    await round_trip(bot)
    assert (
        bot.telegram.attempts("sendMessage", TEAM) == 1 + 1
    )  # the page's reply, then the refused post
    assert '"event": "post_chat_refused"' in bot.log_text()


async def test_a_post_every_chat_refuses_is_given_up_not_retried_forever(
    make_bot: BotUnderTest,
) -> None:
    bot = await make_bot.start(**bridge_config(free_port()))
    bot.telegram.refuse(ON_CALL_CHAT, KICKED)
    assert (await deliver(bot, CAROL, "anyone?")).status_code == 200
    await until(lambda: "post_refused_everywhere" in bot.log_text())
    await round_trip(bot)
    assert bot.runtime is not None
    assert await bot.runtime.storage.waiting_chats() == set()
    assert bot.telegram.attempts("sendMessage", ON_CALL_CHAT) == 1
    assert bot.telegram.replies(ON_CALL_CHAT) == []
