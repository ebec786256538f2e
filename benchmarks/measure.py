"""One measurement in a process of its own: ``python -m benchmarks.measure SUBJECT SCENARIO``.

Starts the loopback fakes (in this process, with a large accept backlog), starts the
subject bot as a child process, measures one scenario, prints one JSON line.
Subjects: ``bot`` (ours), ``baseline`` (textbook PTB bot), ``concurrent`` (the same
with ``concurrent_updates(True)``). Scenarios: ``burst0`` and ``burst200`` (200 /wa at
once, gateway latency 0 or 0.2 s), ``broadcast`` (one /wa to 200 numbers at 0.1 s),
``doc`` (forward a 15 MB document); ``intake`` (500 Alertmanager notifications at
once, ``benchmarks.intake``: subjects ``bot`` and ``floor``).
"""

from __future__ import annotations

import asyncio
import base64
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

import yaml

from tests.fakes import FakeTelegram, FakeWhatsMate

ADMIN = 1001
BURST = 200
BROADCAST = 200
DOC_BYTES = 15 * 1024 * 1024


def numbers(count: int) -> list[str]:
    return [f"44100{i:05d}" for i in range(count)]


def bot_config(folder: Path, telegram: FakeTelegram, whatsmate: FakeWhatsMate) -> Path:
    config = {
        "telegram": {
            "token": telegram.token,
            "base_url": telegram.base_url,
            "base_file_url": telegram.base_file_url,
            # the fakes enforce no flood limit, and neither do the baselines
            "messages_per_second": 100000,
            "messages_per_minute_per_group": 1000000,
        },
        "whatsmate": {
            "base_url": whatsmate.url,
            "client_id": whatsmate.client_id,
            "client_secret": whatsmate.client_secret,
        },
        "access": {"admins": [ADMIN]},
        "groups": {"everyone": numbers(BROADCAST)},
        "confirm_over": 1000,
        "audit": {"path": str(folder / "audit.sqlite3")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def command_line(subject: str, config: Path) -> list[str]:
    profile = os.environ.get("BENCH_PROFILE")  # a file: run the subject under cProfile
    python = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else [])]
    if subject == "bot":
        return [*python, "-m", "bot", "run", "--config", str(config)]
    extra = ["--concurrent"] if subject == "concurrent" else []
    return [*python, "-m", "benchmarks.baseline_bot", *extra]


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure in bytes (VmHWM: peak RSS, VmRSS: current)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match[1]) * 1024 if match else 0


async def burst(telegram: FakeTelegram, whatsmate: FakeWhatsMate, latency: float) -> dict[str, Any]:
    whatsmate.latency_s = latency
    targets = numbers(BURST)
    started = {}
    for number in targets:
        started[number] = time.perf_counter()
        telegram.message(f"/wa {number} incident bridge open", user=ADMIN)
    await telegram.wait_for(lambda: len(telegram.replies(ADMIN)) >= BURST, timeout=120)
    latencies = []
    for reply in telegram.replies(ADMIN):
        found = re.search(r"44100\d{5}", reply.text)
        assert found, reply.text
        latencies.append(reply.at - started[found[0]])
    total = max(r.at for r in telegram.replies(ADMIN)) - min(started.values())
    ordered = sorted(latencies)
    return {
        "cmds_per_s": BURST / total,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": statistics.quantiles(ordered, n=100)[98] * 1000,
    }


async def broadcast(
    telegram: FakeTelegram, whatsmate: FakeWhatsMate, subject: str
) -> dict[str, Any]:
    whatsmate.latency_s = 0.1
    to = "everyone" if subject == "bot" else ",".join(numbers(BROADCAST))
    began = time.perf_counter()
    telegram.message(f"/wa {to} all hands on deck", user=ADMIN)
    reply = (await telegram.wait_replies(1, ADMIN, timeout=120))[0]  # a long reply is split
    assert f"sent to {BROADCAST} of {BROADCAST}" in reply.text, reply.text[:200]
    return {"broadcast_s": reply.at - began, "calls": len(whatsmate.sends())}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> int:
    """Reset VmHWM to the current RSS (``clear_refs`` 5) and return that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return proc_status(pid, "VmRSS")


async def forward_document(
    telegram: FakeTelegram, whatsmate: FakeWhatsMate, pid: int
) -> dict[str, Any]:
    content = os.urandom(DOC_BYTES)
    telegram.add_file("big-doc", content)
    before = reset_peak_rss(pid)
    telegram.message(
        "/doc 4412345678",
        user=ADMIN,
        caption=True,
        document={
            "file_id": "big-doc",
            "file_unique_id": "big-doc",
            "file_name": "dump.bin",
            "file_size": DOC_BYTES,
        },
    )
    await telegram.wait_replies(1, ADMIN, timeout=120)
    growth = proc_status(pid, "VmHWM") - before
    (request,) = whatsmate.sends()
    assert base64.b64decode(request.json()["document"]) == content, "bytes differ"
    return {"doc_rss_growth_mb": growth / 2**20, "doc_growth_x_file": growth / DOC_BYTES}


async def measure(subject: str, scenario: str) -> dict[str, Any]:
    telegram, whatsmate = FakeTelegram(), FakeWhatsMate()
    await telegram.start()
    await whatsmate.start()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "BENCH_TOKEN": telegram.token,
            "BENCH_TELEGRAM_URL": telegram.url,
            "BENCH_WHATSMATE_URL": whatsmate.url,
        }
        began = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command_line(subject, bot_config(Path(folder), telegram, whatsmate)),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await telegram.wait_polling()
            result: dict[str, Any] = {"startup_ms": (time.perf_counter() - began) * 1000}
            if scenario.startswith("burst"):
                result |= await burst(telegram, whatsmate, int(scenario[5:]) / 1000)
            elif scenario == "broadcast":
                result |= await broadcast(telegram, whatsmate, subject)
            else:
                result |= await forward_document(telegram, whatsmate, process.pid)
            result["peak_rss_mb"] = proc_status(process.pid, "VmHWM") / 2**20
            result["cpu_s"] = cpu_seconds(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
            await telegram.stop()
            await whatsmate.stop()
    return result


if __name__ == "__main__":
    if sys.argv[2] == "intake":
        from benchmarks.intake import measure as measure_intake

        print(json.dumps(asyncio.run(measure_intake(sys.argv[1]))))
    else:
        print(json.dumps(asyncio.run(measure(sys.argv[1], sys.argv[2]))))
