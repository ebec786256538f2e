"""Shared fixtures: the loopback fakes and the real bot running against them."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import io
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from tenacity import wait_none
from tenacity.wait import wait_base

from bot.config import Config, load_config
from bot.lifecycle import Lifecycle
from bot.logs import configure_logging
from bot.pdf import PdfPolling
from bot.runtime import Runtime, open_runtime
from bot.telegram_app import TelegramFrontend
from tests.fakes import FakeTelegram, FakeWhatsMate, HttpRequest, Sent
from tests.postgres import PostgresServer

ADMIN, USER, STRANGER = 1001, 1002, 6666
TEAM = -100500
OTHER_CHAT = -100999
HEADERS = {
    "x-wm-client-id": "ops@example.com",
    "x-wm-client-secret": "s3cr3t-wm",
    "content-type": "application/json",
}


def assert_call(request: HttpRequest, method: str, path: str, body: object = None) -> None:
    """``request`` is ``method path`` with WhatsMate's headers (and exactly ``body``)."""
    assert (request.method, request.path) == (method, path)
    for name, value in HEADERS.items():
        assert request.headers[name] == value
    if body is not None:
        assert request.json() == body


ENV = {**os.environ, "TEST_TG_TOKEN": "123456:TEST-telegram-token", "PYTHONUNBUFFERED": "1"}


def pytest_sessionstart(session: pytest.Session) -> None:
    """The bot processes the tests start import the package: byte-compile it once, as an
    installed wheel is, rather than in every process (PYTHONDONTWRITEBYTECODE may be set)."""
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "bot", quiet=1)


async def start_bot_process(path: Path) -> asyncio.subprocess.Process:
    """``python -m bot run`` as a real process (stdout and stderr piped)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(path), env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def free_port() -> int:
    """A port nothing listens on right now, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


FAST_PDF_POLLING = PdfPolling(every_s=0.01, give_up_s=5)


class FakeClock:
    """The bot's ``Clock`` for tests: real time, moved on by ``advance`` instead of sleeping.

    It runs on from the real time because the JobQueue fires schedules on real timers
    and a schedule's slot is read from this clock; ``advance`` jumps over what a test
    must not wait for (a prompt's five minutes, a thread's 24 hours). ``monotonic`` is
    not moved: the poller lease it times is renewed against the database's real clock.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def base_config(telegram: FakeTelegram, whatsmate: FakeWhatsMate, tmp_path: Path) -> dict[str, Any]:
    return {
        "telegram": {
            "token": "${TEST_TG_TOKEN}",
            "base_url": telegram.base_url,
            "base_file_url": telegram.base_file_url,
            "messages_per_second": 10000,
            "messages_per_minute_per_group": 1000000,
        },
        "whatsmate": {
            "base_url": whatsmate.url,
            "client_id": whatsmate.client_id,
            "client_secret": whatsmate.client_secret,
            "timeout_s": 2,
            "retries": 2,
        },
        "access": {"admins": [ADMIN], "users": [USER], "chats": [TEAM]},
        "contacts": {"alice": "4412345678", "bob": "+44-7700.900123"},
        "groups": {"oncall": ["alice", "4411112222"]},
        "audit": {"path": str(tmp_path / "audit.sqlite3")},
        "confirm_over": 5,
        "log": {"format": "json", "level": "debug"},
    }


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


class LogStream(io.StringIO):
    """The bot's log, in memory; ``wait_logged`` wakes whenever a line is written (from any
    thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.grew = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def write(self, text: str) -> int:
        written = super().write(text)
        loop = self.loop
        if loop is not None:  # only while someone waits: the log outlives its test's loop
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                loop.call_soon_threadsafe(self.grew.set)
        return written

    async def wait_logged(self, marker: str, timeout_s: float = 10.0) -> None:
        """Until a line containing ``marker`` has been logged."""
        self.loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while marker not in self.getvalue():
                    self.grew.clear()
                    if marker not in self.getvalue():
                        await self.grew.wait()
        finally:
            self.loop = None


@dataclass
class BotUnderTest:
    """The real application, polling the fake Telegram and calling the fake WhatsMate."""

    telegram: FakeTelegram
    whatsmate: FakeWhatsMate
    tmp_path: Path
    clock: FakeClock = field(default_factory=FakeClock)
    backoff: wait_base = field(default_factory=wait_none)
    pdf_polling: PdfPolling = FAST_PDF_POLLING
    logs: LogStream = field(default_factory=LogStream)
    config: Config | None = None
    runtime: Runtime | None = None
    _stack: AsyncExitStack | None = None
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    def write_config(self, **overrides: Any) -> Path:
        path = self.tmp_path / "config.yaml"
        raw = merge(base_config(self.telegram, self.whatsmate, self.tmp_path), overrides)
        path.write_text(yaml.safe_dump(raw))
        return path

    async def start(self, wait_for: str = "/getUpdates$", **overrides: Any) -> BotUnderTest:
        path = self.write_config(**overrides)
        self.config = load_config(path, {"TEST_TG_TOKEN": self.telegram.token})
        configure_logging(fmt="json", level="debug", secrets=self.config.secrets, stream=self.logs)
        self._stack = AsyncExitStack()
        self.runtime = await self._stack.enter_async_context(
            open_runtime(
                self.config,
                clock=self.clock,
                backoff=self.backoff,
                pdf_polling=self.pdf_polling,
                serving=True,
            )
        )
        lifecycle = Lifecycle.of_bot(self.runtime, TelegramFrontend(self.runtime))
        self._stop = asyncio.Event()
        polls = len(self.telegram.calls(wait_for))
        self._task = asyncio.create_task(lifecycle.run(self._stop))
        await self.telegram.wait_for(
            lambda: len(self.telegram.calls(wait_for)) > polls or self._task.done()
        )
        if self._task.done():
            self._task.result()
        return self

    async def stop(self) -> None:
        """Stop polling and wait for every command in flight (like SIGTERM)."""
        if self._task is not None and self._stop is not None:
            self._stop.set()
            await self._task
            self._task = None
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def say(
        self,
        text: str,
        *,
        user: int = ADMIN,
        chat: int | None = None,
        replies: int = 1,
        **extra: Any,
    ) -> list[Sent]:
        """Send ``text`` as ``user`` and return the ``replies`` new messages in that chat."""
        chat_id = user if chat is None else chat
        before = len(self.telegram.replies(chat_id))
        self.telegram.message(text, user=user, chat=chat_id, **extra)
        got = await self.telegram.wait_replies(before + replies, chat_id)
        return got[before:]

    async def reply_text(self, text: str, **kwargs: Any) -> str:
        (reply,) = await self.say(text, **kwargs)
        return reply.text

    def log_text(self) -> str:
        return self.logs.getvalue()

    async def wait_logged(self, event: str) -> None:
        """Until the bot has logged ``event`` (an event name)."""
        await self.logs.wait_logged(f'"event": "{event}"')

    def assert_no_secrets_logged(self) -> None:
        logged = self.log_text()
        assert self.telegram.token not in logged
        assert self.whatsmate.client_secret not in logged


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole run, on loopback (tests/postgres.py)."""
    server = PostgresServer.start()
    yield server
    server.stop()


async def fresh_database(postgres: PostgresServer) -> str:
    """The URL of a new, empty database on ``postgres``."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    connection = await asyncpg.connect(postgres.admin_url)
    try:
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return postgres.url(name)


@pytest.fixture
async def database_url(postgres: PostgresServer) -> str:
    """A fresh, empty database of its own for one test."""
    return await fresh_database(postgres)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeWhatsMate]]:
    telegram, whatsmate = FakeTelegram(), FakeWhatsMate()
    await telegram.start()
    await whatsmate.start()
    yield telegram, whatsmate
    await telegram.stop()
    await whatsmate.stop()


@pytest.fixture
async def make_bot(
    fakes: tuple[FakeTelegram, FakeWhatsMate], tmp_path: Path
) -> AsyncIterator[BotUnderTest]:
    """A bot not yet started: call ``await make_bot.start(**config_overrides)``."""
    telegram, whatsmate = fakes
    harness = BotUnderTest(telegram, whatsmate, tmp_path)
    yield harness
    await harness.stop()
    harness.assert_no_secrets_logged()


@pytest.fixture
async def bot(make_bot: BotUnderTest) -> BotUnderTest:
    """The bot, started with the default test config."""
    return await make_bot.start()
