"""``Storage`` in PostgreSQL, shared by several replicas of the bot (``database.url``).

Why asyncpg: it is asyncio-native (no thread hop per statement, unlike the SQLite
worker), fast, keeps a pool, and gives the session-level advisory lock the poller
election needs on a dedicated connection. Every promise of ``Storage`` that matters
across replicas is made by the database, not by the caller: a prompt is claimed with
``DELETE … RETURNING``, a schedule slot and an update id with a primary key, inbound
messages with ``FOR UPDATE SKIP LOCKED`` under a lease, a repeated delivery under a
transaction-scoped advisory lock. The schema is created (and migrated) at start under
an advisory lock, so replicas that start together do not trip over each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.errors import StorageUnavailable
from bot.storage import (
    AUDIT_COLUMNS,
    INBOUND_TAKEN,
    PROMPTS_KEPT_S,
    SLOTS_KEPT_S,
    UPDATES_KEPT_S,
    Arrival,
    AuditEntry,
    JournalEntry,
    LastRun,
    PostProgress,
    PostRef,
    StoredPrompt,
    StoredSchedule,
    Taken,
    Thread,
    audit_entry,
    audit_row,
    pick_post,
    taken_post,
)

Connection = asyncpg.Connection | PoolConnectionProxy  # a session, or one lent by the pool
SCHEMA_LOCK = 0x57_4D_42_31  # advisory lock ids: "WMB1" — schema creation
POLLER_LOCK = 0x57_4D_42_32  # "WMB2" — the one replica that polls Telegram
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    chat_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    command TEXT NOT NULL,
    recipients TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    job_ids TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user_id, id);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    every TEXT NOT NULL,
    command TEXT NOT NULL,
    created_by BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    name TEXT PRIMARY KEY,
    last_run DOUBLE PRECISION NOT NULL,
    last_reply TEXT
);
CREATE TABLE IF NOT EXISTS schedule_slots (
    name TEXT NOT NULL,
    slot TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, slot)
);
CREATE TABLE IF NOT EXISTS schedule_firsts (
    name TEXT PRIMARY KEY,
    first_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS threads (
    number TEXT PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS inbound (
    id BIGSERIAL PRIMARY KEY,
    received DOUBLE PRECISION NOT NULL,
    channel TEXT NOT NULL,
    number TEXT NOT NULL,
    body TEXT,
    digest TEXT NOT NULL,
    chat_id BIGINT NOT NULL,
    reply_to BIGINT,
    posted DOUBLE PRECISION,
    post_id BIGINT,
    claimed_until DOUBLE PRECISION,
    holder TEXT,
    batch BIGINT,
    parts_done INTEGER NOT NULL DEFAULT 0,
    maybe_sent BOOLEAN NOT NULL DEFAULT FALSE
);
-- Added after the first release: who holds a lease, and how far a post got.
ALTER TABLE inbound ADD COLUMN IF NOT EXISTS holder TEXT;
ALTER TABLE inbound ADD COLUMN IF NOT EXISTS batch BIGINT;
ALTER TABLE inbound ADD COLUMN IF NOT EXISTS parts_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbound ADD COLUMN IF NOT EXISTS maybe_sent BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS inbound_pending ON inbound (chat_id, id) WHERE posted IS NULL;
CREATE INDEX IF NOT EXISTS inbound_digest ON inbound (digest, received);
CREATE INDEX IF NOT EXISTS inbound_post ON inbound (chat_id, post_id);
CREATE TABLE IF NOT EXISTS prompts (
    token TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    user_id BIGINT NOT NULL,
    request TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    update_id BIGINT PRIMARY KEY,
    received DOUBLE PRECISION NOT NULL,
    owner TEXT NOT NULL,
    payload TEXT,
    done BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS updates_unfinished ON updates (update_id) WHERE NOT done;
"""
# Migrations from a version to the next, applied in order under the schema lock.
_MIGRATIONS: dict[int, str] = {}


class PostgresStorage:
    """``Storage`` on a pool of asyncpg connections, plus the poller election."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._session: asyncpg.Connection | None = None  # holds the poller lock
        self._leading = False

    @classmethod
    async def connect(cls, url: str) -> PostgresStorage:
        """Open the pool and create or migrate the schema (safe with replicas starting)."""
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=10, command_timeout=30, timeout=15
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            reason = type(exc).__name__
            raise StorageUnavailable(
                f"database.url: cannot connect to PostgreSQL ({reason})"
            ) from None
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await connection.execute(_SCHEMA)
            version = await connection.fetchval("SELECT max(version) FROM schema_version")
            if version is None:
                await connection.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION
                )
                version = SCHEMA_VERSION
            for step in range(version, SCHEMA_VERSION):
                await connection.execute(_MIGRATIONS[step])
                await connection.execute("UPDATE schema_version SET version = $1", step + 1)
        return cls(pool, url)

    async def aclose(self) -> None:
        await self._drop_session()
        await self._pool.close()

    # -- the poller election ------------------------------------------------------------

    async def try_poller(self) -> bool:
        """True while this replica holds the poller lock, taken on a session of its own.

        The lock lives as long as that session: when the process dies, PostgreSQL frees
        it and a standby takes it on its next try. A session that stops answering is
        dropped, and with it the claim to poll.
        """
        try:
            if self._session is None or self._session.is_closed():
                self._session, self._leading = await asyncpg.connect(self._url, timeout=5), False
            if self._leading:
                await self._session.fetchval("SELECT 1", timeout=5)
            else:
                lock = "SELECT pg_try_advisory_lock($1)"
                self._leading = bool(await self._session.fetchval(lock, POLLER_LOCK, timeout=5))
        except (asyncpg.PostgresError, OSError, TimeoutError):
            await self._drop_session()
        return self._leading

    async def _drop_session(self) -> None:
        session, self._session, self._leading = self._session, None, False
        if session is not None:
            with contextlib.suppress(asyncpg.PostgresError, OSError, TimeoutError):
                await session.close(timeout=2)

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1", timeout=2)

    # -- audit ----------------------------------------------------------------------------

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        await self._pool.executemany(
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [audit_row(e) for e in entries],
        )

    async def recent_audit(self, count: int, user_id: int | None) -> list[AuditEntry]:
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        args: tuple[int, ...] = (count,)
        if user_id is not None:
            sql += " WHERE user_id = $2"
            args = (count, user_id)
        rows = await self._pool.fetch(sql + " ORDER BY id DESC LIMIT $1", *args)
        return [audit_entry(row) for row in rows]

    # -- schedules --------------------------------------------------------------------------

    async def added_schedules(self) -> list[StoredSchedule]:
        rows = await self._pool.fetch(
            "SELECT name, chat_id, every, command FROM schedules ORDER BY name"
        )
        return [StoredSchedule(*row) for row in rows]

    async def add_schedule(self, schedule: StoredSchedule, created_by: int) -> None:
        await self._pool.execute(
            "INSERT INTO schedules (name, chat_id, every, command, created_by)"
            " VALUES ($1, $2, $3, $4, $5)",
            schedule.name,
            schedule.chat_id,
            schedule.every,
            schedule.command,
            created_by,
        )

    async def remove_schedule(self, name: str) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            for table in ("schedule_runs", "schedule_slots", "schedule_firsts"):
                await connection.execute(f"DELETE FROM {table} WHERE name = $1", name)
            status = await connection.execute("DELETE FROM schedules WHERE name = $1", name)
        return bool(status != "DELETE 0")

    async def last_runs(self) -> dict[str, LastRun]:
        rows = await self._pool.fetch("SELECT name, last_run, last_reply FROM schedule_runs")
        return {row["name"]: LastRun(row["last_run"], row["last_reply"]) for row in rows}

    async def mark_run(self, name: str, at: float, reply: str) -> None:
        await self._pool.execute(
            "INSERT INTO schedule_runs (name, last_run, last_reply) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET last_run = excluded.last_run,"
            " last_reply = excluded.last_reply",
            name,
            at,
            reply,
        )

    async def claim_slot(self, name: str, slot: str, now: float) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM schedule_slots WHERE at < $1", now - SLOTS_KEPT_S)
            status = await connection.execute(
                "INSERT INTO schedule_slots (name, slot, at) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                name,
                slot,
                now,
            )
        return bool(status == "INSERT 0 1")

    async def first_run(self, name: str, now: float) -> float:
        await self._pool.execute(
            "INSERT INTO schedule_firsts (name, first_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            name,
            now,
        )
        first: float = await self._pool.fetchval(
            "SELECT first_at FROM schedule_firsts WHERE name = $1", name
        )
        return first

    # -- the two-way bridge ------------------------------------------------------------------

    async def record_threads(self, numbers: Sequence[str], thread: Thread, at: float) -> None:
        await self._pool.executemany(
            "INSERT INTO threads (number, chat_id, message_id, at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (number) DO UPDATE SET chat_id = excluded.chat_id,"
            " message_id = excluded.message_id, at = excluded.at",
            [(n, thread.chat_id, thread.message_id, at) for n in numbers],
        )

    async def accept_inbound(self, arrival: Arrival) -> int | None:
        async with self._pool.acquire() as connection, connection.transaction():
            # Two replicas given the same delivery at once: one stores it, one sees it.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", arrival.digest)
            repeated = await connection.fetchval(
                "SELECT 1 FROM inbound WHERE digest = $1 AND received > $2",
                arrival.digest,
                arrival.repeat_after,
            )
            if repeated:
                return None
            thread = await connection.fetchrow(
                "SELECT chat_id, message_id FROM threads WHERE number = $1 AND at > $2",
                arrival.number,
                arrival.thread_after,
            )
            chat_id, reply_to = (thread[0], thread[1]) if thread else (arrival.default_chat, None)
            await connection.execute(
                "INSERT INTO inbound (received, channel, number, body, digest, chat_id,"
                " reply_to) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                arrival.received, arrival.channel, arrival.number, arrival.body,
                arrival.digest, chat_id, reply_to,
            )  # fmt: skip
            return int(chat_id)

    async def waiting_chats(self) -> set[int]:
        rows = await self._pool.fetch("SELECT DISTINCT chat_id FROM inbound WHERE posted IS NULL")
        return {row[0] for row in rows}

    async def claim_inbound(self, chat_id: int, now: float, lease_s: float, holder: str) -> Taken:
        async with self._pool.acquire() as connection, connection.transaction():
            free = await connection.fetch(
                f"SELECT {INBOUND_TAKEN} FROM inbound WHERE posted IS NULL AND chat_id = $1"
                " AND (claimed_until IS NULL OR claimed_until < $2)"
                " ORDER BY id FOR UPDATE SKIP LOCKED",
                chat_id,
                now,
            )
            rows = pick_post([tuple(row) for row in free])
            await connection.execute(
                "UPDATE inbound SET claimed_until = $2, holder = $3 WHERE id = ANY($1::bigint[])",
                [row[0] for row in rows],
                now + lease_s,
                holder,
            )
        return taken_post(rows)

    async def lease_inbound(self, ids: Sequence[int], holder: str, until: float | None) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            if not await _held(connection, ids, holder):
                return False
            await connection.execute(
                "UPDATE inbound SET claimed_until = $2, holder = $3 WHERE id = ANY($1::bigint[])",
                list(ids),
                until,
                holder if until is not None else None,
            )
        return True

    async def record_progress(
        self, ids: Sequence[int], holder: str, progress: PostProgress
    ) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            if not await _held(connection, ids, holder):
                return False
            await connection.execute(
                "UPDATE inbound SET parts_done = $2, maybe_sent = $3, post_id = $4, batch = $5"
                " WHERE id = ANY($1::bigint[])",
                list(ids),
                progress.parts_done,
                progress.maybe_sent,
                progress.first_id,
                min(ids) if progress.started else None,
            )
        return True

    async def mark_posted(self, ids: Sequence[int], post_id: int | None, at: float) -> None:
        await self._pool.execute(
            "UPDATE inbound SET posted = $2, post_id = $3, body = NULL"
            " WHERE id = ANY($1::bigint[]) AND posted IS NULL",
            list(ids),
            at,
            post_id,
        )

    async def move_inbound(self, ids: Sequence[int], from_chat: int, to_chat: int) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "UPDATE inbound SET chat_id = $2, reply_to = NULL, batch = NULL,"
                " parts_done = 0, maybe_sent = FALSE, post_id = NULL, claimed_until = NULL,"
                " holder = NULL WHERE id = ANY($1::bigint[]) AND posted IS NULL",
                list(ids),
                to_chat,
            )
            await connection.execute("DELETE FROM threads WHERE chat_id = $1", from_chat)

    async def find_post(self, chat_id: int, post_id: int) -> PostRef | None:
        rows = await self._pool.fetch(
            "SELECT channel, number FROM inbound WHERE chat_id = $1 AND post_id = $2",
            chat_id,
            post_id,
        )
        if not rows:
            return None
        return PostRef(rows[0][0], rows[0][1], merged=len(rows) > 1)

    # -- confirmations, the update journal -------------------------------------------------

    async def save_prompt(self, prompt: StoredPrompt) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            stale = prompt.created - PROMPTS_KEPT_S  # never answered, never expired (a crash)
            await connection.execute("DELETE FROM prompts WHERE created < $1", stale)
            await connection.execute(
                "INSERT INTO prompts (token, created, user_id, request) VALUES ($1, $2, $3, $4)",
                prompt.token,
                prompt.created,
                prompt.user_id,
                prompt.request,
            )

    async def peek_prompt(self, token: str) -> StoredPrompt | None:
        row = await self._pool.fetchrow(
            "SELECT token, created, user_id, request FROM prompts WHERE token = $1", token
        )
        return StoredPrompt(*row) if row else None

    async def claim_prompt(self, token: str) -> StoredPrompt | None:
        row = await self._pool.fetchrow(
            "DELETE FROM prompts WHERE token = $1 RETURNING token, created, user_id, request",
            token,
        )
        return StoredPrompt(*row) if row else None

    async def record_update(self, update_id: int, owner: str, payload: str, now: float) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM updates WHERE received < $1", now - UPDATES_KEPT_S
            )
            status = await connection.execute(
                "INSERT INTO updates (update_id, received, owner, payload)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                update_id,
                now,
                owner,
                payload,
            )
        return bool(status == "INSERT 0 1")

    async def finish_update(self, update_id: int) -> None:
        await self._pool.execute(
            "UPDATE updates SET done = TRUE, payload = NULL WHERE update_id = $1", update_id
        )

    async def unfinished_updates(self, not_owner: str) -> list[JournalEntry]:
        rows = await self._pool.fetch(
            "SELECT update_id, owner, payload FROM updates"
            " WHERE NOT done AND owner <> $1 ORDER BY update_id",
            not_owner,
        )
        return [JournalEntry(*row) for row in rows]


async def _held(connection: Connection, ids: Sequence[int], holder: str) -> bool:
    """``holder`` holds every one of ``ids``, none posted yet; locks them till commit."""
    held = await connection.fetch(
        "SELECT id FROM inbound WHERE id = ANY($1::bigint[]) AND holder = $2"
        " AND posted IS NULL FOR UPDATE",
        list(ids),
        holder,
    )
    return len(held) == len(ids)
