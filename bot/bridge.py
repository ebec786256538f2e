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

A post is never lost and never silently doubled, on a network that loses answers:

* messages are taken under a lease held by one replica (``holder``), renewed while
  Telegram is slow; a renewal that finds the lease gone stops the post;
* before each part of a post is sent, storage records that it may be in the chat; the
  answer clears that. A part whose answer was lost (or whose sender died) is sent again
  marked ``REPEAT_MARK``; a part Telegram surely did not take is sent again unmarked;
* a long post goes on from the part that failed (the parts done are recorded), and its
  messages stay one post until it is done;
* "posted" is written with retries until it is stored (else the lease would run out and
  the post go out again);
* a chat Telegram refuses for good is left for the one it moved to, else ``inbound.chat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
)

from bot.audit import AuditLog
from bot.clock import Clock
from bot.errors import ChatRefused, InboundRejected, PostFailed, PostMaybeSent
from bot.logs import get_logger
from bot.recipients import AddressBook, clean_number, mask
from bot.replicas import replica_id
from bot.replies import TELEGRAM_MESSAGE_MAX, split_text
from bot.storage import Arrival, InboundMessage, PostProgress, Storage, Taken
from bot.untrusted import decode_json_object, same_secret
from bot.vocabulary import AuditEntry, Channel, Outcome

T = TypeVar("T")
CHANNELS = {channel.value: channel for channel in Channel}  # as inbound URLs spell them
MAX_BODY_BYTES = 64 * 1024
DUPLICATE_WITHIN_S = 120.0  # the same delivery again within this is posted once
THREAD_WITHIN_S = 24 * 3600.0  # an answer within this lands under the command that paged
LEASE_S = 15.0  # a replica that takes messages to post holds them this long, renewed
RENEW_EVERY_S = LEASE_S / 3  # how often a lease is renewed while a post is under way
SCAN_EVERY_S = 5.0  # look for messages another replica stored (or left) this often
REPEAT_MARK = "(may be a repeat)\n"  # heads a part that may already be in the chat
PART_MAX = TELEGRAM_MESSAGE_MAX - len(REPEAT_MARK)  # so that any part can carry the mark
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
        """Post ``text`` (one message, at most Telegram's 4096 characters) in chat
        ``chat_id``, as a reply to a message id if given, with ``buttons`` under it;
        returns the id of the message posted. Raises ``PostFailed`` (surely not posted),
        ``PostMaybeSent`` (the answer was lost) or ``ChatRefused`` (never in that chat)."""
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


async def woken(wake: asyncio.Event, within_s: float) -> None:
    """Until ``wake`` is set or ``within_s`` has passed, then clear it: a loop's wait for
    work. asyncio.timeout, not wait_for: in Python 3.11 wait_for loses a cancel that
    arrives as the event is set, and the loop would never stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            await wake.wait()
    wake.clear()


async def until_stored(what: str, write: Callable[[], Awaitable[T]]) -> T:
    """``write()``, tried again until the database takes it: a post in the chat whose
    record is lost would be posted again when its lease runs out (the bridge's and the
    incident posts' "posted" writes)."""

    def failed(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(f"{what}_not_stored", attempt=state.attempt_number, error=repr(error))

    retrying = AsyncRetrying(
        wait=wait_exponential(multiplier=0.1, max=2), before_sleep=failed, reraise=True
    )
    return await retrying(write)


async def keep_renewed(
    what: str, renew: Callable[[], Awaitable[bool]], every_s: float, lost: asyncio.Event
) -> None:
    """``renew()`` every ``every_s`` while a post is under way (until cancelled): a
    failed renewal is logged and tried again (the lease still runs), a lease found taken
    by another replica (False) sets ``lost``, which stops the post."""
    while True:
        await asyncio.sleep(every_s)
        try:
            held = await renew()
        except Exception as exc:  # the database is away: try again, the lease still runs
            log.warning(f"{what}_failed", error=repr(exc))
            continue
        if not held:
            lost.set()
            return


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
        holder: str | None = None,
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
        self._holder = holder or replica_id()  # whose lease it is, across replicas
        self._refused: set[int] = set()  # chats Telegram refused for good, since start

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
        digest = hmac.new(
            self._secret.encode(), f"{channel.value}\0{number}\0{message}".encode(), hashlib.sha256
        ).hexdigest()
        now = self._clock.now()
        arrival = Arrival(
            channel,
            number,
            message,
            digest,
            received=now,
            repeat_after=now - DUPLICATE_WITHIN_S,
            thread_after=now - THREAD_WITHIN_S,
            default_chat=self._default_chat,
        )
        if await self._acknowledged(arrival):
            return
        chat = await self._storage.accept_inbound(arrival)
        if chat is None:
            self._count(channel, "repeated")
            log.info("inbound_repeated", channel=channel.value, number=mask(number))
            return
        self._count(channel, "stored")
        self._audited(channel, number, chat)
        log.info("inbound_stored", channel=channel.value, number=mask(number), chat=chat)
        self._wake.set()

    async def _acknowledged(self, arrival: Arrival) -> bool:
        """True when the message acknowledged an incident: audited like any inbound
        message, and kept (without its body) so that WhatsMate's retry of it is a
        repeat. A repeat is checked first: it must not acknowledge (or answer) again."""
        if self._acknowledge is None or await self._storage.repeated_inbound(
            arrival.digest, arrival.repeat_after
        ):
            return False  # a repeat: accept_inbound says so
        if not await self._acknowledge(arrival.channel, arrival.number, arrival.body):
            return False
        chat = await self._storage.accept_inbound(replace(arrival, handled=True))
        self._count(arrival.channel, "acknowledged")
        self._audited(arrival.channel, arrival.number, chat or self._default_chat)
        return True

    def _audited(self, channel: Channel, number: str, chat: int) -> None:
        """Every inbound message is audited: ``inbound``, the (masked) number, channel."""
        self._audit.record(AuditEntry(chat, 0, "inbound", (number,), Outcome.OK, channel.label))

    def _count(self, channel: Channel, result: str) -> None:
        if self._observe is not None:
            self._observe(channel.value, result)

    # -- posting ----------------------------------------------------------------------

    async def run_poster(self, post: Post) -> None:
        """Post every stored message, now and whenever one arrives; runs until cancelled."""
        await self._storage.free_dead_leases()
        self._wake.set()  # whatever was stored before a restart goes out first
        try:
            while True:
                await woken(self._wake, SCAN_EVERY_S)
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
                while True:
                    taken = await self._storage.claim_inbound(
                        chat, self._clock.now(), LEASE_S, self._holder
                    )
                    if not taken.messages:
                        break
                    await self._post_taken(chat, taken, post)

    async def _post_taken(self, chat: int, taken: Taken, post: Post) -> None:
        """Post messages this replica took, holding the lease while Telegram is slow."""
        ids = [m.id for m in taken.messages]
        lost = asyncio.Event()
        renewing = asyncio.create_task(self._renew(ids, lost))
        try:
            await self._post_parts(chat, ids, taken, post, lost)
        except ChatRefused as refused:
            await self._redirect(chat, ids, refused)
        except PostFailed:
            with contextlib.suppress(Exception):  # else the lease runs out by itself
                await self._storage.lease_inbound(ids, self._holder, None)
            raise
        finally:
            renewing.cancel()

    async def _post_parts(
        self, chat: int, ids: list[int], taken: Taken, post: Post, lost: asyncio.Event
    ) -> None:
        """Send the parts not yet in the chat, each announced in storage before it goes."""
        composed = self.compose(taken.messages)
        parts = split_text(composed.text, PART_MAX)
        done = taken.progress
        for index in range(done.parts_done, len(parts)):
            text = REPEAT_MARK + parts[index] if done.maybe_sent else parts[index]
            sending = PostProgress(index, True, done.first_id)
            record = partial(self._storage.record_progress, ids, self._holder, sending)
            if lost.is_set() or not await until_stored("post_progress", record):
                log.warning("post_lease_lost", chat=chat, messages=len(ids))
                return  # another replica holds these now: it posts them (marked)
            try:
                message_id = await post(chat, text, composed.reply_to if index == 0 else None)
            except PostMaybeSent:
                log.warning("post_may_have_arrived", chat=chat, part=index + 1, parts=len(parts))
                raise
            except PostFailed:  # surely not in the chat: the next try needs no mark
                unsent = PostProgress(index, False, done.first_id)
                with contextlib.suppress(Exception):
                    await self._storage.record_progress(ids, self._holder, unsent)
                raise
            done = PostProgress(index + 1, False, done.first_id or message_id)
        mark = partial(self._storage.mark_posted, ids, done.first_id, self._clock.now())
        await until_stored("mark_posted", mark)

    async def _renew(self, ids: list[int], lost: asyncio.Event) -> None:
        """Hold the lease on ``ids`` while their post is under way."""

        async def renew() -> bool:
            until = self._clock.now() + LEASE_S
            return await self._storage.lease_inbound(ids, self._holder, until)

        await keep_renewed("lease_renewal", renew, RENEW_EVERY_S, lost)

    async def _redirect(self, chat: int, ids: list[int], refused: ChatRefused) -> None:
        """Telegram refuses ``chat`` for good: post in the chat it moved to, else in
        ``inbound.chat``; when that is refused too, give the messages up (logged)."""
        self._refused.add(chat)
        target = next(
            (
                c
                for c in (refused.moved_to, self._default_chat)
                if c is not None and c not in self._refused
            ),
            None,
        )
        if target is None:
            log.error("post_refused_everywhere", chat=chat, messages=len(ids), reason=str(refused))
            given_up = partial(self._storage.mark_posted, ids, None, self._clock.now())
            await until_stored("mark_posted", given_up)
            return
        log.warning("post_chat_refused", chat=chat, to_chat=target, reason=str(refused))
        await until_stored("post_moved", partial(self._storage.move_inbound, ids, chat, target))
        self._wake.set()  # the chat it went to gets a worker

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
