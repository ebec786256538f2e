"""Updates are handled concurrently, and broadcasts fan out with a bound of their own."""

from __future__ import annotations

from tests.conftest import ADMIN, TEAM, USER, BotUnderTest
from tests.fakes import HOLD

FIVE = ["4410000001", "4410000002", "4410000003", "4410000004", "4410000005"]


async def test_a_slow_send_never_delays_another_command(bot: BotUnderTest) -> None:
    bot.whatsmate.fail("/whatsapp/", HOLD)
    bot.telegram.message("/wa alice db-1 is down", user=USER, chat=TEAM)
    await bot.whatsmate.wait_for(lambda: bot.whatsmate.in_flight == 1)

    assert (
        await bot.reply_text("/whoami", user=ADMIN) == f"You are {ADMIN} (admin) in chat {ADMIN}."
    )
    assert bot.telegram.replies(TEAM) == []  # the send is still held at WhatsMate

    bot.whatsmate.release()
    (reply,) = await bot.telegram.wait_replies(1, TEAM)
    assert reply.text == "WhatsApp (instance 0)\nalice: queued"


async def test_each_broadcast_is_bounded_by_max_concurrency(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start(
        whatsmate={"max_concurrency": 2}, groups={"five": FIVE}, confirm_over=10
    )
    bot.whatsmate.fail("/whatsapp/", *[HOLD] * 10)
    bot.telegram.message("/wa five first incident", user=USER, chat=TEAM)
    bot.telegram.message("/wa five second incident", user=ADMIN, chat=TEAM)
    # Two broadcasts, two sends each: the bound is per broadcast, not shared.
    await bot.whatsmate.wait_for(lambda: bot.whatsmate.in_flight == 4)
    # A full round trip through the bot: any further send would have been issued by now.
    await bot.reply_text("/whoami", user=ADMIN)
    assert bot.whatsmate.in_flight == 4

    bot.whatsmate.release()
    replies = await bot.telegram.wait_replies(2, TEAM)
    assert (
        sorted(r.text.splitlines()[0] for r in replies)
        == ["WhatsApp (instance 0): sent to 5 of 5"] * 2
    )
    assert bot.whatsmate.max_in_flight == 4
    assert len(bot.whatsmate.sends()) == 10
