"""``Storage``'s promises, on both backends: SQLite (embedded) and a real PostgreSQL
(replicas). The replica promises — one claim wins, one slot runs, one poller — are
checked with two storages on the same PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bot.errors import StorageUnavailable
from bot.recipients import Recipient
from bot.storage import (
    Arrival,
    PostProgress,
    Storage,
    StoredPrompt,
    StoredSchedule,
    Taken,
    Thread,
)
from bot.storage.paging import Arriving, PagingStore
from bot.storage.postgres import PostgresDriver
from bot.storage.sqlite import SqliteDriver
from bot.vocabulary import AuditEntry, Channel, Outcome
from tests.conftest import fresh_database

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        opened = await Storage.open(await SqliteDriver.open(tmp_path / "state.sqlite3"))
    else:
        url = await fresh_database(request.getfixturevalue("postgres"))
        opened = await Storage.open(await PostgresDriver.connect(url))
    yield opened
    await opened.aclose()


@pytest.fixture
async def two_replicas(database_url: str) -> AsyncIterator[tuple[Storage, Storage]]:
    first, second = await asyncio.gather(
        replica(database_url), replica(database_url)
    )  # both create the schema at once
    yield first, second
    await first.aclose()
    await second.aclose()


async def replica(url: str) -> Storage:
    return await Storage.open(await PostgresDriver.connect(url))


async def accept(storage: Storage, body: str, digest: str, now: float = NOW) -> int | None:
    arrival = Arrival(Channel.WHATSAPP, "4412345678", body, digest, now, now - 120, now - 86400, -1)
    return await storage.accept_inbound(arrival)


async def test_audit_newest_first_and_per_user(storage: Storage) -> None:
    entries = [
        AuditEntry(-1, 7, "/wa", ("4412345678",), Outcome.OK, "queued", NOW, ("job-1",)),
        AuditEntry(-1, 8, "/status", (), Outcome.ERROR, "down", NOW + 1),
    ]
    await storage.add_audit(entries)
    assert await storage.recent_audit(5, None) == entries[::-1]
    assert await storage.recent_audit(5, 7) == entries[:1]


async def test_schedules_runs_slots(storage: Storage) -> None:
    await storage.add_schedule(StoredSchedule("s1", -1, "10s", "/status"), 7)
    assert await storage.added_schedules() == [StoredSchedule("s1", -1, "10s", "/status")]
    await storage.mark_run("s1", NOW, "up")
    await storage.mark_run("s1", NOW + 10, "down")
    assert (await storage.last_runs())["s1"].reply == "down"
    assert await storage.first_run("s1", NOW) == NOW
    assert await storage.first_run("s1", NOW + 50) == NOW
    assert await storage.claim_slot("s1", "#1", NOW)
    assert not await storage.claim_slot("s1", "#1", NOW + 0.1)
    assert await storage.remove_schedule("s1")
    assert not await storage.remove_schedule("s1")
    assert await storage.claim_slot("s1", "#1", NOW + 1)  # removed: its slots went too


async def test_inbound_outbox_threads_and_posts(storage: Storage) -> None:
    assert await accept(storage, "no thread yet", "d1") == -1
    await storage.record_threads(["4412345678"], Thread(-100, 55), NOW)
    assert await accept(storage, "under the page", "d2") == -100
    assert await accept(storage, "under the page", "d2", NOW + 60) is None  # repeated
    assert await storage.waiting_chats() == {-1, -100}
    taken = (await storage.claim_inbound(-100, NOW, 15, "a")).messages
    assert [(m.body, m.reply_to) for m in taken] == [("under the page", 55)]
    assert (await storage.claim_inbound(-100, NOW + 1, 15, "b")).messages == ()  # leased
    assert await storage.lease_inbound([taken[0].id], "a", None)  # given back
    (again,) = (await storage.claim_inbound(-100, NOW + 2, 15, "b")).messages
    await storage.mark_posted([again.id], 901, NOW + 3)
    assert await storage.waiting_chats() == {-1}
    assert await storage.find_post(-100, 901) is not None
    assert await storage.find_post(-100, 902) is None
    assert await accept(storage, "under the page", "d2", NOW + 300) == -100  # not a repeat


async def test_a_lease_that_ran_out_is_taken_again(storage: Storage) -> None:
    await accept(storage, "x", "d")
    assert len((await storage.claim_inbound(-1, NOW, 15, "a")).messages) == 1
    assert len((await storage.claim_inbound(-1, NOW + 16, 15, "b")).messages) == 1


async def test_a_lease_belongs_to_its_holder(storage: Storage) -> None:
    """Only the replica holding a lease renews it, gives it back or records progress;
    once it ran out and another took it, the first one's writes change nothing."""
    await accept(storage, "x", "d")
    (message,) = (await storage.claim_inbound(-1, NOW, 15, "a")).messages
    ids, started = [message.id], PostProgress(0, True)
    assert not await storage.lease_inbound(ids, "b", NOW + 20)
    assert await storage.lease_inbound(ids, "a", NOW + 30)  # renewed: runs till NOW + 30
    assert (await storage.claim_inbound(-1, NOW + 20, 15, "b")).messages == ()
    assert (await storage.claim_inbound(-1, NOW + 31, 15, "b")).messages == (message,)
    assert not await storage.lease_inbound(ids, "a", NOW + 50)  # taken over: stop posting
    assert not await storage.lease_inbound(ids, "a", None)  # nor give away b's lease
    assert not await storage.record_progress(ids, "a", started)
    assert (await storage.claim_inbound(-1, NOW + 32, 15, "c")).messages == ()
    assert await storage.record_progress(ids, "b", started)
    await storage.mark_posted(ids, 7, NOW + 33)
    assert not await storage.lease_inbound(ids, "b", NOW + 50)  # posted: nothing to hold


async def test_a_started_post_comes_back_alone_with_its_progress(storage: Storage) -> None:
    """Parts posted and a part that may have arrived are kept: the post goes on from
    there, never merged with newer messages (its text must not change)."""
    await accept(storage, "one", "d1")
    await accept(storage, "two", "d2")
    first = (await storage.claim_inbound(-1, NOW, 15, "a")).messages
    ids = [m.id for m in first]
    assert await storage.record_progress(ids, "a", PostProgress(1, True, 501))
    assert await storage.lease_inbound(ids, "a", None)
    await accept(storage, "three", "d3")
    again = await storage.claim_inbound(-1, NOW + 1, 15, "b")
    assert again == Taken(first, PostProgress(1, True, 501))
    assert await storage.find_post(-1, 501) is not None  # its first part can be answered
    await storage.mark_posted(ids, 501, NOW + 2)
    await storage.mark_posted(ids, 999, NOW + 3)  # a late second mark keeps the first
    assert await storage.find_post(-1, 999) is None
    (third,) = (await storage.claim_inbound(-1, NOW + 4, 15, "b")).messages
    assert third.body == "three"
    assert await storage.record_progress([third.id], "b", PostProgress(0, False))
    assert await storage.lease_inbound([third.id], "b", None)
    assert (await storage.claim_inbound(-1, NOW + 5, 15, "a")).progress == PostProgress()


async def test_a_refused_chat_hands_its_messages_on(storage: Storage) -> None:
    await storage.record_threads(["4412345678"], Thread(-100, 55), NOW)
    await accept(storage, "under the page", "d1")
    taken = (await storage.claim_inbound(-100, NOW, 15, "a")).messages
    ids = [m.id for m in taken]
    assert await storage.record_progress(ids, "a", PostProgress(1, True, 601))
    await storage.move_inbound(ids, -100, -200)
    assert await storage.waiting_chats() == {-200}
    moved = await storage.claim_inbound(-200, NOW + 1, 15, "a")
    assert [(m.body, m.chat_id, m.reply_to) for m in moved.messages] == [
        ("under the page", -200, None)
    ]
    assert moved.progress == PostProgress()  # from scratch in the new chat
    assert await accept(storage, "later", "d2") == -1  # the thread into -100 is gone


async def test_prompts_are_claimed_once(storage: Storage) -> None:
    prompt = StoredPrompt("tok", NOW, 7, '{"text": "/wa x y"}')
    await storage.save_prompt(prompt)
    assert await storage.peek_prompt("tok") == prompt
    results = await asyncio.gather(*(storage.claim_prompt("tok") for _ in range(5)))
    assert [r for r in results if r is not None] == [prompt]
    assert await storage.peek_prompt("tok") is None


async def test_update_journal(storage: Storage) -> None:
    assert await storage.record_update(1, "a", '{"update_id": 1}', NOW)
    assert not await storage.record_update(1, "b", '{"update_id": 1}', NOW)
    assert await storage.record_update(2, "a", '{"update_id": 2}', NOW)
    await storage.finish_update(1)
    unfinished = await storage.unfinished_updates("b", NOW)
    assert [(e.update_id, e.owner, e.received) for e in unfinished] == [(2, "a", NOW)]
    assert await storage.unfinished_updates("a", NOW) == []
    assert await storage.record_update(1, "c", "{}", NOW + 49 * 3600)  # ids kept 48 h
    await storage.ping()


DAY = 24 * 3600.0


async def test_a_journal_entry_older_than_a_day_is_never_replayed(storage: Storage) -> None:
    assert await storage.record_update(1, "a", "{}", NOW)
    assert await storage.record_update(2, "a", "{}", NOW + 3600)
    assert [e.update_id for e in await storage.unfinished_updates("b", NOW + DAY + 1)] == [2]
    assert await storage.unfinished_updates("b", NOW + 3 * DAY) == []


async def test_prune_drops_what_has_served_its_time(storage: Storage) -> None:
    assert await storage.record_update(1, "a", "{}", NOW)
    await storage.finish_update(1)
    await storage.record_threads(["4412345678"], Thread(-100, 55), NOW)
    assert await accept(storage, "to post", "d1") == -100
    (posted,) = (await storage.claim_inbound(-100, NOW, 15, "a")).messages
    await storage.mark_posted([posted.id], 901, NOW)
    assert await accept(storage, "still waiting", "d2") == -100
    await storage.save_prompt(StoredPrompt("tok", NOW, 7, "{}"))
    assert await storage.claim_slot("s1", "#1", NOW)
    assert await storage.prune(NOW + 60) == 0
    assert await storage.prune(NOW + DAY + 60) == 2  # the thread (24 h), the prompt (1 h)
    assert await storage.peek_prompt("tok") is None
    assert await storage.find_post(-100, 901) is not None  # a reply to it goes back a week
    assert not await storage.record_update(1, "b", "{}", NOW + DAY + 60)  # ids kept 48 h
    assert await storage.prune(NOW + 8 * DAY) == 3  # the update id, the post, the slot
    assert await storage.find_post(-100, 901) is None
    assert await storage.claim_slot("s1", "#1", NOW + 8 * DAY)
    waiting = await storage.claim_inbound(-100, NOW + 8 * DAY, 15, "a")
    assert [m.body for m in waiting.messages] == ["still waiting"]  # never posted: kept


async def test_one_claim_wins_across_replicas(
    two_replicas: tuple[Storage, Storage],
) -> None:
    first, second = two_replicas
    await first.save_prompt(StoredPrompt("tok", NOW, 7, "{}"))
    claims = await asyncio.gather(first.claim_prompt("tok"), second.claim_prompt("tok"))
    assert sum(c is not None for c in claims) == 1
    slots = await asyncio.gather(
        first.claim_slot("ping", "#3", NOW), second.claim_slot("ping", "#3", NOW)
    )
    assert sorted(slots) == [False, True]
    deliveries = await asyncio.gather(accept(first, "same", "dd"), accept(second, "same", "dd"))
    assert sorted(deliveries, key=str) == [-1, None]
    await accept(first, "another", "de")
    taken = await asyncio.gather(
        first.claim_inbound(-1, NOW, 15, "a"), second.claim_inbound(-1, NOW, 15, "b")
    )
    ids = [m.id for batch in taken for m in batch.messages]
    assert len(ids) == len(set(ids)) == 2  # every message taken, none by both


async def test_the_poller_lease_one_holder_a_term_per_holder_and_a_fence(
    two_replicas: tuple[Storage, Storage],
) -> None:
    first, second = two_replicas
    assert await first.claim_poller("a", 60) == 1
    assert await second.claim_poller("b", 60) is None
    assert await first.claim_poller("a", 60) == 1  # renewed: the same term
    assert await first.record_polled_update(1, "a", "{}", NOW, 1) is True
    assert await second.record_polled_update(2, "b", "{}", NOW, 1) is None  # not its lease
    await first.release_poller("a")  # a clean shutdown: taken at once
    assert await second.claim_poller("b", 0) == 2  # a lease of 0 s has lapsed already
    assert await first.record_polled_update(3, "a", "{}", NOW, 1) is None  # fenced off
    claims = await asyncio.gather(first.claim_poller("a", 60), second.claim_poller("c", 60))
    assert sorted(claims, key=str) == [3, None]  # of two standbys, one takes it
    assert [e.update_id for e in await first.unfinished_updates("", NOW)] == [1]


async def test_a_journal_entry_is_claimed_for_recovery_once_and_only_under_the_lease(
    two_replicas: tuple[Storage, Storage],
) -> None:
    first, second = two_replicas
    assert await first.record_update(1, "dead", "{}", NOW)
    assert await first.record_update(2, "dead", "{}", NOW)
    assert await first.claim_poller("a", 60) == 1
    assert await second.claim_journal_entry(1, "b", 1) is False  # not b's lease
    claims = await asyncio.gather(*(first.claim_journal_entry(1, "a", 1) for _ in range(3)))
    assert sorted(claims) == [False, False, True]  # once, however many rounds ask
    await first.finish_update(2)
    assert await first.claim_journal_entry(2, "a", 1) is False  # done: nothing to recover
    await first.release_poller("a")
    assert await second.claim_poller("b", 60) == 2
    assert await first.claim_journal_entry(1, "a", 1) is False  # a deposed poller: fenced
    assert await second.claim_journal_entry(1, "b", 2) is True  # the new one takes it over


async def test_the_lease_on_sqlite_is_always_this_process(tmp_path: Path) -> None:
    storage = await Storage.open(await SqliteDriver.open(tmp_path / "state.sqlite3"))
    assert await storage.claim_poller("a", 0) == await storage.claim_poller("b", 0) == 1
    assert await storage.record_polled_update(1, "b", "{}", NOW, 1) is True
    assert await storage.claim_journal_entry(1, "a", 1) is True
    assert await storage.claim_journal_entry(1, "a", 1) is False  # claimed already
    await storage.release_poller("a")
    await storage.aclose()


async def test_schedule_numbers_are_never_given_twice(storage: Storage) -> None:
    assert [await storage.next_schedule_number() for _ in range(3)] == [1, 2, 3]


async def test_schedule_numbers_across_replicas(two_replicas: tuple[Storage, Storage]) -> None:
    numbers = await asyncio.gather(
        *(r.next_schedule_number() for r in two_replicas for _ in range(5))
    )
    assert sorted(numbers) == list(range(1, 11))


async def refusing_writes(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A storage whose database refuses every write, as a full disk would."""
    if backend == "sqlite":
        storage = await Storage.open(await SqliteDriver.open(tmp_path / "state.sqlite3"))
        await storage.driver.execute("PRAGMA query_only = ON")
        return storage
    url = await fresh_database(request.getfixturevalue("postgres"))
    await (await Storage.open(await PostgresDriver.connect(url))).aclose()  # the schema
    connection = await asyncpg.connect(url)
    name = await connection.fetchval("SELECT current_database()")
    await connection.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    await connection.close()
    return Storage(await PostgresDriver.connect(url))  # its sessions: read-only


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_database_that_cannot_take_a_statement_raises_storage_unavailable(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    storage = await refusing_writes(backend, request, tmp_path)
    try:
        thread = Thread(-1, 7)
        with pytest.raises(StorageUnavailable):  # a statement
            await storage.record_threads(["4412345678"], thread, NOW)
        with pytest.raises(StorageUnavailable):  # a transaction
            await accept(storage, "hi", "d1")
        with pytest.raises(StorageUnavailable):  # a batch
            await storage.add_audit([AuditEntry(-1, 1, "/wa", (), Outcome.OK, "", NOW, ())])
    finally:
        await storage.aclose()


async def taken_page(storage: Storage, lease_s: float) -> tuple[PagingStore, int]:
    """An incident whose first page was taken, at ``NOW``, by replica ``a``."""
    from bot.config import Escalation, PageStep
    from bot.paging import incidents as rules
    from bot.paging.intake import parse_notification
    from tests.alertmanager import webhook_alert, webhook_body

    store = PagingStore(storage.driver)
    body = webhook_body(webhook_alert("db-1", "CPU above 90% on db-1"))
    notification = parse_notification(json.dumps(body).encode())
    chain = Escalation("team", (PageStep("alice", (Recipient("alice", "4412345678"),)),))

    def opens(current: rules.Incident | None, number: int) -> rules.Decision:
        return rules.open_incident(number, notification, chain, NOW, can_silence=False)

    await store.notifications([Arriving(notification.group, True, opens)], -1, NOW)
    _, (send,) = await store.run_due(
        NOW, 10, lambda i: rules.run_step(i, chain.chain, NOW, text_limit=None), "a", lease_s
    )
    return store, send.id


async def test_a_live_process_s_slow_send_is_never_called_interrupted(
    storage: Storage,
) -> None:
    """SQLite: only at start is a send still taken one a dead process left. PostgreSQL:
    one whose lease its sender renews is not; one whose lease ran out is."""
    store, taken = await taken_page(storage, lease_s=60)
    one_process = storage.driver.dialect.one_process
    await store.renew_sends([taken], "a", NOW + 200)
    assert await store.interrupted_sends(NOW + 100, starting=False) == []
    late = await store.interrupted_sends(NOW + 300, starting=False)
    assert [send.id for send in late] == ([] if one_process else [taken])
    if one_process:
        (left,) = await store.interrupted_sends(NOW + 300, starting=True)
        assert left.id == taken


async def test_a_second_process_on_the_sqlite_file_leaves_the_posters_leases(
    tmp_path: Path,
) -> None:
    """``exec`` beside a running bot opens the same file: the running poster keeps what it
    took; only a poster starting (the dead one's successor) frees it."""
    path = tmp_path / "state.sqlite3"
    running = await Storage.open(await SqliteDriver.open(path))
    try:
        await accept(running, "hello", "d1")
        assert len((await running.claim_inbound(-1, NOW, 15, "a")).messages) == 1
        beside = await Storage.open(await SqliteDriver.open(path))
        await beside.aclose()
        assert (await running.claim_inbound(-1, NOW + 1, 15, "b")).messages == ()
        await running.free_dead_leases()
        assert len((await running.claim_inbound(-1, NOW + 1, 15, "b")).messages) == 1
    finally:
        await running.aclose()


async def test_prune_drops_closed_incidents_and_posted_incident_posts(storage: Storage) -> None:
    db = storage.driver
    for number, is_open in ((1, False), (2, True)):
        await db.execute(
            "INSERT INTO incidents (number, grp, is_open, opened_at, chat_id, state)"
            " VALUES (?, ?, ?, ?, -1, '{}')",
            number, f"g{number}", is_open, NOW,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO incident_sends (incident, kind, step, written, number, channel,"
            " state, created) VALUES (?, 'page', 0, 'alice', '4412345678', 'whatsapp',"
            " 'done', ?)",
            number, NOW,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO incident_posts (incident, chat_id, opening, body, line, silence,"
            " posted) VALUES (?, -1, TRUE, 'FIRING', 'line', FALSE, ?)",
            number, NOW if number == 1 else None,
        )  # fmt: skip
    await storage.prune(NOW + 8 * DAY)  # a week on: closed #1's sends and the posted post
    assert await db.fetch("SELECT incident FROM incident_sends ORDER BY incident") == [(2,)]
    assert await db.fetch("SELECT incident FROM incident_posts") == [(2,)]  # waiting: kept
    await storage.prune(NOW + 31 * DAY)  # a month on: closed #1 itself; open #2 stays
    assert await db.fetch("SELECT number FROM incidents") == [(2,)]
