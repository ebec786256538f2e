"""Incident posts into the chat: the opening post, replies under it, storms merged.

What an incident owes the chat is stored first (``PagingStore`` posts outbox) and
posted from there, like the bridge's inbound messages: the intake never waits for
Telegram, a post survives a restart, and a replica that dies holding posts gives them up
when its lease runs out. The claim on what is being posted is renewed while the post
is under way (a renewal that finds it taken stops the post), and "posted" is written
with retries until it is stored (the bridge's ``until_stored``): a post in the chat
whose record was lost would go out again, unmarked, when the claim ran out.
Telegram lets a bot post about 20 messages a minute in a group, and the front end
keeps that limit by making ``post`` wait; whatever piles up meanwhile
goes out as one post listing it all — each incident with ``/ack <n>`` instead of buttons
— never dropped, never queued for minutes. Pages never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from bot.bridge import (
    PART_MAX,
    REPEAT_MARK,
    Button,
    Post,
    keep_renewed,
    until_stored,
    woken,
)
from bot.clock import Clock
from bot.errors import ChatRefused, PostFailed, PostMaybeSent
from bot.logs import get_logger
from bot.replies import split_text
from bot.storage.paging import PagingStore, PostRow
from bot.vocabulary import ButtonPress, Press

LEASE_S = 60.0  # a replica that takes posts holds them this long, renewed
RENEW_EVERY_S = LEASE_S / 3  # how often a claim is renewed while a post is under way
SCAN_EVERY_S = 5.0  # look for posts another replica stored (or left) this often
log = get_logger("bot.paging.posts")


def buttons_for(number: int, silence: bool) -> tuple[Button, ...]:
    """Acknowledge, and Silence 1h when Alertmanager's API is configured."""
    ack = Button("Acknowledge", ButtonPress(str(number), Press.ACK).data)
    if not silence:
        return (ack,)
    return (ack, Button("Silence 1h", ButtonPress(str(number), Press.SILENCE).data))


@dataclass(frozen=True)
class Planned:
    """One post to make of the rows taken: which rows it carries and how it reads."""

    rows: tuple[PostRow, ...]
    chat_id: int
    text: str
    reply_to: int | None
    buttons: tuple[Button, ...] = ()


def plan(rows: Sequence[PostRow], allowance: Callable[[int], int]) -> Planned | None:
    """The next post of what waits (oldest first); None when nothing can go yet.

    Chat by chat, in the order their oldest post waits (a chat whose posts cannot go yet
    never holds up the others): each opening post is a post of its own (with its
    buttons), and the replies of one incident go under its post (an orphan's on their
    own), while the chat's ``allowance`` of posts covers them; beyond it everything
    waiting is merged into one post listing it all.
    """
    for chat in dict.fromkeys(r.chat_id for r in rows):
        planned = _plan_chat([r for r in rows if r.chat_id == chat], chat, allowance(chat))
        if planned is not None:
            return planned
    return None


def _plan_chat(here: Sequence[PostRow], chat: int, allowance: int) -> Planned | None:
    opened = {r.incident for r in here if r.opening}
    eligible = [
        r
        for r in here
        if r.opening or r.orphan or r.incident_post is not None or r.incident in opened
    ]
    units: dict[tuple[bool, int], list[PostRow]] = {}
    for row in eligible:
        if row.opening or row.incident not in opened:
            units.setdefault((row.opening, row.incident), []).append(row)
    if not units:
        return None
    if len(units) <= max(1, allowance):
        (opening, _), first = next(iter(units.items()))
        if opening:
            (row,) = first
            buttons = buttons_for(row.incident, row.silence)
            return Planned((row,), chat, row.body, None, buttons)
        text = "\n".join(r.body for r in first)
        return Planned(tuple(first), chat, text, first[0].incident_post)
    header = (
        f"{len(eligible)} incident updates (merged under Telegram's limit; /incidents lists all):"
    )
    return Planned(tuple(eligible), chat, "\n".join([header, *(r.line for r in eligible)]), None)


class IncidentPoster:
    """Posts what the incidents owe the chat, now and whenever more is stored."""

    def __init__(self, store: PagingStore, clock: Clock, per_minute: float = 20) -> None:
        self._store = store
        self._clock = clock
        self._per_minute = per_minute
        self._posted: dict[int, deque[float]] = defaultdict(deque)  # chat -> post times
        self._wake = asyncio.Event()
        self._refused: set[int] = set()  # chats Telegram refused for good, since start

    def _allowance(self, chat: int) -> int:
        """How many more posts the chat takes this minute (Telegram's group limit)."""
        posted, now = self._posted[chat], self._clock.monotonic()
        while posted and posted[0] < now - 60:
            posted.popleft()
        return int(self._per_minute) - len(posted)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, post: Post, fallback: int | None = None) -> None:
        """Until cancelled: post what is stored (whatever a restart left first); what a
        chat refuses for good goes to the chat it moved to, else to ``fallback``
        (``inbound.chat``)."""
        await self._store.recover_posts()
        self._wake.set()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.5, max=30),
        )
        while True:
            await woken(self._wake, SCAN_EVERY_S)
            try:
                async for attempt in retrying:
                    with attempt:
                        await self.post_all(post, fallback)
            except Exception:  # pragma: no cover - tenacity retries until it works
                log.exception("incident_posts_failed")

    async def post_all(self, post: Post, fallback: int | None = None) -> None:
        """Post everything that can go now (also the demo's one-shot way)."""
        while True:
            rows = await self._store.waiting_posts(self._clock.now())
            planned = plan(rows, self._allowance)
            if planned is None:
                return
            taken = sorted(r.id for r in planned.rows)
            now = self._clock.now()
            if not await self._store.claim_posts(taken, now, LEASE_S):
                continue  # another replica took some of them: look again
            lost = asyncio.Event()
            renewing = asyncio.create_task(self._renew(taken, now + LEASE_S, lost))
            try:
                post_id = await self._post(post, planned, lost)
            except ChatRefused as refused:
                await self._redirect(planned, refused, fallback)
                continue
            except PostMaybeSent:
                await until_stored("post_maybe_sent", partial(self._store.maybe_posted, taken))
                log.warning("incident_post_may_have_arrived", chat=planned.chat_id)
                raise
            except PostFailed:
                with contextlib.suppress(Exception):  # else the claim runs out by itself
                    await self._store.release_posts(taken)
                log.warning("incident_post_failed", chat=planned.chat_id, rows=len(taken))
                raise
            finally:
                renewing.cancel()
            if post_id is None:
                log.warning("incident_post_claim_lost", chat=planned.chat_id, rows=len(taken))
                continue  # another replica holds these now: it posts them
            done = partial(self._store.mark_posted, planned.rows, post_id, self._clock.now())
            await until_stored("incident_post_marked", done)

    async def _renew(self, ids: list[int], held: float, lost: asyncio.Event) -> None:
        """Hold the claim on ``ids`` (until ``held``) while their post is under way: the
        front end may hold it back for Telegram's limit."""

        async def renew() -> bool:
            nonlocal held
            until = self._clock.now() + LEASE_S
            if not await self._store.renew_posts(ids, held, until):
                return False
            held = until
            return True

        await keep_renewed("incident_post_renewal", renew, RENEW_EVERY_S, lost)

    async def _post(self, post: Post, planned: Planned, lost: asyncio.Event) -> int | None:
        """One post, in parts of at most a message each (the buttons under the last);
        the first part's id, or None when the claim was lost before a part went. A post
        that may be in the chat already says so."""
        again = any(row.maybe_sent for row in planned.rows)
        parts = split_text(planned.text, PART_MAX)
        first: int | None = None
        for index, part in enumerate(parts):
            if lost.is_set():
                return None
            last = index == len(parts) - 1
            message_id = await post(
                planned.chat_id,
                REPEAT_MARK + part if again else part,
                planned.reply_to if index == 0 else None,
                planned.buttons if last else (),
            )
            self._posted[planned.chat_id].append(self._clock.monotonic())
            first = message_id if first is None else first
        assert first is not None
        return first

    async def _redirect(self, planned: Planned, refused: ChatRefused, fallback: int | None) -> None:
        """Telegram refuses the incident chat for good: what waits for it (and its
        incidents' later posts) goes to the chat it moved to, else to ``fallback``; when
        that is refused too it is given up (logged) — never retried there forever."""
        chat = planned.chat_id
        self._refused.add(chat)
        target = next(
            (c for c in (refused.moved_to, fallback) if c is not None and c not in self._refused),
            None,
        )
        if target is None:
            log.error("incident_chat_refused", chat=chat, reason=str(refused))
            given_up = partial(self._store.give_up_posts, chat, self._clock.now())
            await until_stored("incident_posts_given_up", given_up)
            return
        log.warning("incident_chat_moved", chat=chat, to_chat=target, reason=str(refused))
        await until_stored("incident_posts_moved", partial(self._store.move_posts, chat, target))
