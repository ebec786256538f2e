"""The aiohttp transport under httpx, against real sockets on loopback: every fault maps
to the httpx exception that says whether the request may have left, nothing is resent
behind the gateway's back, and bodies stream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.transport import AiohttpTransport
from tests.conftest import free_port
from tests.fakes import DROP, HANG, HOLD, FakeWhatsMate

TIMEOUT = httpx.Timeout(connect=0.5, read=0.3, write=0.5, pool=0.2)


@pytest.fixture
async def server() -> AsyncIterator[FakeWhatsMate]:
    fake = FakeWhatsMate()
    await fake.start()
    yield fake
    fake.release()
    await fake.stop()


@contextlib.asynccontextmanager
async def client(
    max_connections: int = 10, timeout: httpx.Timeout = TIMEOUT
) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=max_connections)
    transport = AiohttpTransport(limits)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
        yield http


STATUS = "/v1/gateway/status"
HEADERS = {"X-WM-CLIENT-ID": "ops@example.com", "X-WM-CLIENT-SECRET": "s3cr3t-wm"}


async def test_refused_is_connect_error() -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_connect_timeout_is_connect_timeout() -> None:
    """A listener whose accept queue is full drops new connection attempts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):  # fill the accept queue without ever accepting
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            async with client() as http:
                with pytest.raises(httpx.ConnectTimeout):
                    await http.get(f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()


async def test_no_free_connection_is_pool_timeout(server: FakeWhatsMate) -> None:
    server.fail(STATUS, HOLD)
    async with client(max_connections=1, timeout=httpx.Timeout(5, pool=0.2)) as http:
        held = asyncio.create_task(http.get(server.url + STATUS, headers=HEADERS))
        await server.wait_for(lambda: server.in_flight == 1)
        with pytest.raises(httpx.PoolTimeout):
            await http.get(server.url + STATUS, headers=HEADERS)
        server.release()
        assert (await held).json() == {"status": "up"}
    assert len(server.requests) == 1  # the timed-out request never left


async def test_no_answer_is_read_timeout(server: FakeWhatsMate) -> None:
    server.fail("/whatsapp/", HANG)
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(server.url + "/v1/whatsapp/single/message/0", json={"a": 1})
    assert len(server.requests) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_dropped_after_the_request_left_is_not_resent(
    server: FakeWhatsMate, method: str
) -> None:
    """aiohttp resends an idempotent request by itself when a kept-alive connection
    breaks; here the second request goes over the kept-alive connection and is dropped:
    it must surface, sent exactly once (a PDF job is submitted with a GET)."""
    async with client() as http:
        first = await http.request(method, server.url + "/v1/pdf/job/submit?url=x", headers=HEADERS)
        assert first.status_code in (200, 400)
        server.fail("/pdf/", DROP)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.request(method, server.url + "/v1/pdf/job/submit?url=x", headers=HEADERS)
    assert len(server.requests) == 2


async def test_a_streamed_body_arrives_whole_with_its_length(server: FakeWhatsMate) -> None:
    chunks = [bytes([n]) * 100_000 for n in range(30)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    length = str(sum(len(c) for c in chunks))
    async with client() as http:
        await http.post(server.url + "/upload", content=body(), headers={"Content-Length": length})
    (request,) = server.requests
    assert request.body == b"".join(chunks)
    assert request.headers["content-length"] == length
    assert "transfer-encoding" not in request.headers


async def test_a_response_streams_and_the_client_reopens_after_close(
    server: FakeWhatsMate,
) -> None:
    transport = AiohttpTransport()
    async with (
        httpx.AsyncClient(transport=transport) as http,
        http.stream("GET", server.url + STATUS, headers=HEADERS) as response,
    ):
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == b'{"status": "up"}'
    async with httpx.AsyncClient(transport=transport) as http:  # PTB rebuilds its client
        assert (await http.get(server.url + STATUS, headers=HEADERS)).json() == {"status": "up"}
