"""The bot's one web server (aiohttp, in the bot's event loop) on ``http.port``.

Everything the bot listens for is served here: ``/metrics`` and ``/healthz``, the
Telegram webhook at ``/telegram`` (the python-telegram-bot "custom webhook" way: the
handler hands each update to the application, PTB's own server is never started) and
the inbound URLs of the two-way bridge and Alertmanager's ``/alerts/<secret>``. One
server, one port, one network stack.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from bot.bridge import CHANNELS, MAX_BODY_BYTES, Bridge
from bot.errors import InboundRejected
from bot.logs import get_logger
from bot.metrics import Metrics
from bot.paging.escalation import Pager
from bot.paging.intake import MAX_BODY_BYTES as MAX_ALERT_BYTES

log = get_logger("bot.web")
Health = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]
"""Returns (healthy, details) for /healthz."""


@dataclass(frozen=True)
class Webhook:
    """Telegram's webhook: updates with the right secret token go to ``deliver``."""

    secret_token: str
    deliver: Callable[[object], Awaitable[None]]


def make_app(
    *,
    health: Health,
    metrics: Metrics | None = None,
    webhook: Webhook | None = None,
    bridge: Bridge | None = None,
    pager: Pager | None = None,
) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)

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
            if not hmac.compare_digest(token.encode(), hook.secret_token.encode()):
                return web.Response(status=403, text="forbidden\n")
            try:
                update = await request.json()
            except (ValueError, UnicodeDecodeError):
                return web.Response(status=400, text="not JSON\n")
            await hook.deliver(update)
            return web.Response(text="ok\n")

        app.router.add_post("/telegram", telegram)
    if bridge is not None:
        inbound = bridge

        async def accept(request: web.Request) -> web.Response:
            channel = CHANNELS.get(request.match_info["channel"])
            if channel is None or not inbound.secret_matches(request.match_info["secret"]):
                raise web.HTTPNotFound()
            if (request.content_length or 0) > MAX_BODY_BYTES:
                return _refused(InboundRejected(413, f"body over {MAX_BODY_BYTES} bytes"))
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            try:
                await inbound.accept(channel, raw)
            except InboundRejected as exc:
                return _refused(exc)
            return web.json_response({"status": "stored"})

        app.router.add_post("/inbound/{channel}/{secret}", accept)
    if pager is not None:
        paging = pager
        expected = paging.alerts.secret.encode()

        async def alerts(request: web.Request) -> web.Response:
            """Alertmanager's webhook: 200 only once stored, 503 when it cannot be."""
            if not hmac.compare_digest(request.match_info["secret"].encode(), expected):
                raise web.HTTPNotFound()
            if request.method != "POST":
                raise web.HTTPMethodNotAllowed(request.method, ["POST"])
            try:
                await paging.accept(await read_capped(request, MAX_ALERT_BYTES))
            except InboundRejected as exc:
                return _refused(exc)
            except Exception:
                log.exception("alert_not_stored")
                return web.json_response({"error": "could not be stored; retry"}, status=503)
            return web.json_response({"status": "stored"})

        app.router.add_route("*", "/alerts/{secret}", alerts)
    return app


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The whole body, however it arrives (pieces, chunked); over ``limit``: a 413."""
    if (request.content_length or 0) > limit:
        raise InboundRejected(413, f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise InboundRejected(413, f"body over {limit} bytes")
    return bytes(body)


def _refused(exc: InboundRejected) -> web.Response:
    return web.json_response({"error": str(exc)}, status=exc.status)


class WebServer:
    """Start and stop ``make_app``'s application on ``listen:port``."""

    def __init__(self, app: web.Application, listen: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._listen, self._port = listen, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._listen, self._port, backlog=1024)
        await site.start()
        log.info("web_server_started", listen=self._listen, port=self._port)

    async def stop(self) -> None:
        await self._runner.cleanup()
