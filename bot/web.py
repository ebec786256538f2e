"""The bot's one web server (aiohttp, in the bot's event loop) on ``http.port``.

Everything the bot listens for is served here: ``/metrics`` and ``/healthz``, the
Telegram webhook at ``/telegram`` (the python-telegram-bot "custom webhook" way: the
handler hands each update to the application, PTB's own server is never started) and
the inbound URLs of the two-way bridge and Alertmanager's ``/alerts/<secret>``. One
server, one port, one network stack.

Every POST route reads its body with ``read_json`` (or ``read_body``), with a cap of its
own: the body is read whole — however many TCP segments it came in, chunked or not —
before it is judged; over the cap is 413 whether declared or not, a body that has not
all arrived within ``IDLE_TIMEOUT_S`` is 408, and odd JSON is 400 (``bot.untrusted``).
A route refuses by raising ``InboundRejected``; one middleware turns it into the JSON
answer ``{"error": ...}`` with its status, and a ``StorageUnavailable`` from any route
into 503 with ``Retry-After`` (nothing was stored: the sender tries again). Idle keep-alive
connections are closed after ``IDLE_TIMEOUT_S`` (aiohttp's default is an hour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.bridge import CHANNELS, MAX_BODY_BYTES, Bridge
from bot.errors import InboundRejected, StorageUnavailable
from bot.logs import get_logger
from bot.metrics import Metrics
from bot.untrusted import decode_json_object, same_secret

if TYPE_CHECKING:
    from bot.paging.escalation import Pager

log = get_logger("bot.web")
IDLE_TIMEOUT_S = 15.0  # silence after which a connection is closed, and a body given up
WEBHOOK_MAX_BYTES = 1024 * 1024  # a Telegram update is a few KB
RETRY_AFTER_S = 30  # told to a sender whose request could not be stored (503)
STORE_DEADLINE_S = 2.0  # an inbound message or alert not stored by then is answered 503
Health = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]
"""Returns (healthy, details) for /healthz."""


@dataclass(frozen=True)
class Webhook:
    """Telegram's webhook: updates with the right secret token go to ``deliver``, which
    raises ``InboundRejected`` (400) for an object that is not an update."""

    secret_token: str
    deliver: Callable[[dict[str, Any]], Awaitable[None]]


def make_app(
    *,
    health: Health,
    metrics: Metrics | None = None,
    webhook: Webhook | None = None,
    bridge: Bridge | None = None,
    pager: Pager | None = None,
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_refusals])

    async def healthz(request: web.Request) -> web.Response:
        healthy, details = await health()
        body = {"status": "ok" if healthy else "unhealthy", **details}
        return web.json_response(body, status=200 if healthy else 503)

    app.router.add_get("/healthz", healthz)
    if metrics is not None:
        registry = metrics

        async def metrics_page(request: web.Request) -> web.Response:
            return web.Response(
                body=registry.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
            )

        app.router.add_get("/metrics", metrics_page)
    if webhook is not None:
        hook = webhook

        async def telegram(request: web.Request) -> web.Response:
            token = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            if not same_secret(token, hook.secret_token):
                raise InboundRejected(403, "forbidden")
            await hook.deliver(await read_json(request, WEBHOOK_MAX_BYTES))
            return web.Response(text="ok\n")

        app.router.add_post("/telegram", telegram)
    if bridge is not None:
        inbound = bridge

        async def accept(request: web.Request) -> web.Response:
            channel = CHANNELS.get(request.match_info["channel"])
            if channel is None or not inbound.secret_matches(request.match_info["secret"]):
                raise web.HTTPNotFound()
            raw = await read_body(request, MAX_BODY_BYTES)
            await stored_in_time(inbound.accept(channel, raw))
            return web.json_response({"status": "stored"})

        app.router.add_post("/inbound/{channel}/{secret}", accept)
    if pager is not None:
        paging = pager
        from bot.paging.intake import MAX_BODY_BYTES as MAX_ALERT_BYTES

        async def alerts(request: web.Request) -> web.Response:
            """Alertmanager's webhook: 200 only once stored, 503 when it cannot be (it
            retries a 5xx and drops a 4xx, so a valid body never gets one)."""
            if not same_secret(request.match_info["secret"], paging.alerts.secret):
                raise web.HTTPNotFound()
            if request.method != "POST":
                raise web.HTTPMethodNotAllowed(request.method, ["POST"])
            raw = await read_body(request, MAX_ALERT_BYTES)
            try:
                await stored_in_time(paging.accept(raw))
            except (InboundRejected, StorageUnavailable):
                raise
            except Exception:
                log.exception("alert_not_stored")
                raise InboundRejected(503, "could not be stored; send it again") from None
            return web.json_response({"status": "stored"})

        app.router.add_route("*", "/alerts/{secret}", alerts)
    return app


async def stored_in_time(storing: Coroutine[Any, Any, None]) -> None:
    """Await ``storing`` for at most ``STORE_DEADLINE_S``; a database that hangs (cut off
    or frozen, not refusing) is ``StorageUnavailable`` — a 503, so the sender keeps the
    message and sends it again, which is safe: a repeated delivery or notification
    changes nothing. The store is left to finish or fail on its own: cancelling it would
    wait for its rollback, on the very database that does not answer."""
    task = asyncio.ensure_future(storing)
    done, _ = await asyncio.wait({task}, timeout=STORE_DEADLINE_S)
    if not done:
        task.add_done_callback(_late_store_ended)
        raise StorageUnavailable(f"not stored within {STORE_DEADLINE_S:g} s")
    task.result()


def _late_store_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("late_store_failed", error=type(task.exception()).__name__)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body of ``request``, at most ``max_bytes`` (aiohttp's own capped read).

    Raises ``InboundRejected``: 413 over the cap (declared or counted), 408 when the
    body has not all arrived within the connection's idle timeout, 400 when its
    framing is broken (a bad chunk). Call it once the request is authenticated.
    """
    too_big = InboundRejected(413, f"body over {max_bytes} bytes")
    if (request.content_length or 0) > max_bytes:
        raise too_big
    try:
        async with asyncio.timeout(request.protocol.keepalive_timeout):
            return await request.clone(client_max_size=max_bytes).read()
    except web.HTTPRequestEntityTooLarge:
        raise too_big from None
    except TimeoutError:
        raise InboundRejected(408, "body did not arrive in time") from None
    except HttpProcessingError:
        raise InboundRejected(400, "body is not valid HTTP") from None
    except ConnectionError:  # the client left half-way: nobody reads this answer
        raise InboundRejected(400, "connection lost before the body arrived") from None


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """``read_body`` decoded as a JSON object (``bot.untrusted``): every oddity is 400."""
    return decode_json_object(await read_body(request, max_bytes))


@web.middleware
async def _refusals(request: web.Request, handler: Any) -> web.StreamResponse:
    """A route refuses by raising ``InboundRejected``: one JSON answer with its status.
    A body that was not read to its end (413, 408) ends the connection. The database
    away (``StorageUnavailable``, from any route): 503, try again later."""
    try:
        response: web.StreamResponse = await handler(request)
    except InboundRejected as exc:
        response = web.json_response({"error": str(exc)}, status=exc.status)
        if exc.status in (408, 413):
            response.force_close()
    except StorageUnavailable as exc:
        log.warning("request_not_stored", path=request.path.split("/")[1], error=str(exc))
        response = web.json_response(
            {"error": "storage unavailable, try again later"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return response


class WebServer:
    """Start and stop ``make_app``'s application on ``listen:port``."""

    def __init__(
        self, app: web.Application, listen: str, port: int, *, idle_s: float = IDLE_TIMEOUT_S
    ) -> None:
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=idle_s
        )
        self._listen, self._port = listen, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._listen, self._port, backlog=1024)
        await site.start()
        log.info("web_server_started", listen=self._listen, port=self._port)

    async def stop(self) -> None:
        await self._runner.cleanup()
