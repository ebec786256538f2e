"""Wire the parts together once, for every front end (Telegram, exec, check, demo).

One ``httpx.AsyncClient`` (one connection pool sized for fan-out), one ``Storage``
(SQLite, or PostgreSQL for replicas), one gateway, one service, one clock, one poller
lease. Everything that is opened here is closed here, in reverse order, with the audit
closed last-but-one (a last write; an entry the database still cannot take is logged,
never dropped silently).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from tenacity.wait import wait_base

from bot.audit import AuditLog
from bot.bridge import Bridge
from bot.clock import Clock, SystemClock
from bot.config import Config, url_passwords
from bot.errors import ConfigError
from bot.gateway import WhatsMate
from bot.health import GatewayHealth
from bot.logs import redact
from bot.metrics import Metrics
from bot.pdf import DEFAULT_PDF_POLLING, PdfPolling
from bot.replicas import Election, replica_id
from bot.schedules import Timers
from bot.service import Service
from bot.storage import Storage, open_storage
from bot.transport import AiohttpTransport
from bot.vocabulary import Channel

if TYPE_CHECKING:
    from bot.paging.escalation import Pager


@dataclass(frozen=True)
class Runtime:
    config: Config
    http: httpx.AsyncClient
    audit: AuditLog
    gateway: WhatsMate
    service: Service
    metrics: Metrics | None
    storage: Storage
    bridge: Bridge | None
    clock: Clock
    timers: Timers | None  # the schedules' timer, when the bot runs for good (``run``)
    gateway_health: GatewayHealth
    election: Election  # this replica's poller lease (run by the lifecycle when polling)
    pager: Pager | None = None  # incident paging, with ``alerts``


def http_client(
    config: Config, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The shared client: every timeout from ``whatsmate.timeout_s``, one pool for all calls,
    on the bot's one network stack (aiohttp, see ``transport``).

    ``max_connections`` caps what all commands together have in flight (so an incident
    burst cannot overload WhatsMate); ``max_concurrency`` bounds each broadcast within it.
    """
    wa = config.whatsmate
    limits = httpx.Limits(max_connections=wa.max_connections)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(wa.timeout_s),
        limits=limits,
        transport=transport or AiohttpTransport(limits),
        follow_redirects=False,
    )


@asynccontextmanager
async def open_runtime(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    backoff: wait_base | None = None,
    pdf_polling: PdfPolling = DEFAULT_PDF_POLLING,
    serving: bool = False,
) -> AsyncIterator[Runtime]:
    """Everything one front end needs; ``serving`` for the long-running bot (schedules
    run), not for one-shot front ends (exec, check, demo)."""
    # The one clock: every part that reads the time is handed this one.
    clock = clock if clock is not None else SystemClock()
    metrics = Metrics() if config.http.port else None
    timers = Timers() if serving else None
    gateway_health = GatewayHealth()
    storage = await _open_storage(config)
    try:
        async with http_client(config, transport) as http:
            audit = AuditLog(storage, clock)
            wa = config.whatsmate
            gateway = WhatsMate(
                http,
                base_url=wa.base_url,
                client_id=wa.client_id,
                client_secret=wa.client_secret,
                api_version=wa.api_version,
                instances={
                    Channel.WHATSAPP: wa.whatsapp_instance,
                    Channel.TELEGRAM: wa.telegram_instance,
                },
                whatsapp_queue=wa.whatsapp_endpoint == "queue",
                retries=wa.retries,
                backoff=backoff,
                dry_run=config.dry_run,
                **({"observer": metrics.observe_gateway} if metrics else {}),
            )
            replica = replica_id()  # this process: the poller lease's, the posts' and paging's
            pager = None
            if config.alerts is not None:  # paging's modules only for bots that page
                from bot.paging.alertmanager import Alertmanager
                from bot.paging.escalation import Pager
                from bot.storage.paging import PagingStore

                url = config.alerts.alertmanager_url
                pager = Pager(
                    config.alerts,
                    PagingStore(storage.driver),
                    gateway,
                    audit,
                    address_book=config.address_book,
                    clock=clock,
                    replica=replica,
                    send_lease_s=wa.timeout_s * (wa.retries + 1) + 30,
                    finish_s=wa.timeout_s * (wa.retries + 1),
                    max_concurrency=wa.max_concurrency,
                    alertmanager=Alertmanager(http, url) if url else None,
                    observer=metrics,
                    posts_per_minute=config.telegram.messages_per_minute_per_group,
                )
            service = Service(
                config,
                gateway,
                audit,
                storage=storage,
                observe=metrics.observe_command if metrics else None,
                clock=clock,
                scheduler=timers,
                gateway_health=gateway_health,
                pdf_polling=pdf_polling,
                pager=pager,
            )
            bridge = None
            if config.inbound is not None:
                bridge = Bridge(
                    storage,
                    audit,
                    secret=config.inbound.secret,
                    default_chat=config.inbound.chat,
                    address_book=config.address_book,
                    clock=clock,
                    observe=metrics.observe_inbound if metrics else None,
                    holder=replica,
                    acknowledge=pager.inbound_ack if pager else None,
                )
            try:
                yield Runtime(
                    config=config,
                    http=http,
                    audit=audit,
                    gateway=gateway,
                    service=service,
                    metrics=metrics,
                    storage=storage,
                    bridge=bridge,
                    clock=clock,
                    timers=timers,
                    gateway_health=gateway_health,
                    election=Election(
                        storage,
                        replica,
                        shared=config.database_url is not None,
                        clock=clock,
                    ),
                    pager=pager,
                )
            finally:
                await audit.close()
    finally:
        await storage.aclose()


async def _open_storage(config: Config) -> Storage:
    """``open_storage``; a ``database.url`` that asyncpg refuses is a config error."""
    try:
        return await open_storage(config)
    except ValueError as exc:  # asyncpg's ClientConfigurationError: a setting it refuses
        if config.database_url is None:
            raise
        reason = redact(str(exc), url_passwords(config.database_url))
        raise ConfigError("database.url", f"asyncpg cannot use it: {reason[:200]}") from None
