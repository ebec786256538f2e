"""The two-way bridge: answers sent back on WhatsApp or Telegram come into the team chat.

WhatsMate Enterprise POSTs every message a recipient sends to a URL its owner registers.
``Bridge.accept`` checks such a body and stores it (the web server answers 200 only
after that, so "200 means stored"); ``Bridge.run_poster`` posts what is stored, under
the command that last paged that number when there is one, and marks it posted, which
drops the body. Because the outbox is in ``Storage``, a message accepted while Telegram
is down, or just before the process dies, is posted after recovery or restart.

Telegram lets a bot post about 20 messages a minute in a group, so one worker per chat
posts what waits for it: a single message as a post of its own (answerable by reply),
several as one merged post, one line each — never dropped, never queued for minutes.
Nothing here knows Telegram or HTTP: the web server and the Telegram front end plug in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from bot.audit import AuditLog
from bot.clock import Clock
from bot.errors import InboundRejected, PostFailed
from bot.logs import get_logger
from bot.recipients import AddressBook, clean_number, mask
from bot.storage import Arrival, InboundMessage, Storage
from bot.untrusted import decode_json_object, same_secret
from bot.vocabulary import AuditEntry, Channel, Outcome

CHANNELS = {channel.value: channel for channel in Channel}  # as inbound URLs spell them
MAX_BODY_BYTES = 64 * 1024
DUPLICATE_WITHIN_S = 120.0  # the same delivery again within this is posted once
THREAD_WITHIN_S = 24 * 3600.0  # an answer within this lands under the command that paged
LEASE_S = 15.0  # a replica that takes messages to post holds them this long, renewed
SCAN_EVERY_S = 5.0  # look for messages another replica stored (or left) this often
log = get_logger("bot.bridge")


@dataclass(frozen=True)
class Button:
    """A button under a post; pressing it hands ``data`` back to the bot."""

    label: str
    data: str


class Post(Protocol):
    """The front end's way into the chat, for the bridge and incident paging."""

    def __call__(
        self, chat_id: int, text: str, reply_to: int | None, buttons: Sequence[Button] = ()
    ) -> Awaitable[int]:
        """Post ``text`` in chat ``chat_id`` (as a reply to a message id, if given, with
        ``buttons`` under it); returns the id of the message a reply to the post would
        answer. Raises ``PostFailed``."""
        ...


InboundObserver = Callable[[str, str], None]
"""Called with (channel, result) for every inbound request: stored, repeated, rejected,
acknowledged."""

Acknowledger = Callable[[Channel, str, str], Awaitable[bool]]
"""(channel, number, message): True when the message acknowledged an incident (it is
then not posted as an inbound message); paging plugs in here."""


@dataclass(frozen=True)
class Composed:
    text: str
    reply_to: int | None


def parse_inbound(raw: bytes) -> tuple[str, str]:
    """``(number, message)`` of an inbound body, or ``InboundRejected`` saying why not."""
    if len(raw) > MAX_BODY_BYTES:
        raise InboundRejected(413, f"body over {MAX_BODY_BYTES} bytes")
    data = decode_json_object(raw)
    number = data.get("number")
    digits = clean_number(str(number)) if isinstance(number, str | int) else None
    if isinstance(number, bool) or digits is None:
        raise InboundRejected(400, "number must be a phone number of 5-15 digits")
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        raise InboundRejected(400, "message must be a non-empty text")
    return digits, message


class Bridge:
    """Accepts inbound messages into ``Storage`` and posts them into the chat."""

    def __init__(
        self,
        storage: Storage,
        audit: AuditLog,
        *,
        secret: str,
        default_chat: int,
        address_book: AddressBook,
        clock: Clock,
        observe: InboundObserver | None = None,
        acknowledge: Acknowledger | None = None,
    ) -> None:
        self._storage = storage
        self._acknowledge = acknowledge
        self._audit = audit
        self._secret = secret
        self._default_chat = default_chat
        self._address_book = address_book
        self._clock = clock
        self._observe = observe
        self._wake = asyncio.Event()
        self._workers: dict[int, asyncio.Task[None]] = {}

    def secret_matches(self, given: str) -> bool:
        """Constant-time comparison of the secret part of an inbound URL."""
        return same_secret(given, self._secret)

    async def accept(self, channel: Channel, raw: bytes) -> None:
        """Store one inbound message for posting; returns only once it is on disk."""
        try:
            number, message = parse_inbound(raw)
        except InboundRejected:
            self._count(channel, "rejected")
            raise
        if self._acknowledge is not None and await self._acknowledge(channel, number, message):
            self._count(channel, "acknowledged")
            return
        digest = hmac.new(
            self._secret.encode(), f"{channel.value}\0{number}\0{message}".encode(), hashlib.sha256
        ).hexdigest()
        now = self._clock.now()
        chat = await self._storage.accept_inbound(
            Arrival(
                channel,
                number,
                message,
                digest,
                received=now,
                repeat_after=now - DUPLICATE_WITHIN_S,
                thread_after=now - THREAD_WITHIN_S,
                default_chat=self._default_chat,
            )
        )
        if chat is None:
            self._count(channel, "repeated")
            log.info("inbound_repeated", channel=channel.value, number=mask(number))
            return
        self._count(channel, "stored")
        self._audit.record(AuditEntry(chat, 0, "inbound", (number,), Outcome.OK, channel.label))
        log.info("inbound_stored", channel=channel.value, number=mask(number), chat=chat)
        self._wake.set()

    def _count(self, channel: Channel, result: str) -> None:
        if self._observe is not None:
            self._observe(channel.value, result)

    # -- posting ----------------------------------------------------------------------

    async def run_poster(self, post: Post) -> None:
        """Post every stored message, now and whenever one arrives; runs until cancelled."""
        self._wake.set()  # whatever was stored before a restart goes out first
        try:
            while True:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for loses a cancel
                # that arrives as the event is set, and the poster would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SCAN_EVERY_S):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    waiting = await self._storage.waiting_chats()
                except Exception:  # the database is away: look again at the next scan
                    log.exception("poster_scan_failed")
                    continue
                for chat in waiting:
                    worker = self._workers.get(chat)
                    if worker is None or worker.done():
                        self._workers[chat] = asyncio.create_task(self._drain(chat, post))
                        self._workers[chat].add_done_callback(self._worker_ended)
        finally:
            for worker in self._workers.values():
                worker.cancel()
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    def _worker_ended(self, worker: asyncio.Task[None]) -> None:
        """Look again (something may have come in meanwhile); a failure is logged."""
        if not worker.cancelled() and worker.exception() is not None:
            log.error("poster_failed", exc_info=worker.exception())
        self._wake.set()

    async def post_all(self, post: Post) -> None:
        """Post everything stored now, chat by chat (for one-shot front ends: the demo)."""
        for chat in sorted(await self._storage.waiting_chats()):
            await self._drain(chat, post)

    async def _drain(self, chat: int, post: Post) -> None:
        """Post what waits for ``chat`` — merged when several wait — until nothing does."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(PostFailed),
            wait=wait_exponential(multiplier=0.5, max=30),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                while waiting := await self._storage.claim_inbound(
                    chat, self._clock.now(), LEASE_S
                ):
                    await self._post_taken(chat, waiting, post)

    async def _post_taken(self, chat: int, taken: list[InboundMessage], post: Post) -> None:
        """Post messages this replica took, holding the lease while Telegram is slow."""
        ids = [m.id for m in taken]
        composed = self.compose(taken)

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_S / 3)
                await self._storage.lease_inbound(ids, self._clock.now() + LEASE_S)

        renewing = asyncio.create_task(renew())
        try:
            post_id = await post(chat, composed.text, composed.reply_to)
        except PostFailed:
            await self._storage.lease_inbound(ids, None)  # merged with newer ones next try
            raise
        finally:
            renewing.cancel()
        await self._storage.mark_posted(ids, post_id, self._clock.now())

    def compose(self, messages: Sequence[InboundMessage]) -> Composed:
        """One message: a post of its own, under its thread. Several: one line each."""
        if len(messages) == 1:
            (message,) = messages
            head = f"{self._sender(message)} on {message.channel.label}:"
            return Composed(f"{head}\n{message.body}", message.reply_to)
        lines = [
            f"{self._sender(m)} on {m.channel.label}: {' '.join(m.body.split())}" for m in messages
        ]
        threads = {m.reply_to for m in messages}
        reply_to = threads.pop() if len(threads) == 1 else None
        header = f"{len(messages)} messages (answer with /wa or /tg, not by reply):"
        return Composed("\n".join([header, *lines]), reply_to)

    def _sender(self, message: InboundMessage) -> str:
        return self._address_book.alias_of(message.number) or mask(message.number)
