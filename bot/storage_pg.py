"""``Storage`` in PostgreSQL, shared by several replicas of the bot (``database.url``).

Why asyncpg: it is asyncio-native (no thread hop per statement, unlike the SQLite
worker), fast, and keeps a pool. The poller election is a lease row (``poller_lease``)
whose expiry is set by the database's own clock, so no replica's clock decides who
polls (see ``bot.replicas``). Every promise of ``Storage`` that matters
across replicas is made by the database, not by the caller: a prompt is claimed with
``DELETE … RETURNING``, a schedule slot and an update id with a primary key, inbound
messages with ``FOR UPDATE SKIP LOCKED`` under a lease, a repeated delivery under a
transaction-scoped advisory lock. The schema is created (and migrated) at start under
an advisory lock, so replicas that start together do not trip over each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.errors import StorageUnavailable
from bot.storage import (
    AUDIT_COLUMNS,
    NEXT_SCHEDULE_NUMBER,
    PROMPTS_KEPT_S,
    SLOTS_KEPT_S,
    UPDATES_KEPT_S,
    Arrival,
    AuditEntry,
    InboundMessage,
    JournalEntry,
    LastRun,
    PostRef,
    StoredPrompt,
    StoredSchedule,
    Thread,
    audit_entry,
    audit_row,
)

SCHEMA_LOCK = 0x57_4D_42_31  # advisory lock ids: "WMB1" — schema creation
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
    claimed_until DOUBLE PRECISION
);
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
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS poller_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
"""
# The database's clock, in seconds since the epoch: the one clock a lease is judged by.
_DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
# Migrations from a version to the next, applied in order under the schema lock.
_MIGRATIONS: dict[int, str] = {}


class PostgresStorage:
    """``Storage`` on a pool of asyncpg connections, plus the poller lease."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url

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
        await self._pool.close()

    # -- the poller election ------------------------------------------------------------

    async def claim_poller(self, holder: str, ttl_s: float) -> int | None:
        term: int | None = await self._pool.fetchval(
            "INSERT INTO poller_lease AS lease (id, holder, term, expires)"
            f" VALUES (1, $1, 1, {_DB_NOW} + $2::float8)"
            " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
            " expires = excluded.expires,"
            " term = lease.term + CASE WHEN lease.holder = excluded.holder THEN 0 ELSE 1 END"
            f" WHERE lease.holder = excluded.holder OR lease.expires <= {_DB_NOW}"
            " RETURNING term",
            holder,
            ttl_s,
        )
        return term

    async def release_poller(self, holder: str) -> None:
        await self._pool.execute("UPDATE poller_lease SET expires = 0 WHERE holder = $1", holder)

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

    async def next_schedule_number(self) -> int:
        number: int = await self._pool.fetchval(NEXT_SCHEDULE_NUMBER)
        return number

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

    async def claim_inbound(self, chat_id: int, now: float, lease_s: float) -> list[InboundMessage]:
        rows = await self._pool.fetch(
            "UPDATE inbound SET claimed_until = $3 WHERE id IN ("
            " SELECT id FROM inbound WHERE posted IS NULL AND chat_id = $1"
            " AND (claimed_until IS NULL OR claimed_until < $2)"
            " ORDER BY id FOR UPDATE SKIP LOCKED)"
            " RETURNING id, channel, number, body, chat_id, reply_to",
            chat_id,
            now,
            now + lease_s,
        )
        return sorted((InboundMessage(*row) for row in rows), key=lambda m: m.id)

    async def lease_inbound(self, ids: Sequence[int], until: float | None) -> None:
        await self._pool.execute(
            "UPDATE inbound SET claimed_until = $2 WHERE id = ANY($1::bigint[])", list(ids), until
        )

    async def mark_posted(self, ids: Sequence[int], post_id: int, at: float) -> None:
        await self._pool.execute(
            "UPDATE inbound SET posted = $2, post_id = $3, body = NULL"
            " WHERE id = ANY($1::bigint[])",
            list(ids),
            at,
            post_id,
        )

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
            return await _record(connection, update_id, owner, payload, now)

    async def record_polled_update(
        self, update_id: int, owner: str, payload: str, now: float, term: int
    ) -> bool | None:
        async with self._pool.acquire() as connection, connection.transaction():
            # FOR SHARE: a standby's takeover (an UPDATE of this row) waits for this commit,
            # so its recovery, which runs after the takeover, sees what was recorded here.
            held = await connection.fetchval(
                "SELECT 1 FROM poller_lease WHERE id = 1 AND holder = $1 AND term = $2"
                f" AND expires > {_DB_NOW} FOR SHARE",
                owner,
                term,
            )
            if not held:
                return None
            return await _record(connection, update_id, owner, payload, now)

    async def finish_update(self, update_id: int) -> None:
        await self._pool.execute(
            "UPDATE updates SET done = TRUE, payload = NULL WHERE update_id = $1", update_id
        )

    async def unfinished_updates(self, not_owner: str) -> list[JournalEntry]:
        rows = await self._pool.fetch(
            "SELECT update_id, owner, payload, received FROM updates"
            " WHERE NOT done AND owner <> $1 ORDER BY update_id",
            not_owner,
        )
        return [JournalEntry(*row) for row in rows]


async def _record(
    connection: PoolConnectionProxy[asyncpg.Record],
    update_id: int,
    owner: str,
    payload: str,
    now: float,
) -> bool:
    """Journal an update in the caller's transaction; False when it was seen before."""
    await connection.execute("DELETE FROM updates WHERE received < $1", now - UPDATES_KEPT_S)
    status = await connection.execute(
        "INSERT INTO updates (update_id, received, owner, payload)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        update_id,
        now,
        owner,
        payload,
    )
    return bool(status == "INSERT 0 1")
