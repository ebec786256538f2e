"""Wire the parts together once, for every front end (Telegram, exec, check, demo).

One ``httpx.AsyncClient`` (one connection pool sized for fan-out), one ``Storage``
(SQLite, or PostgreSQL for replicas), one gateway, one service. Everything that is
opened here is closed here, in reverse order, with the audit closed last-but-one (a last
write; an entry the database still cannot take is logged, never dropped silently).
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
from bot.commands import Channel
from bot.config import Config, url_passwords
from bot.errors import ConfigError
from bot.gateway import WhatsMate
from bot.logs import redact
from bot.metrics import Metrics
from bot.pdf import DEFAULT_PDF_POLLING, PdfPolling
from bot.service import Service
from bot.storage import SqliteStorage, Storage
from bot.transport import AiohttpTransport


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
            service = Service(
                config,
                gateway,
                audit,
                storage=storage,
                observe=metrics.observe_command if metrics else None,
                pdf_polling=pdf_polling,
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
                    clock=clock or time.time,
                )
            try:
                yield Runtime(config, http, audit, gateway, service, metrics, storage, bridge)
            finally:
                await audit.close()
    finally:
        await storage.aclose()


async def open_storage(config: Config) -> Storage:
    """PostgreSQL when ``database.url`` is set (replicas), else SQLite at ``audit.path``."""
    if config.database_url is None:
        return SqliteStorage(config.audit_path)
    from bot.storage_pg import PostgresStorage  # asyncpg only for teams that use it

    try:
        return await PostgresStorage.connect(config.database_url)
    except ValueError as exc:  # asyncpg's ClientConfigurationError: a setting it refuses
        reason = redact(str(exc), url_passwords(config.database_url))
        raise ConfigError("database.url", f"asyncpg cannot use it: {reason[:200]}") from None
