"""The alert-intake scenario: 500 Alertmanager notifications posted at once.

``python -m benchmarks.measure SUBJECT intake`` (``bot`` or ``floor``) prints one JSON line:
notifications/s accepted (500 over the time from the first POST to the last 200), the
p99 time to the 200, and — for the bot — the p99 time from a notification's 200 to the
first page's POST at the fake WhatsMate (each notification is its own alert group, so
each opens an incident that pages at once). The bot keeps Telegram's real group limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.fakes import FakeTelegram, FakeWhatsMate, HttpRequest, HttpResponse

NOTIFICATIONS = 500
SECRET = "bench-alerts-secret-0123"
TEAM = -100500


class TimedWhatsMate(FakeWhatsMate):
    """The fake WhatsMate, noting when each page arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[str, float] = {}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        return await super().handle(request)

    def _arrived(self, request: HttpRequest) -> None:
        found = re.match(r"FIRING #\d+ (Bench\d+)", (request.json() or {}).get("message", ""))
        if found:
            self.pages.setdefault(found[1], time.perf_counter())

    async def notify(self) -> None:
        if self.requests:
            self._arrived(self.requests[-1])
        await super().notify()


def body(n: int) -> bytes:
    labels = {"alertname": f"Bench{n}", "instance": "db-1", "severity": "critical"}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"bench alert {n}"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"{n:016x}",
    }
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "bot",
            "groupKey": f'{{}}:{{alertname="Bench{n}"}}',
            "groupLabels": {"alertname": f"Bench{n}"},
            "commonLabels": labels,
            "commonAnnotations": alert["annotations"],
            "externalURL": "",
            "truncatedAlerts": 0,
            "alerts": [alert],
        }
    ).encode()


def bot_config(folder: Path, port: int, telegram: FakeTelegram, whatsmate: FakeWhatsMate) -> Path:
    config = {
        "telegram": {
            "token": telegram.token,
            "base_url": telegram.base_url,
            "base_file_url": telegram.base_file_url,
            "messages_per_second": 30,
            "messages_per_minute_per_group": 20,
        },
        "whatsmate": {
            "base_url": whatsmate.url,
            "client_id": whatsmate.client_id,
            "client_secret": whatsmate.client_secret,
        },
        "access": {"admins": [1001], "chats": [TEAM]},
        "contacts": {"alice": "4412345678"},
        "audit": {"path": str(folder / "audit.sqlite3")},
        "http": {"listen": "127.0.0.1", "port": port},
        "alerts": {
            "secret": SECRET,
            "chat": TEAM,
            "routes": [{"match": {}, "escalation": "page"}],
            "escalations": {"page": {"steps": [{"page": "alice"}]}},
        },
        "log": {"level": "warning"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def post_all(port: int) -> tuple[float, dict[int, tuple[float, float]]]:
    """Every notification at once; (first sent, {n: (sent, answered)})."""
    url = f"http://127.0.0.1:{port}/alerts/{SECRET}"
    times: dict[int, tuple[float, float]] = {}
    connector = aiohttp.TCPConnector(limit=NOTIFICATIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            sent = time.perf_counter()
            async with session.post(url, data=body(n)) as response:
                assert response.status == 200, await response.text()
            times[n] = (sent, time.perf_counter())

        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(NOTIFICATIONS)))
    return began, times


async def wait_listening(port: int) -> None:
    for _ in range(400):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # a process starting: nothing to wait on but its port
            continue
        writer.close()
        return
    raise RuntimeError("the subject never listened")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def measure(subject: str) -> dict[str, Any]:
    telegram, whatsmate = FakeTelegram(), TimedWhatsMate()
    await telegram.start()
    await whatsmate.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        profile = os.environ.get("BENCH_PROFILE")  # a file: run the subject under cProfile
        python = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else [])]
        if subject == "bot":
            command = [*python, "-m", "bot", "run", "--config",
                       str(bot_config(Path(folder), port, telegram, whatsmate))]  # fmt: skip
        else:
            command = [sys.executable, "-m", "benchmarks.floor_intake",
                       str(Path(folder) / "floor.sqlite3"), str(port)]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=os.environ,
        )  # fmt: skip
        try:
            await wait_listening(port)
            began, times = await post_all(port)
            answered = sorted(done - sent for sent, done in times.values())
            result: dict[str, Any] = {
                "per_s": NOTIFICATIONS / (max(done for _, done in times.values()) - began),
                "p99_200_ms": statistics.quantiles(answered, n=100)[98] * 1000,
            }
            if subject == "bot":

                def pages() -> list[HttpRequest]:
                    return whatsmate.calls("/whatsapp/")

                await whatsmate.wait_for(lambda: len(pages()) >= NOTIFICATIONS, 60)
                to_page = sorted(
                    whatsmate.pages[f"Bench{n}"] - done for n, (_, done) in times.items()
                )
                result["p99_page_ms"] = statistics.quantiles(to_page, n=100)[98] * 1000
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
            await telegram.stop()
            await whatsmate.stop()
    return result
