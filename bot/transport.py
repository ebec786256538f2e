"""An httpx transport over aiohttp: httpx's API (python-telegram-bot requires it) on the
bot's one network stack, with every fault mapped to the httpx exception that says what
it means for a send.

Why not httpcore: under a burst, about half of the bot's CPU went to httpcore's pool
bookkeeping. Why not the ready-made ``httpx-aiohttp`` package: it maps every
``aiohttp.ClientConnectionError`` — a connection dropped *after* the request was
written included — to ``httpx.ConnectTimeout``, which reads as "surely not sent" and
would make the gateway resend a page. Here the mapping is exact, decided by how far the
request got (aiohttp's tracing signals tell):

====================================  ==========================================
what happened                         httpx exception
====================================  ==========================================
refused, unreachable, DNS, TLS setup  ``ConnectError``        (nothing left)
connect timed out                     ``ConnectTimeout``      (nothing left)
no free connection in time            ``PoolTimeout``         (nothing left)
failed while writing the request      ``WriteError``          (may have left)
no answer in time                     ``ReadTimeout``         (may have arrived)
dropped after the request left        ``RemoteProtocolError`` (may have arrived)
broken while reading the answer       ``ReadError``           (may have arrived)
====================================  ==========================================

aiohttp also resends an idempotent request (GET…) by itself when a kept-alive
connection breaks; that is switched off, because a PDF job is submitted with a GET
that costs quota. Retrying is the gateway's decision (tenacity), never the transport's.
Bodies stream both ways: a request body that is an async stream is written as it is
produced, and a response is read chunk by chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx

_CHUNK = 64 * 1024


@dataclass
class _Progress:
    """How far one request got; filled in by aiohttp's tracing signals.

    aiohttp has no timeout for the wait for a free connection alone (its ``connect``
    timeout covers the wait and the connect together), so ``pool_timeout`` is kept
    here: a timer that runs only while the request is queued, and cancels it.
    """

    pool_timeout: float | None = None
    queued: bool = False
    headers_sent: bool = False
    pool_expired: bool = False
    _task: asyncio.Task[Any] | None = None
    _timer: asyncio.TimerHandle | None = None

    def start_queue(self) -> None:
        self.queued = True
        self._task = asyncio.current_task()
        if self.pool_timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(self.pool_timeout, self._expire)

    def end_queue(self) -> None:
        self.queued = False
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        if self.queued and self._task is not None:
            self.pool_expired = True
            self._task.cancel()


async def _queued_start(session: object, context: SimpleNamespace, params: object) -> None:
    context.trace_request_ctx.start_queue()


async def _queued_end(session: object, context: SimpleNamespace, params: object) -> None:
    context.trace_request_ctx.end_queue()


async def _headers_sent(session: object, context: SimpleNamespace, params: object) -> None:
    context.trace_request_ctx.headers_sent = True


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(_queued_start)
    trace.on_connection_queued_end.append(_queued_end)
    trace.on_request_headers_sent.append(_headers_sent)
    return trace


def map_error(exc: BaseException, progress: _Progress, request: httpx.Request) -> Exception:
    """The httpx exception for an aiohttp failure, by what it means for the request."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind: type[httpx.TransportError] = (
            httpx.PoolTimeout if progress.queued else httpx.ConnectTimeout
        )
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        kind = httpx.ReadTimeout if progress.headers_sent else httpx.WriteTimeout
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind = httpx.ReadError
    elif isinstance(exc, aiohttp.ClientOSError | aiohttp.ClientConnectionError | OSError):
        kind = httpx.ReadError if progress.headers_sent else httpx.WriteError
    elif isinstance(exc, aiohttp.InvalidURL):
        kind = httpx.UnsupportedProtocol
    else:
        kind = httpx.TransportError
    return kind(text, request=request)


class _ResponseStream(httpx.AsyncByteStream):
    """The answer's body, read from aiohttp as httpx reads it."""

    def __init__(
        self, response: aiohttp.ClientResponse, progress: _Progress, request: httpx.Request
    ) -> None:
        self._response, self._progress, self._request = response, progress, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_error(exc, self._progress, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport(limits=...))``: one aiohttp session,
    created in the running loop on first use, with a pool of ``limits.max_connections``."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self._limits = limits or httpx.Limits()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        limits = self._limits
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=limits.keepalive_expiry or 5.0,
            enable_cleanup_closed=False,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=[_trace_config()],
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp resends GET/PUT/DELETE by itself when a kept-alive connection breaks;
        # whether to resend is the gateway's decision (a PDF submit is a GET that costs).
        if not hasattr(session, "_retry_connection"):  # pragma: no cover - aiohttp changed
            raise RuntimeError("aiohttp no longer has _retry_connection: review transport.py")
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        timeouts = request.extensions.get("timeout", {})
        connect, pool = timeouts.get("connect"), timeouts.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=timeouts.get("read"),
        )
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "transfer-encoding"]
        body: Any = _body(request)
        progress = _Progress(pool_timeout=pool)
        try:
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeout,
                trace_request_ctx=progress,
                compress=None,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_error(exc, progress, request) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not progress.pool_expired or task is None:
                raise
            task.uncancel()
            raise httpx.PoolTimeout("no free connection in time", request=request) from None
        finally:
            progress.end_queue()
        return httpx.Response(
            status_code=response.status,
            headers=[(k.decode(), v.decode()) for k, v in response.raw_headers],
            stream=_ResponseStream(response, progress, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _body(request: httpx.Request) -> bytes | AsyncIterator[bytes] | None:
    """The request body: bytes when httpx has them, else the stream, chunk by chunk."""
    try:
        content = request.content
    except httpx.RequestNotRead:
        return _stream(request.stream)
    return content or None


async def _stream(stream: Any) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk
