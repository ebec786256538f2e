"""The bot's web server as a real network meets it: bodies that arrive in pieces or
chunked, odd JSON and odd headers (400/403, never a 500), idle connections closed.

Requests go over raw sockets where the way the bytes arrive matters, so the test, not
an HTTP client, decides how a body is cut up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bot.web import IDLE_TIMEOUT_S, Webhook, WebServer, make_app
from tests.conftest import BotUnderTest, free_port
from tests.test_bridge import CAROL, ON_CALL_CHAT, SECRET, bridge_config

HOOK_SECRET = "hook-secret-123"
INBOUND = f"/inbound/whatsapp/{SECRET}"


@pytest.fixture
async def edge(make_bot: BotUnderTest) -> BotUnderTest:
    """The bot with the bridge and the Telegram webhook on one port."""
    webhook = {"webhook_url": "https://bot.example.com/telegram", "secret_token": HOOK_SECRET}
    return await make_bot.start(
        **bridge_config(free_port(), telegram=webhook), wait_for="/setWebhook$"
    )


def port_of(bot: BotUnderTest) -> int:
    assert bot.config is not None
    return bot.config.http.port


async def exchange(port: int, pieces: list[bytes]) -> tuple[int, bytes]:
    """Write ``pieces`` one after another (each drained before the next), then read the
    answer. The short gap only makes the pieces separate TCP segments; what is asserted
    does not depend on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(0.02)
            writer.write(piece)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()


def request_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int) -> list[bytes]:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts] + [b"0\r\n\r\n"]


def inbound_body(message: str) -> bytes:
    return json.dumps({"number": CAROL, "message": message}).encode()


async def test_a_body_in_two_pieces_is_read_whole(edge: BotUnderTest) -> None:
    message = "a reply of three kilobytes " * 110
    body = inbound_body(message)
    half = len(body) // 2
    head = request_head(INBOUND, Content_Length=str(len(body)))
    status, answer = await exchange(port_of(edge), [head + body[:half], body[half:]])
    assert (status, json.loads(answer)) == (200, {"status": "stored"})
    (post,) = await edge.telegram.wait_replies(1, ON_CALL_CHAT)
    assert post.text == f"49•••678 on WhatsApp:\n{message}"


async def test_a_chunked_body_is_read_whole_and_capped(edge: BotUnderTest) -> None:
    head = request_head(INBOUND, Transfer_Encoding="chunked")
    body = inbound_body("chunked " * 400)
    status, _ = await exchange(port_of(edge), [head, *chunked(body, 1000)])
    assert status == 200
    (post,) = await edge.telegram.wait_replies(1, ON_CALL_CHAT)
    assert post.text == "49•••678 on WhatsApp:\n" + "chunked " * 400
    big = inbound_body("x" * 70_000)
    status, answer = await exchange(port_of(edge), [head, *chunked(big, 8000)])
    assert (status, json.loads(answer)) == (413, {"error": "body over 65536 bytes"})
    declared = request_head(INBOUND, Content_Length=str(len(big)))
    assert (await exchange(port_of(edge), [declared + big]))[0] == 413
    await edge.stop()
    assert len(edge.telegram.replies(ON_CALL_CHAT)) == 1


async def test_broken_framing_is_a_400_without_a_traceback(edge: BotUnderTest) -> None:
    head = request_head(INBOUND, Transfer_Encoding="chunked")
    status, _ = await exchange(port_of(edge), [head + b"zz\r\nabc\r\n"])
    assert status == 400
    _, writer = await asyncio.open_connection("127.0.0.1", port_of(edge))
    writer.write(request_head(INBOUND, Content_Length="100") + b'{"number"')
    await writer.drain()
    writer.close()  # gone half-way through the body
    await edge.stop()  # the web server finishes every request in flight first
    assert "Traceback" not in edge.log_text() and "malformed_request" in edge.log_text()


ODD_BODIES = [
    (b'{"number": "4412345678", "message": "\\ud800"}', "a lone surrogate"),
    (b"[" * 30_000 + b"]" * 30_000, "nested too deep"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, "nested too deep"),
    (b'["a list"]', "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'{"number": "4412345678", "message": "a\\u0000b"}', "a NUL character"),
    (b'{"number": "4412345678", "message": "x", "n": NaN}', "not JSON"),
    (b'{"number": "4412345678", "message": "x", "n": 1e999}', "not JSON"),
    (b'{"number": "4412345678", "message": "\xff"}', "not JSON"),
    (b'{"number": ' + b"9" * 5000 + b', "message": "x"}', "not JSON"),
    (b"", "not JSON"),
]


@pytest.mark.parametrize(("body", "why"), ODD_BODIES)
async def test_odd_json_is_a_400_on_every_post_route(
    edge: BotUnderTest, body: bytes, why: str
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_of(edge)}") as client:
        inbound = await client.post(INBOUND, content=body)
        webhook = await client.post(
            "/telegram", content=body, headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
        )
    for response in (inbound, webhook):
        assert response.status_code == 400
        assert why in response.json()["error"]
    await edge.stop()
    assert edge.telegram.replies(ON_CALL_CHAT) == []
    assert "Traceback" not in edge.log_text() and "Error handling request" not in edge.log_text()


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 7, "message": "not a message"},
        {"message": {"text": "/whoami"}},
        {"update_id": "x", "callback_query": [1]},
    ],
)
async def test_a_json_object_that_is_not_an_update_is_a_400(
    edge: BotUnderTest, update: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_of(edge)}") as client:
        response = await client.post(
            "/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
        )
    assert (response.status_code, response.json()) == (400, {"error": "not a Telegram update"})
    assert "Traceback" not in edge.log_text()


@pytest.mark.parametrize(
    "token", ["sécret".encode(), b"\xff\xfe", HOOK_SECRET.encode() + b"\xc3\xa9", b""]
)
async def test_an_odd_webhook_secret_header_is_a_403(edge: BotUnderTest, token: bytes) -> None:
    update: dict[str, Any] = {"update_id": 1}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_of(edge)}") as client:
        response = await client.post(
            "/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": token}
        )
        assert response.status_code == 403
        odd_url = await client.post("/inbound/whatsapp/%ff%fe%ed%a0%80", content=b"{}")
        assert odd_url.status_code == 404
    assert "Traceback" not in edge.log_text()


# -- idle connections ------------------------------------------------------------------


async def healthy() -> tuple[bool, dict[str, str]]:
    return True, {}


delivered: list[object] = []


async def deliver(update: dict[str, Any]) -> None:
    delivered.append(update)


@pytest.fixture
async def quick_server() -> Any:
    """The bot's web server with a short idle timeout, so the test need not wait 15 s."""
    port = free_port()
    app = make_app(health=healthy, webhook=Webhook(HOOK_SECRET, deliver))
    server = WebServer(app, "127.0.0.1", port, idle_s=0.3)
    await server.start()
    yield port
    await server.stop()


async def test_an_idle_keep_alive_connection_is_closed(quick_server: int) -> None:
    assert IDLE_TIMEOUT_S == 15
    reader, writer = await asyncio.open_connection("127.0.0.1", quick_server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"keep-alive" not in head.lower()
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
    writer.close()


async def test_a_connection_silent_from_the_start_is_closed(quick_server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", quick_server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # and nothing more
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_body_that_stops_arriving_gets_408(quick_server: int) -> None:
    head = request_head(
        "/telegram", Content_Length="100", X_Telegram_Bot_Api_Secret_Token=HOOK_SECRET
    )
    status, _ = await exchange(quick_server, [head + b'{"update_id": 1'])
    assert status == 408 and delivered == []
