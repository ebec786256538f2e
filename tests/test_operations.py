"""Running it for a team: schedules, confirmation, audit and history, dry run, metrics, webhook."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from bot.schedules import Schedule, Timers, first_run_in, should_post
from bot.storage import LastRun, Storage, StoredPrompt
from bot.storage.sqlite import SqliteDriver
from bot.vocabulary import Notify
from tests.conftest import ADMIN, TEAM, USER, BotUnderTest, free_port
from tests.fakes import BOT_ID

BROADCAST = "/wa alice,bob,4411112222,4411113333,4411114444,4411115555 deploy starts at 14:00"
UP = "WhatsApp gateway: up\nTelegram gateway (instance 0): up"
WA_DOWN = "WhatsApp gateway: down\nTelegram gateway (instance 0): up"


# -- schedules ----------------------------------------------------------------------


async def test_schedule_posts_only_changes(make_bot: BotUnderTest) -> None:
    ping = {"name": "ping", "every": "1s", "chat": TEAM, "command": "/status", "notify": "change"}
    bot = await make_bot.start(schedules=[ping])
    wm = bot.whatsmate

    def runs() -> int:
        return len(wm.calls("/v1/gateway/status"))

    await bot.telegram.wait_replies(1, TEAM)
    await wm.wait_for(lambda: runs() >= 3)  # two more runs, nothing new to say
    wm.whatsapp_status = "down"
    await bot.telegram.wait_replies(2, TEAM)
    seen = runs()
    await wm.wait_for(lambda: runs() >= seen + 2)
    wm.whatsapp_status = "up"
    await bot.telegram.wait_replies(3, TEAM)
    await bot.stop()
    assert [r.text for r in bot.telegram.replies(TEAM)] == [UP, WA_DOWN, UP]
    assert runs() >= 6


async def test_schedule_always_posts_every_run(make_bot: BotUnderTest) -> None:
    ping = {"name": "p", "every": "1s", "chat": TEAM, "command": "/whoami", "notify": "always"}
    bot = await make_bot.start(schedules=[ping])
    replies = await bot.telegram.wait_replies(2, TEAM)
    assert replies[0].text == replies[1].text == f"You are {ADMIN} (admin) in chat {TEAM}."


async def test_missed_schedule_runs_once_at_start_and_not_again(make_bot: BotUnderTest) -> None:
    hourly = {"name": "hourly", "every": "1h", "chat": TEAM, "command": "/whoami"}
    bot = await make_bot.start(schedules=[hourly])
    await bot.telegram.wait_replies(1, TEAM)  # never ran: runs at start
    await bot.stop()
    await bot.start(schedules=[hourly])  # ran a moment ago: waits for its next slot
    await bot.say("/whoami", chat=TEAM)
    await bot.stop()
    assert len(bot.telegram.replies(TEAM)) == 2


def test_first_run_after_restart() -> None:
    every = Schedule("s", 1, "/status", every_s=900)
    assert first_run_in(every, None, now=10_000) == 0
    assert first_run_in(every, LastRun(9_500, "x"), now=10_000) == 400
    assert first_run_in(every, LastRun(1_000, "x"), now=10_000) == 0  # many missed: once now
    cron = Schedule("c", 1, "/status", cron="0 * * * *")
    now = time.time()
    assert first_run_in(cron, LastRun(now - 7200, "x"), now) == 0
    assert 0 < first_run_in(cron, LastRun(now, "x"), now) <= 3600


def test_notify_change() -> None:
    change = Schedule("s", 1, "/status", every_s=60, notify=Notify.CHANGE)
    assert should_post(change, None, "up")
    assert not should_post(change, "up", "up")
    assert should_post(change, "up", "down")
    assert should_post(Schedule("a", 1, "/status", every_s=60), "up", "up")


async def test_schedules_from_chat_survive_restart(bot: BotUnderTest) -> None:
    assert await bot.reply_text("/schedule add 15m /status", chat=TEAM) == (
        "Added schedule s1: every 15m: /status (posts changes only)."
    )
    await bot.telegram.wait_replies(2, TEAM)  # its first run posts the status
    await bot.stop()
    await bot.start()
    listed = await bot.reply_text("/schedule list")
    assert listed == f"s1: every 15m in chat {TEAM}: /status"
    assert await bot.reply_text("/schedule remove s1") == "Removed schedule s1."
    assert await bot.reply_text("/schedule list") == "No schedules."
    assert await bot.reply_text("/schedule remove s1") == "No schedule named 's1'."
    assert (await bot.reply_text("/schedule add 5s /status")).startswith("Usage: /schedule")


# -- confirmation -------------------------------------------------------------------


async def test_broadcast_asks_first_and_only_the_issuer_may_confirm(bot: BotUnderTest) -> None:
    (prompt,) = await bot.say(BROADCAST, user=USER, chat=TEAM)
    assert prompt.text == (
        "Send /wa to 6 recipients?\n"
        "To: 44•••678, 44•••123, 44•••222, 44•••333, 44•••444 and 1 more\n"
        "Message: deploy starts at 14:00\n"
        "Only you can confirm; this expires in 5 minutes."
    )
    assert [label for label, _ in prompt.buttons] == ["Send", "Cancel"]
    bot.telegram.press(prompt, "Send", user=ADMIN)  # not even an admin may confirm for them
    await bot.telegram.wait_for(lambda: len(bot.telegram.callback_answers) == 1)
    assert bot.telegram.callback_answers[0]["text"] == (
        "Only the person who asked can confirm or cancel this."
    )
    assert bot.whatsmate.requests == []
    bot.telegram.press(prompt, "Send", user=USER)
    bot.telegram.press(prompt, "Send", user=USER)  # pressed twice: sends once
    await bot.telegram.wait_for(lambda: len(bot.telegram.callback_answers) == 3)
    await bot.stop()
    assert len(bot.whatsmate.calls("/whatsapp/")) == 6
    (edited,) = [s for s in bot.telegram.sent if s.method == "editMessageText"]
    assert edited.message_id == prompt.message_id
    assert edited.text.startswith("WhatsApp (instance 0): sent to 6 of 6\nalice: queued\n")
    answers = sorted(a["text"] for a in bot.telegram.callback_answers[1:])
    assert answers == ["Sending…", "This was already handled or has expired."]


async def test_cancel_sends_nothing(bot: BotUnderTest) -> None:
    (prompt,) = await bot.say(BROADCAST, chat=TEAM)
    bot.telegram.press(prompt, "Cancel", user=ADMIN)
    await bot.telegram.wait_for(
        lambda: any(s.method == "editMessageText" for s in bot.telegram.sent)
    )
    assert bot.telegram.sent[-1].text == "Cancelled — nothing was sent."
    assert bot.whatsmate.requests == []


async def test_confirmation_expires_after_five_minutes(bot: BotUnderTest) -> None:
    (prompt,) = await bot.say(BROADCAST, chat=TEAM)
    bot.clock.advance(301)
    bot.telegram.press(prompt, "Send", user=ADMIN)
    await bot.telegram.wait_for(
        lambda: any(s.method == "editMessageText" for s in bot.telegram.sent)
    )
    assert bot.telegram.sent[-1].text == "Expired after 5 minutes — nothing was sent."
    assert bot.telegram.callback_answers[0]["text"] == "Expired."
    assert bot.whatsmate.requests == []


# -- audit and history --------------------------------------------------------------


async def test_audit_survives_restart_and_history_masks_numbers(bot: BotUnderTest) -> None:
    await bot.say("/wa 4412345678 hello", user=USER, chat=TEAM)
    await bot.say("/status", user=STRANGER_ID, chat=TEAM)
    await bot.stop()
    await bot.start()
    history = await bot.reply_text("/history 5")
    assert "4412345678" not in history
    lines = history.splitlines()
    assert " · user 1002 · /wa · → 44•••678 · ok · queued" in lines[1]
    assert f" · user {STRANGER_ID} · /status · denied · not allowed" in lines[0]
    mine = await bot.reply_text("/history", user=USER, chat=TEAM)
    assert [line.split(" · ")[2] for line in mine.splitlines()] == ["/wa"]


STRANGER_ID = 6666


async def test_audit_never_stores_bodies_or_secrets(bot: BotUnderTest) -> None:
    await bot.say("/wa alice TOPSECRET-BODY")
    await bot.say("/translate en fr TOPSECRET-TEXT")
    await bot.stop()
    stored = (bot.tmp_path / "audit.sqlite3").read_bytes()
    for wal in bot.tmp_path.glob("audit.sqlite3-*"):
        stored += wal.read_bytes()
    for secret in (b"TOPSECRET", b"s3cr3t-wm", bot.telegram.token.encode()):
        assert secret not in stored


# -- dry run ------------------------------------------------------------------------


async def test_dry_run_shows_exactly_what_would_be_sent(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start(dry_run=True)
    text = await bot.reply_text("/tg oncall all good")
    assert text == (
        "Dry run — nothing was sent. Would call:\n"
        'POST /v1/telegram/batch/message/0 {"numbers": ["4412345678", "4411112222"], '
        '"message": "all good"}'
    )
    assert bot.whatsmate.requests == []
    history = await bot.reply_text("/history 1")
    assert history.endswith("/history · ok · 1 entries") or "dry-run" in history


# -- logs, metrics, webhook ---------------------------------------------------------


async def test_one_structured_log_event_per_command(bot: BotUnderTest) -> None:
    await bot.say("/wa alice TOPSECRET-BODY", user=USER, chat=TEAM)
    events = [json.loads(line) for line in bot.log_text().splitlines() if line.startswith("{")]
    (event,) = [e for e in events if e.get("event") == "command"]
    assert event["command"] == "/wa" and event["chat"] == TEAM and event["user"] == USER
    assert event["outcome"] == "ok" and event["gateway_status"] == "queued"
    assert isinstance(event["duration_ms"], float)
    assert "TOPSECRET-BODY" not in bot.log_text()


async def test_metrics_and_health(make_bot: BotUnderTest) -> None:
    port = free_port()
    bot = await make_bot.start(http={"listen": "127.0.0.1", "port": port})
    await bot.say("/wa alice hi")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        metrics = (await client.get("/metrics")).text
        assert 'whatsmate_bot_commands_total{command="/wa",outcome="ok"} 1.0' in metrics
        assert "whatsmate_bot_gateway_latency_seconds_count" in metrics
        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok", "role": "poller"})
        bot.whatsmate.whatsapp_status = "down"
        await bot.say("/status")
        assert (await client.get("/healthz")).status_code == 503
    await bot.stop()
    async with httpx.AsyncClient() as client:  # stopped: the port is closed again
        try:
            await client.get(f"http://127.0.0.1:{port}/healthz")
            raise AssertionError("web server still running")
        except httpx.ConnectError:
            pass


async def test_strangers_cannot_grow_the_metrics(make_bot: BotUnderTest) -> None:
    """Labels come from the command table: any other word counts as ``unknown``."""
    port = free_port()
    bot = await make_bot.start(http={"listen": "127.0.0.1", "port": port})

    async def series() -> list[str]:
        async with httpx.AsyncClient() as client:
            page = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        return [line for line in page.splitlines() if not line.startswith("#")]

    await bot.say("/zz", user=STRANGER_ID)
    before = await series()
    for n in range(60):
        bot.telegram.message(f"/zz{n}", user=STRANGER_ID)
    bot.telegram.message("/" + "z" * 5000, user=STRANGER_ID)
    await bot.telegram.wait_replies(62, STRANGER_ID)
    after = await series()
    assert len(after) == len(before)
    assert 'whatsmate_bot_commands_total{command="unknown",outcome="denied"} 62.0' in after
    assert max(len(line) for line in after) < 200


async def test_webhook_mode_checks_the_secret_token(make_bot: BotUnderTest) -> None:
    port = free_port()
    bot = await make_bot.start(
        telegram={
            "webhook_url": "https://bot.example.com/telegram",
            "secret_token": "hook-secret-123",
        },
        http={"listen": "127.0.0.1", "port": port},
        wait_for="/setWebhook$",
    )
    set_webhook = bot.telegram.calls("/setWebhook$")[0].body.decode()
    assert "secret_token=hook-secret-123" in set_webhook
    assert bot.telegram.calls("/getUpdates$") == []  # webhook mode never polls
    update = {
        "update_id": 1,
        "message": {
            "message_id": 5,
            "date": int(time.time()),
            "text": "/whoami",
            "chat": {"id": ADMIN, "type": "private", "first_name": "A"},
            "from": {"id": ADMIN, "is_bot": False, "first_name": "A"},
        },
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        forged = await client.post(
            "/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        )
        assert forged.status_code == 403
        real = await client.post(
            "/telegram",
            json={**update, "update_id": 2},
            headers={"X-Telegram-Bot-Api-Secret-Token": "hook-secret-123"},
        )
        assert real.status_code == 200
        assert (await client.get("/healthz")).json()["role"] == "webhook"
    await bot.telegram.wait_replies(1, ADMIN)
    await bot.stop()
    assert [r.text for r in bot.telegram.replies(ADMIN)] == [
        f"You are {ADMIN} (admin) in chat {ADMIN}."
    ]
    assert BOT_ID  # the fake Telegram answered getMe for the webhook bot too


async def test_timers_run_a_due_schedule_and_finish_it_when_stopped() -> None:
    timers = Timers()
    yearly = Schedule("y", TEAM, "/status", cron="0 0 1 1 *")
    timers.start(yearly, first_in_s=0)  # missed its slot: runs once, as soon as they run
    timers.start(Schedule("gone", TEAM, "/status", every_s=10), first_in_s=0)
    timers.stop("gone")
    began, release, fired = asyncio.Event(), asyncio.Event(), []

    async def fire(schedule: Schedule) -> None:
        began.set()
        await release.wait()
        fired.append(schedule)

    running = asyncio.create_task(timers.run(fire))
    await asyncio.wait_for(began.wait(), 5)
    running.cancel()  # stopping does not cut the run in flight short
    for _ in range(10):  # loop turns, not time: the cancel has long been delivered
        await asyncio.sleep(0)
    assert not running.done()
    release.set()
    await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 5)
    assert fired == [yearly]


async def test_timers_follow_other_replicas_and_try_again_after_a_failed_sync() -> None:
    timers, synced = Timers(), asyncio.Event()
    timers.start(Schedule("s1", TEAM, "/status", every_s=3600), first_in_s=60)
    calls = []

    async def sync() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("the database is away")
        synced.set()

    async def fire(schedule: Schedule) -> None:
        raise AssertionError(f"{schedule.name} is not due")

    timers.follow(sync, every_s=0.01)
    assert timers.names() == {"s1"}  # following is no schedule
    running = asyncio.create_task(timers.run(fire))
    await asyncio.wait_for(synced.wait(), 5)  # the failed round did not stop it
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert calls[:2] == [0, 1]


async def test_the_bot_prunes_its_state_before_it_is_up(make_bot: BotUnderTest) -> None:
    """A prompt left by a crash two hours ago is gone once the bot polls; a fresh one stays."""
    now = make_bot.clock.now()
    path = make_bot.tmp_path / "audit.sqlite3"
    storage = await Storage.open(await SqliteDriver.open(path))
    await storage.save_prompt(StoredPrompt("fresh", now - 60, ADMIN, "{}"))
    await storage.save_prompt(StoredPrompt("stale", now - 7200, ADMIN, "{}"))
    await storage.aclose()
    bot = await make_bot.start()
    assert bot.runtime is not None
    assert await bot.runtime.storage.peek_prompt("stale") is None
    assert await bot.runtime.storage.peek_prompt("fresh") is not None
    pruned = [json.loads(line) for line in bot.log_text().splitlines() if '"pruned"' in line]
    assert [line["rows"] for line in pruned] == [1]
