"""Wire the parts together once, for every front end (Telegram, exec, check, demo).

One ``httpx.AsyncClient`` (one connection pool sized for fan-out), one ``Storage``
(SQLite, or PostgreSQL for replicas), one gateway, one service. Everything that is
opened here is closed here, in reverse order, with the audit flushed last-but-one so no
entry is lost on shutdown.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from tenacity.wait import wait_base

from bot.audit import AuditLog
from bot.bridge import Bridge
from bot.config import Config
from bot.gateway import WhatsMate
from bot.metrics import Metrics
from bot.paging.alertmanager import Alertmanager
from bot.paging.escalation import Pager
from bot.pdf import DEFAULT_PDF_POLLING, PdfPolling
from bot.replicas import replica_id
from bot.service import Service
from bot.storage import Storage, open_storage
from bot.storage.paging import PagingStore
from bot.transport import AiohttpTransport
from bot.vocabulary import Channel


@dataclass
class Runtime:
    config: Config
    http: httpx.AsyncClient
    audit: AuditLog
    gateway: WhatsMate
    service: Service
    metrics: Metrics | None
    storage: Storage
    bridge: Bridge | None
    pager: Pager | None = None


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
    clock: Callable[[], float] | None = None,
    backoff: wait_base | None = None,
    pdf_polling: PdfPolling = DEFAULT_PDF_POLLING,
) -> AsyncIterator[Runtime]:
    metrics = Metrics() if config.http.port else None
    storage = await open_storage(config)
    try:
        async with http_client(config, transport) as http:
            audit = AuditLog(storage)
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
            pager = None
            if config.alerts is not None:
                url = config.alerts.alertmanager_url
                pager = Pager(
                    config.alerts,
                    PagingStore(storage.driver),
                    gateway,
                    audit,
                    address_book=config.address_book,
                    clock=clock or time.time,
                    replica=replica_id(),
                    send_lease_s=wa.timeout_s * (wa.retries + 1) + 30,
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
                pdf_polling=pdf_polling,
                pager=pager,
                **({"clock": clock} if clock else {}),
            )
            bridge = None
            if config.inbound is not None:
                bridge = Bridge(
                    storage,
                    audit,
                    secret=config.inbound.secret,
                    default_chat=config.inbound.chat,
                    address_book=config.address_book,
                    observe=metrics.observe_inbound if metrics else None,
                    acknowledge=pager.inbound_ack if pager else None,
                )
            try:
                yield Runtime(
                    config, http, audit, gateway, service, metrics, storage, bridge, pager
                )
            finally:
                await audit.flush()
    finally:
        await storage.aclose()
