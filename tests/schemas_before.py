"""The schemas main wrote before issue 16, verbatim (bot/storage.py, bot/storage_pg.py at
commit 624e648): the upgrade tests build a database of then from them."""

SQLITE_BEFORE = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    chat_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    recipients TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    job_ids TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user_id, id);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    every TEXT NOT NULL,
    command TEXT NOT NULL,
    created_by INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    name TEXT PRIMARY KEY,
    last_run REAL NOT NULL,
    last_reply TEXT
);
CREATE TABLE IF NOT EXISTS threads (
    number TEXT PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    channel TEXT NOT NULL,
    number TEXT NOT NULL,
    body TEXT,
    digest TEXT NOT NULL,
    chat_id INTEGER NOT NULL,
    reply_to INTEGER,
    posted REAL,
    post_id INTEGER,
    claimed_until REAL
);
CREATE INDEX IF NOT EXISTS inbound_pending ON inbound (posted, chat_id, id);
CREATE INDEX IF NOT EXISTS inbound_digest ON inbound (digest, received);
CREATE INDEX IF NOT EXISTS inbound_post ON inbound (chat_id, post_id);
CREATE TABLE IF NOT EXISTS prompts (
    token TEXT PRIMARY KEY,
    created REAL NOT NULL,
    user_id INTEGER NOT NULL,
    request TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_slots (
    name TEXT NOT NULL,
    slot TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (name, slot)
);
CREATE TABLE IF NOT EXISTS schedule_firsts (
    name TEXT PRIMARY KEY,
    first_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    update_id INTEGER PRIMARY KEY,
    received REAL NOT NULL,
    owner TEXT NOT NULL,
    payload TEXT,
    done INTEGER NOT NULL DEFAULT 0
);
"""

POSTGRES_BEFORE = """
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
"""
