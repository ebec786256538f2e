"""Replicas on a real PostgreSQL, as real processes: one poller and standbys, takeover
after SIGKILL without a doubled send, a frozen (SIGSTOP) poller that hands over and
stands by when it resumes, a database restart in the middle of it all, webhook replicas
that handle each update once, schedules once per slot, inbound messages posted once."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from bot.config import load_config
from bot.replies import DATABASE_AWAY
from bot.runtime import Runtime, open_runtime
from bot.schedules import Schedule
from bot.service import Request
from bot.storage import Storage
from bot.storage.postgres import PostgresDriver
from bot.vocabulary import Notify
from tests.conftest import (
    ADMIN,
    TEAM,
    USER,
    BotUnderTest,
    base_config,
    free_port,
    merge,
    start_bot_process,
)
from tests.fakes import HOLD, TAKEN_THEN_DROP, FakeTelegram, FakeWhatsMate
from tests.postgres import PostgresServer

HOOK_SECRET = "hook-secret-123"
INBOUND = "inbound-secret-0123456789"
BROADCAST = "/wa 4411110001,4411110002,4411110003,4411110004,4411110005,4411110006 go"


class Replicas:
    """Bot processes sharing one PostgreSQL database and the loopback fakes."""

    def __init__(
        self, telegram: FakeTelegram, whatsmate: FakeWhatsMate, tmp_path: Path, url: str
    ) -> None:
        self.telegram, self.whatsmate, self.tmp_path, self.url = telegram, whatsmate, tmp_path, url
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.ports: dict[str, int] = {}

    async def start(self, name: str, **overrides: Any) -> asyncio.subprocess.Process:
        self.ports[name] = free_port()
        config = merge(
            base_config(self.telegram, self.whatsmate, self.tmp_path),
            {
                "telegram": self.telegram.replica_urls(name),
                "database": {"url": self.url},
                "http": {"listen": "127.0.0.1", "port": self.ports[name]},
                "audit": {"path": str(self.tmp_path / f"unused-{name}.sqlite3")},
                "log": {"level": "debug"},
                **overrides,
            },
        )
        path = self.tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.processes[name] = await start_bot_process(path)
        await self.wait_started(name)
        return self.processes[name]

    async def poller_and_standby(self) -> None:
        """Start "a", which becomes the poller, then "b", which stands by."""
        await self.start("a")
        await self.telegram.wait_polling()
        await self.start("b")

    async def health(self, name: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.ports[name]}/healthz")
            body: dict[str, Any] = response.json()
            return body

    async def wait_logged(self, name: str, marker: str) -> None:
        """Until process ``name`` logs a line containing ``marker``."""
        stderr = self.processes[name].stderr
        assert stderr is not None
        while marker.encode() not in (line := await asyncio.wait_for(stderr.readline(), 30)):
            assert line, f"{name} exited before it logged {marker}"

    async def wait_started(self, name: str) -> None:
        """Until the process logs ``started`` (its web server is up by then)."""
        await self.wait_logged(name, '"event": "started"')

    def signal(self, name: str, signal: signal.Signals) -> None:
        self.processes[name].send_signal(signal)

    async def roles(self) -> dict[str, str]:
        return {name: (await self.health(name))["role"] for name in self.processes}

    async def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            _, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode == 0, f"{name}: {err.decode()[-2000:]}"
            assert self.telegram.token not in err.decode()
        self.processes.clear()

    async def post(self, name: str, path: str, json: Any, **headers: str) -> int:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{self.ports[name]}{path}", json=json, headers=headers
            )
            return response.status_code


@pytest.fixture
async def replicas(
    fakes: tuple[FakeTelegram, FakeWhatsMate], tmp_path: Path, database_url: str
) -> AsyncIterator[Replicas]:
    group = Replicas(*fakes, tmp_path, database_url)
    yield group
    await group.stop_all()


async def test_two_pollers_elect_one_and_never_conflict(replicas: Replicas) -> None:
    await replicas.start("a")
    await replicas.start("b")
    await replicas.telegram.wait_polling()
    roles = {(await replicas.health(n))["role"] for n in ("a", "b")}
    assert roles == {"poller", "standby"}
    replicas.telegram.message("/whoami", user=ADMIN)
    await replicas.telegram.wait_replies(1, ADMIN)
    (poller,) = replicas.telegram.pollers()
    assert (await replicas.health(poller))["role"] == "poller"
    await replicas.stop_all()
    assert len(replicas.telegram.replies(ADMIN)) == 1
    assert replicas.telegram.conflicts == 0


async def test_a_frozen_poller_hands_over_and_stands_by_when_it_resumes(
    replicas: Replicas,
) -> None:
    telegram, whatsmate = replicas.telegram, replicas.whatsmate
    await replicas.poller_and_standby()
    telegram.message("/whoami", user=ADMIN)
    handled = telegram.updates[-1]["update_id"]
    await replicas.wait_logged("a", f'"update_id": {handled}')  # "update_done": journal
    replicas.signal("a", signal.SIGSTOP)  # its long poll is still open at Telegram
    frozen = asyncio.get_running_loop().time()
    page = telegram.message("/wa alice while a is frozen", user=USER, chat=TEAM)
    telegram.message("/help", user=ADMIN)
    await telegram.wait_for(lambda: "b" in telegram.pollers(), timeout=15)
    took = asyncio.get_running_loop().time() - frozen
    await telegram.wait_replies(1, TEAM, timeout=10)
    await telegram.wait_replies(2, ADMIN, timeout=10)
    replicas.signal("a", signal.SIGCONT)  # what it fetched before it froze is not its own
    await replicas.wait_logged("a", '"event": "stopped_polling"')
    telegram.message("/whoami", user=ADMIN)
    await telegram.wait_replies(3, ADMIN)
    assert await replicas.roles() == {"a": "standby", "b": "poller"}
    await replicas.stop_all()
    assert took < 15
    (sent,) = telegram.replies(TEAM)
    assert (sent.text.splitlines()[-1], sent.reply_to) == ("alice: queued", page["message_id"])
    assert len(whatsmate.calls("/whatsapp/")) == 1
    assert len(telegram.replies(ADMIN)) == 3
    assert telegram.conflicts == 0
    polls = [r.tag for r in telegram.calls("/getUpdates$")]
    assert set(polls[polls.index("b") :]) == {"b"}  # once b polled, a never did again


async def test_a_database_restart_gets_one_line_then_works_again_with_one_poller(
    replicas: Replicas, postgres: PostgresServer
) -> None:
    telegram, whatsmate = replicas.telegram, replicas.whatsmate
    await replicas.poller_and_standby()
    await asyncio.to_thread(postgres.shut_down)
    try:
        page = telegram.message("/wa alice while the database is away", user=USER, chat=TEAM)
        (reply,) = await telegram.wait_replies(1, TEAM)
        await replicas.wait_logged("a", '"event": "stopped_polling"')  # its lease ran out
        telegram.message("/wa bob sent while nobody polls", user=USER, chat=TEAM)
    finally:
        await asyncio.to_thread(postgres.start_again)
    back = asyncio.get_running_loop().time()
    assert (reply.text, reply.reply_to) == (DATABASE_AWAY, page["message_id"])
    assert whatsmate.calls("/whatsapp/") == []
    await telegram.wait_replies(2, TEAM, timeout=15)
    assert asyncio.get_running_loop().time() - back < 15
    assert sorted((await replicas.roles()).values()) == ["poller", "standby"]
    # Every session the replicas had is cut: nothing depends on one.
    connection = await asyncpg.connect(replicas.url)
    try:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    telegram.message("/whoami", user=ADMIN)
    await telegram.wait_replies(1, ADMIN, timeout=15)
    assert sorted((await replicas.roles()).values()) == ["poller", "standby"]
    await replicas.stop_all()
    assert [r.text.splitlines()[-1] for r in telegram.replies(TEAM)] == [
        DATABASE_AWAY,
        "bob: queued",
    ]
    assert len(whatsmate.calls("/whatsapp/")) == 1
    assert len(telegram.replies(ADMIN)) == 1
    assert telegram.conflicts == 0


async def test_the_standby_takes_over_a_kill_within_15_s_and_sends_nothing_twice(
    replicas: Replicas,
) -> None:
    telegram, whatsmate = replicas.telegram, replicas.whatsmate
    await replicas.poller_and_standby()
    assert (await replicas.health("b"))["role"] == "standby"
    telegram.message("/whoami", user=ADMIN)
    handled = telegram.updates[-1]["update_id"]
    await replicas.wait_logged("a", f'"update_id": {handled}')  # "update_done": journal
    telegram.message(BROADCAST, user=ADMIN, chat=TEAM)
    asked = telegram.updates[-1]["update_id"]
    (prompt,) = await telegram.wait_replies(1, TEAM)
    await replicas.wait_logged("a", f'"update_id": {asked}')  # the prompt is done
    whatsmate.fail("/whatsapp/", *[HOLD] * 7)  # /wa alice and the six the Send makes
    whatsmate.fail("/v1/gateway/status", HOLD)
    page = telegram.message("/wa alice db-1 is down", user=USER, chat=TEAM)
    status = telegram.message("/status", user=USER, chat=TEAM)
    telegram.press(prompt, "Send", user=ADMIN)  # the confirmed sends are out, too
    await whatsmate.wait_for(lambda: len(whatsmate.calls("/whatsapp/")) == 7)
    await whatsmate.wait_for(lambda: len(whatsmate.calls("/v1/gateway/status")) >= 1)
    await replicas.kill("a")
    killed = asyncio.get_running_loop().time()
    whatsmate.release()  # what the dead poller asked no longer gets an answer anywhere
    telegram.message("/help", user=ADMIN)
    _, *replies = await telegram.wait_replies(4, TEAM, timeout=15)
    await telegram.wait_replies(2, ADMIN, timeout=15)
    assert asyncio.get_running_loop().time() - killed < 15
    assert telegram.pollers() == {"a", "b"}
    assert (await replicas.health("b"))["role"] == "poller"
    await replicas.stop_all()
    unknown = (
        "/wa: outcome unknown — the bot restarted while handling it, so it may have "
        "been delivered. Not retried: check with the recipient before sending again."
    )
    answered = {r.reply_to: r.text.split("\n")[0] for r in replies}
    # the press is answered in the name of the command its button confirms
    assert answered == {
        page["message_id"]: unknown,
        prompt.message_id: unknown,
        status["message_id"]: "WhatsApp gateway: up",
    }
    numbers = [call.json()["number"] for call in whatsmate.calls("/whatsapp/")]
    assert len(numbers) == 7 and len(set(numbers)) == 7  # the standby sent nothing again
    assert len(telegram.replies(TEAM)) == 4
    texts = [r.text for r in telegram.replies(ADMIN)]  # the handled /whoami is not rerun
    assert len(texts) == 2 and texts[1].startswith("Commands you may use")


async def test_webhook_replicas_handle_each_update_once(replicas: Replicas) -> None:
    hook = {
        "webhook_url": "https://bot.example.com/telegram",
        "secret_token": HOOK_SECRET,
        "messages_per_second": 10000,
        "messages_per_minute_per_group": 1000000,
    }
    await replicas.start("a", telegram={**replicas.telegram.replica_urls("a"), **hook})
    await replicas.start("b", telegram={**replicas.telegram.replica_urls("b"), **hook})
    assert {(await replicas.health(n))["role"] for n in ("a", "b")} == {"webhook"}
    telegram, headers = replicas.telegram, {"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}

    def update(text: str) -> dict[str, Any]:
        telegram.message(text, user=ADMIN, chat=TEAM)
        return telegram.updates[-1]

    for n in range(6):  # alternate replicas, as a load balancer would
        status = await replicas.post("ab"[n % 2], "/telegram", update("/whoami"), **headers)
        assert status == 200
    twice = update("/help")
    assert await replicas.post("a", "/telegram", twice, **headers) == 200
    assert await replicas.post("b", "/telegram", twice, **headers) == 200
    await telegram.wait_replies(7, TEAM)
    assert await replicas.post("a", "/telegram", update(BROADCAST), **headers) == 200
    (*_, prompt) = await telegram.wait_replies(8, TEAM)
    assert prompt.text.startswith("Send /wa to 6 recipients?")
    presses = []
    for _ in range(2):  # Send pressed twice, both presses delivered to the other replica
        telegram.press(prompt, "Send", user=ADMIN)
        presses.append(telegram.updates[-1])
    for press in presses:
        assert await replicas.post("b", "/telegram", press, **headers) == 200
    await telegram.wait_for(lambda: len(telegram.callback_answers) == 2)
    await telegram.wait_for(lambda: any(s.method == "editMessageText" for s in telegram.sent))
    await replicas.stop_all()
    assert len(telegram.replies(TEAM)) == 8  # 6 + 1 (/help once) + the prompt
    assert len(whatsmate_sends := replicas.whatsmate.sends()) == 6, whatsmate_sends
    assert telegram.calls("/getUpdates$") == []


async def test_schedules_fire_once_per_slot_across_replicas(replicas: Replicas) -> None:
    ping = {"name": "ping", "every": "1s", "chat": TEAM, "command": "/status", "notify": "always"}
    await replicas.start("a", schedules=[ping])
    await replicas.start("b", schedules=[ping])
    whatsmate = replicas.whatsmate
    await whatsmate.wait_for(lambda: len(whatsmate.calls("/v1/gateway/status")) >= 4, 15)
    await replicas.stop_all()
    connection = await asyncpg.connect(replicas.url)
    try:
        slots = await connection.fetch("SELECT slot FROM schedule_slots WHERE name = 'ping'")
    finally:
        await connection.close()
    runs = len(whatsmate.calls("/v1/gateway/status"))
    assert runs == len(slots) == len({row["slot"] for row in slots})
    assert len(replicas.telegram.replies(TEAM)) == runs


async def test_the_same_inbound_delivery_to_both_replicas_is_posted_once(
    replicas: Replicas,
) -> None:
    inbound = {"inbound": {"secret": INBOUND, "chat": TEAM}}
    await replicas.start("a", **inbound)
    await replicas.start("b", **inbound)
    body = {"number": "4915112345678", "message": "ack from the field"}
    path = f"/inbound/whatsapp/{INBOUND}"
    statuses = await asyncio.gather(replicas.post("a", path, body), replicas.post("b", path, body))
    assert statuses == [200, 200]
    await replicas.telegram.wait_replies(1, TEAM)
    replicas.telegram.message("/whoami", user=ADMIN)  # a round trip on the poller
    await replicas.telegram.wait_replies(1, ADMIN)
    await replicas.stop_all()
    assert [r.text for r in replicas.telegram.replies(TEAM)] == [
        "49•••678 on WhatsApp:\nack from the field"
    ]


async def test_recovery_never_replays_a_day_old_entry_nor_asks_to_confirm_twice(
    make_bot: BotUnderTest, database_url: str
) -> None:
    telegram, whatsmate = make_bot.telegram, make_bot.whatsmate
    stale = telegram.undelivered("/wa alice from two days ago", user=USER, chat=TEAM)
    broadcast = telegram.undelivered(BROADCAST, user=USER, chat=TEAM)  # asks to confirm
    journal = await Storage.open(await PostgresDriver.connect(database_url))  # a dead poller's
    now = make_bot.clock.now()
    await journal.record_update(stale["update_id"], "dead", json.dumps(stale), now - 25 * 3600)
    await journal.record_update(broadcast["update_id"], "dead", json.dumps(broadcast), now)
    bot = await make_bot.start(database={"url": database_url})
    (reply,) = await telegram.wait_replies(1, TEAM)
    assert await bot.reply_text("/whoami") == "You are 1001 (admin) in chat 1001."
    left = {e.update_id for e in await journal.unfinished_updates("", make_bot.clock.now())}
    assert broadcast["update_id"] not in left  # answered and finished; the stale one is
    assert stale["update_id"] not in left  # never replayed (nor returned for replay)
    await journal.aclose()
    assert reply.text == (
        "/wa: not sent — the bot restarted while asking you to confirm it. A Send / Cancel "
        "prompt shown before still works; without one, send it again."
    )
    assert (reply.reply_to, reply.buttons) == (broadcast["message"]["message_id"], [])
    assert len(telegram.replies(TEAM)) == 1
    assert whatsmate.calls("/whatsapp/") == []


async def test_a_schedule_removed_on_one_replica_stops_on_every_replica(
    make_bot: BotUnderTest, database_url: str
) -> None:
    path = make_bot.write_config(database={"url": database_url})
    config = load_config(path, {"TEST_TG_TOKEN": make_bot.telegram.token})
    async with (
        open_runtime(config, serving=True) as a,
        open_runtime(config, serving=True) as b,
    ):

        def names(runtime: Runtime) -> set[str]:  # armed on its timers (never run here)
            assert runtime.timers is not None
            return runtime.timers.names()

        async def say(runtime: Runtime, text: str) -> str:
            return (await runtime.service.handle(Request(ADMIN, TEAM, False, text))).text

        assert (await say(a, "/schedule add 10s /status")).startswith("Added schedule s1:")
        assert names(b) == set()
        await b.service.sync_schedules()  # added on a: b runs it too (one run per slot)
        assert names(b) == {"s1"}
        assert await say(a, "/schedule remove s1") == "Removed schedule s1."
        s1 = Schedule("s1", TEAM, "/status", every_s=10, notify=Notify.CHANGE, from_chat=True)
        assert await b.service.run_scheduled(s1) is None  # its next slot, on b
        assert names(b) == set()
        assert make_bot.whatsmate.calls("/v1/gateway/status") == []
        assert (await say(b, "/schedule add 10s /status")).startswith("Added schedule s2:")
        assert (await say(a, "/schedule add 1h /status")).startswith("Added schedule s3:")
        await b.service.sync_schedules()
        assert names(b) == {"s2", "s3"}
        assert await say(b, "/schedule remove s3") == "Removed schedule s3."
        await a.service.sync_schedules()
        assert names(a) == {"s2"}


async def two_sends_a_dead_poller_left(
    make_bot: BotUnderTest, database_url: str, *unreadable: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two /wa a dead poller journaled and did not finish, after ``unreadable`` entries
    (payloads no update can be read from, ids 900…)."""
    one = make_bot.telegram.undelivered("/wa alice one", user=USER, chat=TEAM)
    two = make_bot.telegram.undelivered("/wa bob two", user=USER, chat=TEAM)
    storage = await Storage.open(await PostgresDriver.connect(database_url))
    entries = [
        *enumerate(unreadable, start=900),
        *((u["update_id"], json.dumps(u)) for u in (one, two)),
    ]
    for update_id, payload in entries:
        await storage.record_update(update_id, "dead", payload, make_bot.clock.now())
    await storage.aclose()
    return one, two


async def test_a_deposed_poller_stops_answering_its_recovery(
    make_bot: BotUnderTest, database_url: str
) -> None:
    telegram = make_bot.telegram
    _, two = await two_sends_a_dead_poller_left(make_bot, database_url)
    telegram.fail("/sendMessage$", HOLD)  # the first recovery answer is on the wire
    bot = await make_bot.start(wait_for="/sendMessage$", database={"url": database_url})
    assert bot.runtime is not None
    election = bot.runtime.election
    connection = await asyncpg.connect(database_url)  # another replica takes the lease
    await connection.execute(
        "UPDATE poller_lease SET holder = 'other', term = term + 1,"
        " expires = extract(epoch FROM clock_timestamp()) + 600"
    )
    await connection.close()
    await bot.wait_logged("poller_lease_lost")  # this replica knows it lost the lease
    assert election.term is None
    telegram.release()
    await bot.wait_logged("recovery_stopped")
    (answer,) = telegram.replies(TEAM)  # only the one already on the wire
    assert answer.text.startswith("/wa: outcome unknown")
    left = await bot.runtime.storage.unfinished_updates("", bot.clock.now())
    assert [e.update_id for e in left] == [two["update_id"]]  # for the new poller
    assert bot.whatsmate.sends() == []


async def test_a_recovery_answer_whose_reply_was_lost_is_not_posted_again_nor_stops_the_rest(
    make_bot: BotUnderTest, database_url: str
) -> None:
    telegram = make_bot.telegram
    await two_sends_a_dead_poller_left(make_bot, database_url, "{not an update")
    telegram.fail("/sendMessage$", TAKEN_THEN_DROP)  # the first answer is taken, its reply lost
    bot = await make_bot.start(database={"url": database_url})  # recovered, then polls
    assert bot.runtime is not None
    replies = [r.text.splitlines()[0] for r in telegram.replies(TEAM)]
    assert len(replies) == 2 and all(r.startswith("/wa: outcome unknown") for r in replies)
    left = await bot.runtime.storage.unfinished_updates("", bot.clock.now())
    assert [e.update_id for e in left] == [900]  # both answered ones done: never again
    assert '"answer_outcome_unknown"' in bot.log_text() and '"recovery_failed"' in bot.log_text()
    assert bot.whatsmate.sends() == []
