"""Every query of the bot's state, written once, over a ``Driver`` (SQLite or PostgreSQL).

The audit trail, chat-added schedules and their runs and slots, the inbound outbox of the
two-way bridge and its reply threads, confirmation prompts, the update journal and the
poller election (a lease row on PostgreSQL, judged by the database's clock; on SQLite
one process owns the file and is always the poller). Every promise that matters across
replicas is made by the database, not by the caller: a prompt is claimed with
``DELETE … RETURNING``, a schedule slot and an update id with a primary key, inbound
messages under a lease with ``Dialect.skip_locked``, a repeated delivery in a
transaction locked on its digest, a journal entry together with a check of the lease.

Nothing is kept longer than it serves (``KEPT``): each table that grows with use drops
its expired rows as it grows, and ``prune`` sweeps them all (the threads table, one row
per number, only there); the lifecycle may call it on a schedule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from bot.errors import StorageUnavailable
from bot.storage.driver import Connection, Driver
from bot.storage.records import (
    Arrival,
    InboundMessage,
    JournalEntry,
    LastRun,
    PostProgress,
    PostRef,
    StoredPrompt,
    StoredSchedule,
    Taken,
    Thread,
)
from bot.storage.schema import migrate
from bot.vocabulary import AuditEntry, Channel, Outcome

HOUR = 3600.0
# The database's clock, in seconds since the epoch: the one clock a poller lease is judged
# by (PostgreSQL only: on SQLite one process owns the file and is always the poller).
DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
REPLAY_WITHIN_S = 24 * HOUR  # a journal entry older than this is never replayed (a takeover)
# How long rows are kept after they stopped being needed, per table: the statement that
# drops them and the age it drops at.
KEPT: dict[str, tuple[str, float]] = {
    # handled update ids, for dedupe: at least the 24 hours Telegram may redeliver within
    "updates": ("DELETE FROM updates WHERE received < ?", 48 * HOUR),
    # the command that last paged a number: the bridge's thread window (THREAD_WITHIN_S)
    "threads": ("DELETE FROM threads WHERE at < ?", 24 * HOUR),
    # posted messages (their bodies went at posting): a reply to a bridge post goes back
    # for a week; the repeat window (2 minutes) needs far less. Unposted rows are kept.
    "inbound": ("DELETE FROM inbound WHERE posted < ?", 7 * 24 * HOUR),
    # a prompt expires after 5 minutes; one never answered (a crash) goes within the hour
    "prompts": ("DELETE FROM prompts WHERE created < ?", HOUR),
    # a slot claimed: far longer than any schedule's period
    "schedule_slots": ("DELETE FROM schedule_slots WHERE at < ?", 7 * 24 * HOUR),
    # paging: incident posts made a week ago; the sends of incidents closed a week ago
    # (an open incident's are kept: they say who was paged, for ack and RESOLVED); closed
    # incidents after 30 days (their numbers are never reused)
    "incident_posts": ("DELETE FROM incident_posts WHERE posted < ?", 7 * 24 * HOUR),
    "incident_sends": (
        "DELETE FROM incident_sends WHERE created < ?"
        " AND incident IN (SELECT number FROM incidents WHERE NOT is_open)",
        7 * 24 * HOUR,
    ),
    "incidents": ("DELETE FROM incidents WHERE NOT is_open AND opened_at < ?", 30 * 24 * HOUR),
}
AUDIT_COLUMNS = "at, chat_id, user_id, command, recipients, outcome, detail, job_ids"
INBOUND_COLUMNS = "id, channel, number, body, chat_id, reply_to"
# A message taken to post, with how far its post got (``PostProgress``).
INBOUND_TAKEN = f"{INBOUND_COLUMNS}, batch, parts_done, maybe_sent, post_id"
PROMPT_COLUMNS = "token, created, user_id, request"


def audit_row(entry: AuditEntry) -> tuple[object, ...]:
    """An entry as the audit table's columns (``AUDIT_COLUMNS``, in order)."""
    return (
        entry.at,
        entry.chat_id,
        entry.user_id,
        entry.command,
        ",".join(entry.recipients),
        entry.outcome.value,
        entry.detail,
        ",".join(entry.job_ids),
    )


def audit_entry(row: Iterable[Any]) -> AuditEntry:
    """The entry of an audit row read as ``SELECT {AUDIT_COLUMNS}``."""
    at, chat_id, user_id, command, recipients, outcome, detail, job_ids = row
    return AuditEntry(
        chat_id,
        user_id,
        command,
        tuple(filter(None, recipients.split(","))),
        Outcome(outcome),
        detail,
        at,
        tuple(filter(None, job_ids.split(","))),
    )


def _inbound(row: Sequence[Any]) -> InboundMessage:
    id_, channel, number, body, chat_id, reply_to = row
    return InboundMessage(id_, Channel(channel), number, body, chat_id, reply_to)


def _one_post(free: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """Of the free rows waiting for a chat (``INBOUND_TAKEN``, by id), those to post now:
    a post already started, alone (its text must not change), else all of them."""
    batches = [row[6] for row in free if row[6] is not None]
    return [row for row in free if row[6] == min(batches)] if batches else list(free)


def _taken(rows: Sequence[Sequence[Any]]) -> Taken:
    if not rows:
        return Taken(())
    _, _, _, _, _, _, _, parts_done, maybe_sent, first_id = rows[0]
    progress = PostProgress(int(parts_done), bool(maybe_sent), first_id)
    return Taken(tuple(_inbound(row[:6]) for row in rows), progress)


def _marks(ids: Sequence[int]) -> str:
    """``?, ?, ?``: one placeholder per id, for ``id IN (...)``."""
    return ", ".join("?" * len(ids))


async def _drop_expired(connection: Connection, table: str, now: float) -> int:
    statement, kept_s = KEPT[table]
    return await connection.execute(statement, now - kept_s)


async def _record(
    connection: Connection, update_id: int, owner: str, payload: str, now: float
) -> bool:
    """Journal an update (in the caller's transaction, if any); False when it was seen
    before. Ids past their keep go first, so an id seen again after it is new."""
    await _drop_expired(connection, "updates", now)
    inserted = await connection.execute(
        "INSERT INTO updates (update_id, received, owner, payload)"
        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        update_id, now, owner, payload,
    )  # fmt: skip
    return inserted > 0


async def _lease_held(connection: Connection, holder: str, term: int) -> bool:
    """In the caller's transaction: ``holder``'s lease ``term`` is still the lease, by the
    database's clock. FOR SHARE: a standby's takeover (an UPDATE of this row) waits for
    the transaction to commit, so its recovery, which runs after the takeover, sees what
    was written in it."""
    held = await connection.fetchone(
        "SELECT 1 FROM poller_lease WHERE id = 1 AND holder = ? AND term = ?"
        f" AND expires > {DB_NOW} FOR SHARE",
        holder, term,
    )  # fmt: skip
    return held is not None


class SqlStorage:
    """The bot's state. Every method is safe to call concurrently from the event loop."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._free_inbound = (
            f"SELECT {INBOUND_TAKEN} FROM inbound WHERE posted IS NULL AND chat_id = ?"
            " AND (claimed_until IS NULL OR claimed_until < ?)"
            f" ORDER BY id{driver.dialect.skip_locked}"
        )

    @classmethod
    async def open(cls, driver: Driver) -> SqlStorage:
        """Create or migrate the schema, then serve from ``driver`` (closed on failure)."""
        try:
            await migrate(driver)
        except BaseException:
            await driver.aclose()
            raise
        return cls(driver)

    async def free_dead_leases(self) -> None:
        """For the poster starting on SQLite, where one serving process owns the file:
        what an earlier process had taken to post and did not finish (it died) is free
        to post again. Not done on opening: an ``exec`` or ``check`` beside a running
        bot must not take the leases of the poster that is running."""
        if self._driver.dialect.one_process:
            await self._driver.execute(
                "UPDATE inbound SET claimed_until = NULL, holder = NULL WHERE posted IS NULL"
            )

    @property
    def driver(self) -> Driver:
        """For the storage layer's other areas (e.g. paging), written over the same driver."""
        return self._driver

    async def aclose(self) -> None:
        await self._driver.aclose()

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the storage answers within 2 s (/healthz)."""
        try:
            async with asyncio.timeout(2):
                await self._driver.fetchone("SELECT 1")
        except TimeoutError:
            raise StorageUnavailable("the database did not answer within 2 s") from None

    async def claim_poller(self, holder: str, ttl_s: float) -> int | None:
        """Take the poller lease, or renew it, for ``ttl_s`` by the database's clock: its
        term (a fencing number that grows whenever the holder changes), or None while
        another holder's lease runs."""
        if self._driver.dialect.one_process:
            return 1  # one process owns the database: always the poller, in one term
        row = await self._driver.fetchone(
            "INSERT INTO poller_lease AS lease (id, holder, term, expires)"
            f" VALUES (1, ?, 1, {DB_NOW} + ?)"
            " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
            " expires = excluded.expires,"
            " term = lease.term + CASE WHEN lease.holder = excluded.holder THEN 0 ELSE 1 END"
            f" WHERE lease.holder = excluded.holder OR lease.expires <= {DB_NOW}"
            " RETURNING term",
            holder, float(ttl_s),
        )  # fmt: skip
        return None if row is None else int(row[0])

    async def release_poller(self, holder: str) -> None:
        """End ``holder``'s lease now (a clean shutdown): a standby takes over at once."""
        if not self._driver.dialect.one_process:
            await self._driver.execute(
                "UPDATE poller_lease SET expires = 0 WHERE holder = ?", holder
            )

    async def prune(self, now: float) -> int:
        """Drop every row kept past its time (``KEPT``); how many went."""
        async with self._driver.transaction() as connection:
            return sum([await _drop_expired(connection, table, now) for table in KEPT])

    # -- audit ----------------------------------------------------------------------------

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        await self._driver.executemany(
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [audit_row(e) for e in entries],
        )

    async def recent_audit(self, count: int, user_id: int | None) -> list[AuditEntry]:
        mine = "" if user_id is None else " WHERE user_id = ?"
        args = (count,) if user_id is None else (user_id, count)
        rows = await self._driver.fetch(
            f"SELECT {AUDIT_COLUMNS} FROM audit{mine} ORDER BY id DESC LIMIT ?", *args
        )
        return [audit_entry(row) for row in rows]

    # -- schedules --------------------------------------------------------------------------

    async def added_schedules(self) -> list[StoredSchedule]:
        rows = await self._driver.fetch(
            "SELECT name, chat_id, every, command FROM schedules ORDER BY name"
        )
        return [StoredSchedule(*row) for row in rows]

    async def next_schedule_number(self) -> int:
        """1, 2, 3, ... across every replica and restart: a removed name is never reused."""
        row = await self._driver.fetchone(
            "INSERT INTO counters (name, value) VALUES ('schedule', 1)"
            " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value"
        )
        assert row is not None  # an upsert with RETURNING always gives its row
        return int(row[0])

    async def add_schedule(self, schedule: StoredSchedule, created_by: int) -> None:
        await self._driver.execute(
            "INSERT INTO schedules (name, chat_id, every, command, created_by)"
            " VALUES (?, ?, ?, ?, ?)",
            schedule.name, schedule.chat_id, schedule.every, schedule.command, created_by,
        )  # fmt: skip

    async def remove_schedule(self, name: str) -> bool:
        async with self._driver.transaction() as connection:
            for table in ("schedule_runs", "schedule_slots", "schedule_firsts"):
                await connection.execute(f"DELETE FROM {table} WHERE name = ?", name)
            return await connection.execute("DELETE FROM schedules WHERE name = ?", name) > 0

    async def last_runs(self) -> dict[str, LastRun]:
        rows = await self._driver.fetch("SELECT name, last_run, last_reply FROM schedule_runs")
        return {name: LastRun(at, reply) for name, at, reply in rows}

    async def mark_run(self, name: str, at: float, reply: str) -> None:
        await self._driver.execute(
            "INSERT INTO schedule_runs (name, last_run, last_reply) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_run = excluded.last_run,"
            " last_reply = excluded.last_reply",
            name, at, reply,
        )  # fmt: skip

    async def claim_slot(self, name: str, slot: str, now: float) -> bool:
        """True for the one caller, on any replica, that runs schedule ``name`` in ``slot``."""
        await _drop_expired(self._driver, "schedule_slots", now)
        inserted = await self._driver.execute(
            "INSERT INTO schedule_slots (name, slot, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            name, slot, now,
        )  # fmt: skip
        return inserted > 0

    async def first_run(self, name: str, now: float) -> float:
        """When schedule ``name`` first ran (``now`` if never): ``every`` slots count from it."""
        await self._driver.execute(
            "INSERT INTO schedule_firsts (name, first_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            name, now,
        )  # fmt: skip
        row = await self._driver.fetchone(
            "SELECT first_at FROM schedule_firsts WHERE name = ?", name
        )
        # None: removed on another replica in between; the run finds it gone and stops.
        return now if row is None else float(row[0])

    # -- the two-way bridge ------------------------------------------------------------------

    async def record_threads(self, numbers: Sequence[str], thread: Thread, at: float) -> None:
        # One row per number, however often paged (the table is swept by ``prune``).
        await self._driver.executemany(
            "INSERT INTO threads (number, chat_id, message_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (number) DO UPDATE SET chat_id = excluded.chat_id,"
            " message_id = excluded.message_id, at = excluded.at",
            [(n, thread.chat_id, thread.message_id, at) for n in numbers],
        )

    async def accept_inbound(self, arrival: Arrival) -> int | None:
        """Store a message for posting; the chat it goes to, or None for a repeat."""
        # Two replicas given the same delivery at once: one stores it, one sees it.
        # durable: "200 means stored" means on disk
        async with self._driver.transaction(lock=arrival.digest, durable=True) as connection:
            repeated = await connection.fetchone(
                "SELECT 1 FROM inbound WHERE digest = ? AND received > ?",
                arrival.digest, arrival.repeat_after,
            )  # fmt: skip
            if repeated:
                return None
            thread = await connection.fetchone(
                "SELECT chat_id, message_id FROM threads WHERE number = ? AND at > ?",
                arrival.number, arrival.thread_after,
            )  # fmt: skip
            chat_id, reply_to = thread if thread else (arrival.default_chat, None)
            handled = arrival.handled  # stored as posted, without its body
            await connection.execute(
                "INSERT INTO inbound (received, channel, number, body, digest, chat_id,"
                " reply_to, posted) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                arrival.received, arrival.channel.value, arrival.number,
                None if handled else arrival.body, arrival.digest, chat_id, reply_to,
                arrival.received if handled else None,
            )  # fmt: skip
            return int(chat_id)

    async def repeated_inbound(self, digest: str, after: float) -> bool:
        """The same delivery was received after ``after`` (stored or handled)."""
        row = await self._driver.fetchone(
            "SELECT 1 FROM inbound WHERE digest = ? AND received > ?", digest, after
        )
        return row is not None

    async def waiting_chats(self) -> set[int]:
        """Chats that have inbound messages not yet posted."""
        rows = await self._driver.fetch("SELECT DISTINCT chat_id FROM inbound WHERE posted IS NULL")
        return {row[0] for row in rows}

    async def claim_inbound(self, chat_id: int, now: float, lease_s: float, holder: str) -> Taken:
        """Take, for ``holder``, what waits for ``chat_id`` and is not taken (or whose
        taker's lease ran out): no two callers, on any replica, get the same message while
        a lease runs. A post already started comes alone, with its progress."""
        async with self._driver.transaction() as connection:
            rows = _one_post(await connection.fetch(self._free_inbound, chat_id, now))
            if rows:
                ids = [row[0] for row in rows]
                await connection.execute(
                    f"UPDATE inbound SET claimed_until = ?, holder = ? WHERE id IN ({_marks(ids)})",
                    now + lease_s, holder, *ids,
                )  # fmt: skip
        return _taken(rows)

    async def lease_inbound(self, ids: Sequence[int], holder: str, until: float | None) -> bool:
        """Extend ``holder``'s lease on taken messages (a slow post), or give them back
        (None). False when ``holder`` no longer holds them (another replica took them
        after the lease ran out, or they are posted): then it must stop posting them."""
        keeper = holder if until is not None else None
        return await self._held_update(ids, holder, "claimed_until = ?, holder = ?", until, keeper)

    async def record_progress(
        self, ids: Sequence[int], holder: str, progress: PostProgress
    ) -> bool:
        """Keep how far the post of ``ids`` got: before each part is sent (it may be in the
        chat from then on) and after a part that surely failed. False, nothing written,
        unless ``holder`` still holds them."""
        return await self._held_update(
            ids, holder, "parts_done = ?, maybe_sent = ?, post_id = ?, batch = ?",
            progress.parts_done, progress.maybe_sent, progress.first_id,
            min(ids) if progress.started else None,
        )  # fmt: skip

    async def _held_update(
        self, ids: Sequence[int], holder: str, assignments: str, *values: object
    ) -> bool:
        """``SET assignments`` on ``ids`` if ``holder`` holds them, unposted. One claim
        takes a post's messages together, so they are held all or none."""
        changed = await self._driver.execute(
            f"UPDATE inbound SET {assignments} WHERE id IN ({_marks(ids)})"
            " AND holder = ? AND posted IS NULL",
            *values, *ids, holder,
        )  # fmt: skip
        return changed == len(ids)

    async def mark_posted(self, ids: Sequence[int], post_id: int | None, at: float) -> None:
        """Posted as message ``post_id`` (None: given up, every chat refused it): the
        bodies are dropped, the reference kept. A message already marked keeps its mark
        (another replica posted it first, after this one's lease ran out)."""
        # First, and in one piece that runs even if the poster is cancelled meanwhile (a
        # stop): a post not marked would be posted again.
        await self._driver.executemany(
            "UPDATE inbound SET posted = ?, post_id = ?, body = NULL"
            " WHERE id = ? AND posted IS NULL",
            [(at, post_id, row_id) for row_id in ids],
        )
        await _drop_expired(self._driver, "inbound", at)

    async def move_inbound(self, ids: Sequence[int], from_chat: int, to_chat: int) -> None:
        """Telegram refuses ``from_chat`` for good: the messages go to ``to_chat``, from
        scratch and under no message (a message id is the old chat's), free to take; the
        threads into ``from_chat`` are dropped, so later answers go to ``inbound.chat``."""
        async with self._driver.transaction() as connection:
            await connection.execute(
                "UPDATE inbound SET chat_id = ?, reply_to = NULL, batch = NULL, parts_done = 0,"
                " maybe_sent = FALSE, post_id = NULL, claimed_until = NULL, holder = NULL"
                f" WHERE id IN ({_marks(ids)}) AND posted IS NULL",
                to_chat, *ids,
            )  # fmt: skip
            await connection.execute("DELETE FROM threads WHERE chat_id = ?", from_chat)

    async def find_post(self, chat_id: int, post_id: int) -> PostRef | None:
        rows = await self._driver.fetch(
            "SELECT channel, number FROM inbound WHERE chat_id = ? AND post_id = ?",
            chat_id, post_id,
        )  # fmt: skip
        if not rows:
            return None
        return PostRef(Channel(rows[0][0]), rows[0][1], merged=len(rows) > 1)

    # -- confirmations -----------------------------------------------------------------------

    async def save_prompt(self, prompt: StoredPrompt) -> None:
        """Keep a prompt until it is claimed; prompts left over an hour are dropped."""
        await _drop_expired(self._driver, "prompts", prompt.created)
        await self._driver.execute(
            f"INSERT INTO prompts ({PROMPT_COLUMNS}) VALUES (?, ?, ?, ?)",
            prompt.token, prompt.created, prompt.user_id, prompt.request,
        )  # fmt: skip

    async def peek_prompt(self, token: str) -> StoredPrompt | None:
        row = await self._driver.fetchone(
            f"SELECT {PROMPT_COLUMNS} FROM prompts WHERE token = ?", token
        )
        return StoredPrompt(*row) if row else None

    async def claim_prompt(self, token: str) -> StoredPrompt | None:
        """Take the prompt away, atomically: of two presses, only one gets it."""
        row = await self._driver.fetchone(
            f"DELETE FROM prompts WHERE token = ? RETURNING {PROMPT_COLUMNS}", token
        )
        return StoredPrompt(*row) if row else None

    # -- the update journal ------------------------------------------------------------------

    async def record_update(self, update_id: int, owner: str, payload: str, now: float) -> bool:
        """Journal an update before it is handled; False when it was seen before."""
        return await _record(self._driver, update_id, owner, payload, now)

    async def record_polled_update(
        self, update_id: int, owner: str, payload: str, now: float, term: int
    ) -> bool | None:
        """``record_update`` by the poller ``owner`` under lease ``term``, atomically with a
        check that the lease is still its own and unexpired by the database's clock: None
        (nothing recorded) when it is not, so a poller that lost the role records nothing."""
        if self._driver.dialect.one_process:
            return await self.record_update(update_id, owner, payload, now)  # always the poller
        async with self._driver.transaction() as connection:
            if not await _lease_held(connection, owner, term):
                return None
            return await _record(connection, update_id, owner, payload, now)

    async def claim_journal_entry(self, update_id: int, holder: str, term: int) -> bool:
        """Take an unfinished entry to recover it, as the poller ``holder`` under lease
        ``term`` (checked like ``record_polled_update``): True for the one claim, on any
        replica and in any round of this term, that may answer or rerun it. False when the
        lease is not this one's, the entry is done, or this term claimed it already."""
        claimant = f"{holder}:{term}"
        claim = "UPDATE updates SET owner = ? WHERE update_id = ? AND NOT done AND owner <> ?"
        if self._driver.dialect.one_process:  # always the poller
            return await self._driver.execute(claim, claimant, update_id, claimant) > 0
        async with self._driver.transaction() as connection:
            if not await _lease_held(connection, holder, term):
                return False
            return await connection.execute(claim, claimant, update_id, claimant) > 0

    async def finish_update(self, update_id: int) -> None:
        """The update is handled: its payload is dropped, its id kept (dedupe)."""
        await self._driver.execute(
            "UPDATE updates SET done = TRUE, payload = NULL WHERE update_id = ?", update_id
        )

    async def unfinished_updates(self, not_owner: str, now: float) -> list[JournalEntry]:
        """Updates another replica recorded in the last 24 hours and did not finish (it
        died); older ones are never replayed."""
        rows = await self._driver.fetch(
            "SELECT update_id, owner, payload, received FROM updates"
            " WHERE NOT done AND owner <> ? AND received > ? ORDER BY update_id",
            not_owner, now - REPLAY_WITHIN_S,
        )  # fmt: skip
        return [JournalEntry(*row) for row in rows]
