"""The one schema of both databases, as a list of migrations, and how it is applied.

``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; the version reached
is the one row of ``schema_version``, on SQLite as on PostgreSQL. ``migrate`` runs at
start in one transaction under the ``schema`` lock, so replicas that start together
apply each migration once, and a migration that fails leaves the database as it was.
Each text is written once: SQLite (3.35+) takes ``BIGINT``, ``DOUBLE PRECISION``,
``BOOLEAN``/``TRUE``, partial indexes and ``RETURNING`` as PostgreSQL does; the only
token is ``{id}``, a key the database assigns (its spelling is ``Dialect.id_column``).

A new area appends its tables as a new migration; a migration already released is
never edited (databases out there are past it).
"""

from __future__ import annotations

from bot.storage.driver import Connection, Dialect, Driver

MIGRATIONS: list[str] = [
    # 1: the tables as they were before versions were kept on SQLite (IF NOT EXISTS: a
    # file from then is adopted as it is, after LEGACY_COLUMNS).
    """
    CREATE TABLE IF NOT EXISTS audit (
        id {id},
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
        id {id},
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
    )
    """,
    # 2: one shape of the indexes the two schemas had drifted on (SQLite's inbound_pending
    # was another index; updates_unfinished was PostgreSQL's only), and those pruning reads.
    """
    DROP INDEX IF EXISTS inbound_pending;
    CREATE INDEX inbound_pending ON inbound (chat_id, id) WHERE posted IS NULL;
    CREATE INDEX IF NOT EXISTS updates_unfinished ON updates (update_id) WHERE NOT done;
    CREATE INDEX updates_received ON updates (received);
    CREATE INDEX threads_at ON threads (at);
    CREATE INDEX inbound_posted ON inbound (posted) WHERE posted IS NOT NULL
    """,
    # 3: the poller lease (PostgreSQL's election: one row, expiry by the database's clock)
    # and counters (chat-added schedule names are never given twice).
    """
    CREATE TABLE IF NOT EXISTS poller_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        term BIGINT NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )
    """,
    # 4: who holds the lease on an inbound message, and how far its post got (the parts
    # done, the first part's id in post_id, whether the part in flight may be in the chat;
    # batch: the messages of a post that started stay one post).
    """
    ALTER TABLE inbound ADD COLUMN holder TEXT;
    ALTER TABLE inbound ADD COLUMN batch BIGINT;
    ALTER TABLE inbound ADD COLUMN parts_done INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbound ADD COLUMN maybe_sent BOOLEAN NOT NULL DEFAULT FALSE
    """,
    # 5: incident paging (bot/storage/paging.py): incidents, the sends they owe (claimed
    # before they are made), the posts they owe the chat.
    """
    CREATE TABLE incidents (
        number {id},
        grp TEXT NOT NULL,
        is_open BOOLEAN NOT NULL,
        due DOUBLE PRECISION,
        opened_at DOUBLE PRECISION NOT NULL,
        chat_id BIGINT NOT NULL,
        post_id BIGINT,
        state TEXT NOT NULL
    );
    CREATE UNIQUE INDEX incidents_open_group ON incidents (grp) WHERE is_open;
    CREATE INDEX incidents_due ON incidents (due) WHERE due IS NOT NULL;
    CREATE TABLE incident_sends (
        id {id},
        incident BIGINT NOT NULL,
        kind TEXT NOT NULL,
        step INTEGER NOT NULL,
        written TEXT NOT NULL,
        number TEXT NOT NULL,
        gateway_group TEXT,
        channel TEXT NOT NULL,
        body TEXT,
        state TEXT NOT NULL,
        owner TEXT,
        lease_until DOUBLE PRECISION,
        outcome TEXT,
        created DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX incident_sends_state ON incident_sends (state, id);
    CREATE INDEX incident_sends_number ON incident_sends (number, incident);
    CREATE TABLE incident_posts (
        id {id},
        incident BIGINT NOT NULL,
        chat_id BIGINT NOT NULL,
        opening BOOLEAN NOT NULL,
        body TEXT NOT NULL,
        line TEXT NOT NULL,
        silence BOOLEAN NOT NULL,
        posted DOUBLE PRECISION,
        post_id BIGINT,
        claimed_until DOUBLE PRECISION,
        maybe_sent BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX incident_posts_waiting ON incident_posts (id) WHERE posted IS NULL
    """,
]

# Columns a SQLite file written before versions were kept may lack (added as it was read).
LEGACY_COLUMNS = (
    ("audit", "job_ids", "TEXT NOT NULL DEFAULT ''"),
    ("inbound", "claimed_until", "DOUBLE PRECISION"),
)


def statements(text: str, dialect: Dialect) -> list[str]:
    """The statements of one migration, in the dialect's spelling."""
    spelled = text.replace("{id}", dialect.id_column)
    return [statement.strip() for statement in spelled.split(";") if statement.strip()]


async def migrate(driver: Driver) -> int:
    """Bring the database to the latest version; the version it was at before."""
    async with driver.transaction(lock="schema") as connection:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
        )
        row = await connection.fetchone("SELECT max(version) FROM schema_version")
        found = row[0] if row is not None else None
        if found is None:  # a new database, or a SQLite file from before versions
            await _adopt(connection, driver.dialect)
            await connection.execute("INSERT INTO schema_version (version) VALUES (0)")
        start = found or 0
        for text in MIGRATIONS[start:]:
            for statement in statements(text, driver.dialect):
                await connection.execute(statement)
        if start < len(MIGRATIONS):
            await connection.execute("UPDATE schema_version SET version = ?", len(MIGRATIONS))
    return start


async def _adopt(connection: Connection, dialect: Dialect) -> None:
    """Add the columns an existing table lacks (a table not there yet: migration 1)."""
    for table, column, kind in LEGACY_COLUMNS:
        columns = {row[0] for row in await connection.fetch(dialect.columns_sql, table)}
        if columns and column not in columns:
            await connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
