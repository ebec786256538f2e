"""The floor the alert intake is measured against: the least a webhook receiver that
keeps "200 means stored" can do — a minimal aiohttp handler that writes the body to
SQLite (WAL, ``synchronous=FULL``, on a worker thread, like the bot) and answers 200.

``python -m benchmarks.floor_intake DB PORT``; prints ``listening`` once it listens.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web


def main(path: str, port: int) -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    connection = executor.submit(_open, path).result()

    def store(body: bytes) -> None:
        with connection:
            connection.execute("INSERT INTO notifications (body) VALUES (?)", (body,))

    async def alerts(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.get_running_loop().run_in_executor(executor, store, body)
        return web.json_response({"status": "stored"})

    app = web.Application(client_max_size=1_000_000)
    app.router.add_post("/alerts/{secret}", alerts)
    print("listening", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


def _open(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS notifications (id INTEGER PRIMARY KEY, body)")
    return connection


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
