"""Faults on both sides: no lost or doubled send, one clear reply, nothing secret anywhere."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from tenacity import RetryCallState

from bot.commands import is_for_other_bot
from bot.errors import StorageUnavailable
from bot.replies import DATABASE_AWAY
from bot.vocabulary import Outcome
from tests.conftest import ADMIN, TEAM, USER, BotUnderTest, free_port
from tests.fakes import BOT_USERNAME, DROP, HANG, TAKEN_THEN_DROP, FakeWhatsMate, answer, delay

SLOW = {"whatsmate": {"timeout_s": 0.3}}


async def audit_outcomes(bot: BotUnderTest) -> list[tuple[str, Outcome, str]]:
    assert bot.runtime is not None
    entries = await bot.runtime.audit.recent(50)
    return [(e.command, e.outcome, e.detail) for e in reversed(entries)]


@pytest.mark.parametrize(
    ("fault", "detail"),
    [
        (HANG, "no answer in time (ReadTimeout)"),
        (DROP, "connection dropped (RemoteProtocolError)"),
        (answer(500, {"message": "Internal error"}), "HTTP 500: Internal error"),
        (
            answer(502, "<html><h1>502 Bad Gateway</h1></html>", "text/html"),
            "HTTP 502: 502 Bad Gateway",
        ),
    ],
)
async def test_send_that_may_have_arrived_is_never_retried(
    make_bot: BotUnderTest, fault: object, detail: str
) -> None:
    bot = await make_bot.start(**SLOW)
    bot.whatsmate.fail("/whatsapp/", fault)  # type: ignore[arg-type]
    text = await bot.reply_text("/wa alice TOPSECRET-BODY", user=USER, chat=TEAM)
    assert text == (
        f"WhatsApp (instance 0)\nalice: outcome unknown — {detail}; it may have been delivered. "
        "Not retried: check with the recipient before sending again."
    )
    outcomes = await audit_outcomes(bot)
    await bot.stop()
    assert len(bot.whatsmate.calls("/whatsapp/")) == 1  # exactly one, ever
    assert outcomes == [("/wa", Outcome.UNKNOWN, text.split("alice: ", 1)[1])]
    assert "TOPSECRET-BODY" not in bot.log_text()


async def test_unknown_outcome_of_one_recipient_leaves_the_others_sent(bot: BotUnderTest) -> None:
    bot.whatsmate.fail("/whatsapp/", answer(200, {"status": "queued"}), DROP)
    text = await bot.reply_text("/wa oncall page")
    lines = text.splitlines()
    assert lines[0] == "WhatsApp (instance 0): sent to 1 of 2"
    assert sorted(line.split(":")[1].strip().split(" —")[0] for line in lines[1:]) == [
        "outcome unknown",
        "queued",
    ]
    assert len(bot.whatsmate.calls("/whatsapp/")) == 2


async def test_send_that_surely_did_not_leave_is_retried(make_bot: BotUnderTest) -> None:
    """Connection refused on the first attempt; WhatsMate comes up before the retry."""
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    backed_off = asyncio.Event()

    def open_the_port(state: RetryCallState) -> float:
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        backed_off.set()
        return 0.0

    make_bot.backoff = open_the_port  # type: ignore[assignment]
    bot = await make_bot.start(whatsmate={"base_url": f"http://127.0.0.1:{port}"})
    bot.telegram.message("/wa alice hi", user=ADMIN)
    await asyncio.wait_for(backed_off.wait(), 10)
    late = FakeWhatsMate()
    server = await asyncio.start_server(late._connection, sock=listener)
    try:
        (reply,) = await bot.telegram.wait_replies(1, ADMIN)
    finally:
        server.close()
        await late.stop()
    assert reply.text == "WhatsApp (instance 0)\nalice: queued"
    assert len(late.requests) == 1


async def test_gateway_down_at_start_and_retries_exhausted(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start(whatsmate={"base_url": f"http://127.0.0.1:{free_port()}"})
    text = await bot.reply_text("/wa alice hi")
    assert text == (
        "WhatsApp (instance 0)\nalice: not sent — could not reach WhatsMate "
        "(connection failed (ConnectError)); nothing was delivered."
    )
    status = await bot.reply_text("/status")
    assert status.startswith("WhatsApp gateway: unreachable — not sent — could not reach")
    assert (await audit_outcomes(bot))[0][1] is Outcome.ERROR


async def test_reads_are_retried_on_5xx_and_timeouts(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start(**SLOW)
    bot.whatsmate.fail("/v1/gateway/status", answer(503, "busy", "text/plain"), HANG)
    bot.whatsmate.fail("/v1/telegram/status", DROP)
    text = await bot.reply_text("/status")
    assert text == "WhatsApp gateway: up\nTelegram gateway (instance 0): up"
    assert len(bot.whatsmate.calls("/v1/gateway/status")) == 3
    assert len(bot.whatsmate.calls("/v1/telegram/status")) == 2


async def test_reads_give_up_after_their_retries(bot: BotUnderTest) -> None:
    bot.whatsmate.fail("/v1/translation/supported-codes", *[answer(500, {"error": "db"})] * 3)
    assert await bot.reply_text("/langs") == "WhatsMate failed — HTTP 500: db"
    assert len(bot.whatsmate.calls("supported-codes")) == 3


ERROR_REPLIES = [
    (
        answer(401, {"message": "Invalid credentials s3cr3t-wm"}),
        "failed — credentials refused (HTTP 401: Invalid credentials [redacted])",
    ),
    (answer(403, {"error": "Forbidden"}), "failed — credentials refused (HTTP 403: Forbidden)"),
    (
        answer(404, "<html><body><h1>Not Found</h1><p>nothing here</p></body></html>", "text/html"),
        "failed — HTTP 404: Not Found nothing here",
    ),
    (answer(400, {"message": "Invalid number"}), "failed — HTTP 400: Invalid number"),
    (
        answer(429, {"message": "Too many requests"}),
        "failed — plan or quota limit (HTTP 429: Too many requests)",
    ),
    (
        answer(444, {"message": "Quota exceeded"}),
        "failed — plan or quota limit (HTTP 444: Quota exceeded)",
    ),
    (
        answer(469, "premium plan required", "text/plain"),
        "failed — plan or quota limit (HTTP 469: premium plan required)",
    ),
    (
        answer(200, "<html>maintenance</html>", "text/html"),
        "failed — unexpected answer (HTTP 200, expected JSON but got text/html: maintenance)",
    ),
    (
        answer(200, b""),
        "failed — unexpected answer (HTTP 200, expected JSON but got application/json: OK)",
    ),
    (
        answer(200, {"result": "ok"}),
        "failed — unexpected answer (expected a 'status' text in the answer, got "
        '{"result": "ok"})',
    ),
    (
        answer(200, {"success": False, "status": "Recipient not on Telegram"}),
        "failed — WhatsMate said: Recipient not on Telegram",
    ),
]


@pytest.mark.parametrize(("fault", "expected"), ERROR_REPLIES)
async def test_gateway_answers_become_one_clear_reply(
    bot: BotUnderTest, fault: object, expected: str
) -> None:
    bot.whatsmate.fail("/telegram/single/message", fault)  # type: ignore[arg-type]
    text = await bot.reply_text("/tg alice hi")
    assert text == f"Telegram\nalice: {expected}"
    assert len(bot.whatsmate.calls("/telegram/single/message")) == 1
    assert "s3cr3t-wm" not in text and "Traceback" not in text
    assert (await audit_outcomes(bot))[0][1] is Outcome.ERROR


async def test_telegram_429_is_honoured_without_losing_the_reply(bot: BotUnderTest) -> None:
    too_many = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    bot.telegram.fail("/sendMessage$", answer(429, too_many))
    assert await bot.reply_text("/whoami") == f"You are {ADMIN} (admin) in chat {ADMIN}."
    assert len(bot.telegram.calls("/sendMessage$")) == 2


@pytest.mark.parametrize(
    "fault",
    [
        answer(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}),
        DROP,
        answer(
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests",
                "parameters": {"retry_after": 1},
            },
        ),
    ],
)
async def test_polling_survives_get_updates_faults(bot: BotUnderTest, fault: object) -> None:
    bot.telegram.fail("/getUpdates$", fault)  # type: ignore[arg-type]
    assert await bot.reply_text("/whoami", user=USER, chat=TEAM) == (
        f"You are {USER} (user) in chat {TEAM}."
    )
    assert await bot.reply_text("/whoami", user=USER, chat=TEAM)
    await bot.stop()
    assert len(bot.telegram.replies(TEAM)) == 2  # nothing lost, nothing repeated


async def test_long_replies_are_split_on_lines_not_cut(bot: BotUnderTest) -> None:
    many = {f"x{i:03d}": f"Language number {i} " + "·" * 20 for i in range(400)}
    bot.whatsmate.codes = many
    replies = await bot.say("/langs", replies=5)
    assert all(len(r.text) <= 4096 for r in replies)
    lines = "\n".join(r.text for r in replies).splitlines()
    assert lines[0] == "400 language codes:" and len(lines) == 401


async def test_a_reply_telegram_took_but_whose_answer_was_lost_is_the_only_answer(
    bot: BotUnderTest,
) -> None:
    bot.telegram.fail("/sendMessage$", TAKEN_THEN_DROP)
    (reply,) = await bot.say("/wa alice hello")
    assert reply.text == "WhatsApp (instance 0)\nalice: queued"
    (second,) = await bot.say("/whoami")
    assert second.text.startswith("You are 1001")
    # The lost answer is known to be in doubt, and no "Something went wrong" followed it.
    await bot.wait_logged("answer_outcome_unknown")
    assert len(bot.whatsmate.sends()) == 1 and len(bot.telegram.replies(ADMIN)) == 2


async def test_a_sent_page_whose_thread_cannot_be_stored_still_says_queued_and_is_audited(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert bot.runtime is not None

    async def database_away(*args: object) -> None:
        raise StorageUnavailable("the database did not answer (ConnectionRefusedError)")

    monkeypatch.setattr(bot.runtime.storage, "record_threads", database_away)
    assert await bot.reply_text("/wa alice hello") == "WhatsApp (instance 0)\nalice: queued"
    assert len(bot.whatsmate.sends()) == 1
    assert (await audit_outcomes(bot))[-1][:2] == ("/wa", Outcome.OK)


async def test_the_database_away_before_a_send_is_one_line_and_nothing_sent(
    bot: BotUnderTest,
) -> None:
    assert bot.runtime is not None
    await bot.runtime.storage.driver.execute("PRAGMA query_only = ON")  # the prompt: not kept
    to = ",".join(f"44111122{n:02}" for n in range(6))  # over confirm_over: asks first
    assert await bot.reply_text(f"/wa {to} hi") == DATABASE_AWAY
    assert bot.whatsmate.sends() == []
    await bot.runtime.storage.driver.execute("PRAGMA query_only = OFF")
    assert (await audit_outcomes(bot))[-1] == ("/wa", Outcome.ERROR, "database unreachable")


async def test_unexpected_error_gets_one_reply_with_an_error_id(bot: BotUnderTest) -> None:
    bot.telegram.fail(
        "/sendMessage$",
        answer(400, {"ok": False, "error_code": 400, "description": "Bad Request: odd"}),
    )
    (reply,) = await bot.say("/whoami")
    assert reply.text.startswith("Something went wrong (error id ")
    error_id = reply.text.split("error id ")[1].split(")")[0]
    assert f'"error_id": "{error_id}"' in bot.log_text()


ODD_TEXTS = [
    "/",
    "/ ",
    "/\u200bwa alice hi",
    "/wa\u200b alice hi",
    "/wa alice\u200b hi",
    "/   ",
    "/wa \u202ealice hi",
    "/wa ١٢٣٤٥٦٧ hi",
    "/wa 44🙂12345678 hi",
    "/wa//tg alice",
    "//wa",
    "/wa alice " + "x" * 10_000,
    "/" + "w" * 5000,
    "/translate en fr " + "🙂" * 3000,
    "/loc alice 1e400 0",
    "/loc alice -0 -0",
    "/history 99999999999999999999",
    "/wa ,,, hi",
    "/wa@ alice hi",
    "/help@",
    "/HELP",
    "/status\n\n\n",
    "/wa\nalice\nhi",
    "/whoami\t",
    "/photo alice",
    "/doc",
    "/langs \u0000",
    "/schedule add 1s /status",
    "/schedule remove",
    "/schedule add 10s /schedule list",
    "hello there",
    "\u200b",
    "/wa alice \U0001f4a9",
]


async def test_fuzz_every_odd_message_gets_exactly_one_reply(bot: BotUnderTest) -> None:
    rng = random.Random(20261125)
    alphabet = "/ wa,+-.0123456789alice\n\u200b\u202e🙂é@"
    texts = [*ODD_TEXTS]
    texts += [
        "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for _ in range(300 - len(texts))
    ]
    for text in texts:  # another bot's commands get no answer from us, and are not counted
        if is_for_other_bot(text, BOT_USERNAME):
            bot.telegram.message(text, user=ADMIN)
    sent_ids = [
        bot.telegram.message(text, user=ADMIN)["message_id"]
        for text in texts
        if not is_for_other_bot(text, BOT_USERNAME)
    ]
    await bot.telegram.wait_for(
        lambda: (
            len(
                {
                    r.params.get("reply_parameters", {}).get("message_id")
                    for r in bot.telegram.replies(ADMIN)
                }
                - {None}
            )
            >= len(sent_ids)
        ),
        timeout=60,
    )
    assert await bot.reply_text("/whoami") == f"You are {ADMIN} (admin) in chat {ADMIN}."
    await bot.stop()
    answered = [
        r.params["reply_parameters"]["message_id"]
        for r in bot.telegram.replies(ADMIN)
        if "reply_parameters" in r.params
    ]
    assert sorted(answered[:-1]) == sorted(sent_ids)  # exactly one answer each
    assert not any("Something went wrong" in r.text for r in bot.telegram.replies(ADMIN))


async def test_in_flight_commands_finish_on_stop(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start()
    bot.whatsmate.fail("/whatsapp/", delay(0.3), delay(0.3), delay(0.3))
    for _ in range(3):
        bot.telegram.message("/wa alice hi", user=ADMIN)
    await bot.whatsmate.wait_for(lambda: len(bot.whatsmate.calls("/whatsapp/")) == 3)
    await bot.stop()
    assert [r.text for r in bot.telegram.replies(ADMIN)] == [
        "WhatsApp (instance 0)\nalice: queued"
    ] * 3


async def test_an_answered_update_whose_done_mark_failed_is_stored_once_the_database_is_back(
    make_bot: BotUnderTest, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until "done" is stored the next poller would run the update again (a second
    answer): it is tried again in the background, not only with the next update."""
    bot = await make_bot.start(database={"url": database_url})
    assert bot.runtime is not None
    storage = bot.runtime.storage
    real, failures = storage.finish_update, [StorageUnavailable("away")] * 2

    async def finish_update(update_id: int) -> None:
        if failures:
            raise failures.pop()
        await real(update_id)

    monkeypatch.setattr(storage, "finish_update", finish_update)
    assert (await bot.reply_text("/whoami")).startswith("You are")
    await bot.wait_logged("journal_done_stored")
    assert await storage.unfinished_updates("", bot.clock.now()) == []
