"""The Telegram front end: the only module that imports ``telegram``.

Handlers are thin adapters: they turn an ``Update`` into a ``service.Request``, hand it
to the ``Service`` and show the ``Reply``. What python-telegram-bot already does well is
used as it is: concurrent update processing, ``AIORateLimiter`` for flood limits (429
``retry_after``), the JobQueue for the expiry of prompts, the updater for polling or the
webhook. When it starts, polls and stops is not decided here: ``TelegramFrontend`` is
the ``lifecycle.FrontEnd`` that the lifecycle drives, and whether this replica may poll
is the poller lease's (``replicas.Election``); what is Telegram's of the lease's fence is
here: no ``getUpdates`` leaves unless ``Election.may_poll`` (``_FencedRequest``), each
term polls with a fresh ``Updater`` whose queue journals an update before the updater
may confirm it (``admit``), and a handler answers only while its term is held. State
lives in the ``TelegramFrontend`` object and the service, never in ``bot_data``.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from telegram import (
    Audio,
    Bot,
    BotCommand,
    BotCommandScopeChat,
    CallbackQuery,
    Document,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    PhotoSize,
    ReplyParameters,
    Update,
    User,
    Voice,
)
from telegram.constants import MessageLimit
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    TelegramError,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    BaseRateLimiter,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    Updater,
    filters,
)
from telegram.request import HTTPXRequest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from bot import commands
from bot.bridge import Button
from bot.commands import MediaKind
from bot.config import Config
from bot.errors import (
    AttachmentError,
    ChatRefused,
    ConfigError,
    InboundRejected,
    LimitExceeded,
    LostPollerRole,
    PostFailed,
    PostMaybeSent,
    StorageUnavailable,
    TelegramUnavailable,
)
from bot.logs import get_logger
from bot.replicas import POLL_TIMEOUT_S
from bot.replies import DATABASE_AWAY, Confirm, split_text
from bot.runtime import Runtime
from bot.schedules import Schedule
from bot.sends import FileCap, FileRef
from bot.service import CONFIRM_TTL_S, Interrupted, Reply, Request
from bot.storage import JournalEntry
from bot.transport import AiohttpTransport
from bot.vocabulary import ButtonPress, Press

log = get_logger("bot.telegram")
T = TypeVar("T")
Context = ContextTypes.DEFAULT_TYPE
App = Application[Any, Any, Any, Any, Any, Any]
# The poller lease term the update this task handles was admitted under (polling only).
_TERM: ContextVar[int | None] = ContextVar("poller_term", default=None)
# Whether the update this task handles has an answer Telegram took or may have taken (a
# write whose answer was lost): then ``on_error`` says nothing more, never a second answer.
_ANSWERED: ContextVar[bool] = ContextVar("answered", default=False)


@dataclass(frozen=True)
class TelegramAttachment:
    """A photo, audio, voice note or document of a message, fetched via getFile on demand."""

    kind: MediaKind
    filename: str
    file_id: str
    size: int | None
    bot: Bot
    http: httpx.AsyncClient

    async def download(self, destination: Path, cap: FileCap) -> None:
        """Stream the file to ``destination`` (never holding it in memory whole), and stop
        as soon as it is known to be over ``cap``: by the size getFile reports, by the
        answer's Content-Length, or by counting what arrives."""
        try:
            telegram_file = await self.bot.get_file(self.file_id)
            url = telegram_file.file_path
            if not url:
                raise AttachmentError("Telegram gave no file path")
            if (telegram_file.file_size or 0) > cap.max_bytes:
                raise LimitExceeded(cap.reason)
            async with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise AttachmentError(f"download failed with HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap.max_bytes:
                    raise LimitExceeded(cap.reason)
                written = 0
                with destination.open("wb") as target:
                    async for chunk in response.aiter_bytes(256 * 1024):
                        written += len(chunk)
                        if written > cap.max_bytes:
                            raise LimitExceeded(cap.reason)
                        target.write(chunk)
        except TelegramError as exc:
            raise AttachmentError(f"Telegram refused the file ({exc.message})") from None
        except httpx.HTTPError as exc:
            raise AttachmentError(f"download failed ({type(exc).__name__})") from None


def find_attachment(message: Message, http: httpx.AsyncClient) -> TelegramAttachment | None:
    """The file sent with the command, else the file of the message it replies to."""
    for source in (message, message.reply_to_message):
        if source is None:
            continue
        found = _file_of(source)
        if found is not None:
            kind, filename, file = found
            return TelegramAttachment(
                kind, filename, file.file_id, file.file_size, source.get_bot(), http
            )
    return None


def _file_of(message: Message) -> tuple[MediaKind, str, _File] | None:
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return MediaKind.PHOTO, "photo.jpg", largest
    if message.audio:
        name = message.audio.file_name or _named("audio", message.audio.mime_type, ".mp3")
        return MediaKind.AUDIO, name, message.audio
    if message.voice:
        return MediaKind.VOICE, _named("voice", message.voice.mime_type, ".ogg"), message.voice
    if message.document:
        name = message.document.file_name or _named("document", message.document.mime_type, "")
        return MediaKind.DOCUMENT, name, message.document
    return None


_File = PhotoSize | Audio | Voice | Document


def _named(stem: str, mime_type: str | None, fallback: str) -> str:
    if mime_type == "audio/ogg":
        return f"{stem}.ogg"
    return stem + ((mime_type and mimetypes.guess_extension(mime_type)) or fallback)


def user_name(user: User | None) -> str | None:
    """How the chat names someone: @username, else their name."""
    if user is None:
        return None
    return f"@{user.username}" if user.username else user.full_name or None


def to_request(message: Message, http: httpx.AsyncClient) -> Request:
    replied = message.reply_to_message
    return Request(
        user_name=user_name(message.from_user),
        user_id=message.from_user.id if message.from_user else 0,
        chat_id=message.chat_id,
        message_id=message.message_id,
        private=message.chat.type == "private",
        text=message.text or message.caption or "",
        reply_text=(replied.text or replied.caption) if replied else None,
        attachment=find_attachment(message, http),
    )


def _pressed(query: CallbackQuery | None) -> ButtonPress | None:
    return ButtonPress.parse(query.data) if query is not None and query.data else None


def _markup(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    row = [InlineKeyboardButton(b.label, callback_data=b.data) for b in buttons]
    return InlineKeyboardMarkup([row]) if row else None


def _confirm_buttons(confirm: Confirm) -> tuple[Button, ...]:
    send = ButtonPress(confirm.token, Press.SEND, confirm.command)
    return (
        Button("Send", send.data),
        Button("Cancel", ButtonPress(confirm.token, Press.CANCEL).data),
    )


_Answer = tuple[int, Reply, int]  # chat id, reply, the message it answers


@dataclass(frozen=True)
class _PromptRef:
    """Which confirmation prompt an expiry job is about."""

    token: str
    chat_id: int
    message_id: int


class TelegramFrontend:
    """Handlers and jobs of one running bot; holds what they share explicitly."""

    def __init__(
        self, runtime: Runtime, *, rate_limiter: BaseRateLimiter[Any] | None = None
    ) -> None:
        self.service = runtime.service
        self.http = runtime.http
        self.storage = runtime.storage
        self.clock = runtime.clock
        self.config = runtime.config
        self.replicated = runtime.config.database_url is not None
        self.webhook = bool(runtime.config.telegram.webhook_url)
        self.election = runtime.election
        self.replica = self.election.holder  # its name in the journal and on the lease
        self.updater: Updater | None = None  # polling: a fresh one each time we lead
        self._inflight: dict[int, int] = {}  # update id -> term it is handled under (0: webhook)
        self._unrecorded: set[int] = set()  # could not be journaled: answered, never run
        self._unmarked: set[int] = set()  # handled, but "done" not stored yet
        self._marking: asyncio.Task[None] | None = None  # stores them until it can
        self._requests = (_request(TELEGRAM_POOL), _FencedRequest(self.election.may_poll))
        self.app = _application(runtime.config, rate_limiter, self._requests)
        self._route(self.app)

    def _route(self, app: App) -> None:
        """Which handler answers which update."""
        # A text reply to one of the bot's messages may answer a bridge post.
        app.add_handler(
            MessageHandler(
                filters.UpdateType.MESSAGE
                & filters.REPLY
                & filters.TEXT
                & ~filters.Regex(r"^\s*/"),
                self.on_reply,
            )
        )
        # Commands anywhere; in a private chat every text gets an answer (a hint if not a
        # command).
        command_text = filters.Regex(r"^\s*/") | filters.CaptionRegex(r"^\s*/")
        private_text = filters.ChatType.PRIVATE & (filters.TEXT | filters.CAPTION)
        app.add_handler(
            MessageHandler(
                filters.UpdateType.MESSAGE & (command_text | private_text), self.on_command
            )
        )
        app.add_handler(CallbackQueryHandler(self.on_button, pattern=f"^{Press.SEND.area}:"))
        app.add_handler(
            CallbackQueryHandler(self.on_incident_button, pattern=f"^{Press.ACK.area}:")
        )
        if self.replicated:  # every update recorded before, and marked after, handling
            app.add_handler(TypeHandler(Update, self.journal_start), group=-1)
            app.add_handler(TypeHandler(Update, self.journal_done), group=1)
        app.add_error_handler(self.on_error)

    # -- the update journal (replicas on PostgreSQL) ------------------------------------

    async def admit(self, update: object) -> None:
        """Every update on its way to the handlers: the updater's ``put`` (polling) or the
        web server's (webhook). Replicated, it is journaled first — while polling, only
        under this replica's lease — so the updater asks Telegram for more (which confirms
        these) only once they are recorded. Seen before: dropped. Not ours: dropped, and
        the next poller gets it from Telegram. Database away: answered in one line and
        never run, once Telegram has forgotten it (else a later poller would run it)."""
        if not self.replicated or not isinstance(update, Update):
            await self.app.update_queue.put(update)
            return
        update_id, now = update.update_id, self.clock.now()
        payload = json.dumps(update.to_dict())
        term = 0 if self.webhook else self.election.term
        try:
            if term == 0:
                fresh: bool | None = await self.storage.record_update(
                    update_id, self.replica, payload, now
                )
            elif term is None:
                fresh = None
            else:
                fresh = await self.storage.record_polled_update(
                    update_id, self.replica, payload, now, term
                )
        except StorageUnavailable as exc:  # the record is not there
            log.warning("journal_unreachable", update_id=update_id, error=type(exc).__name__)
            if self.webhook or await self._confirm(update_id):
                self._unrecorded.add(update_id)
                await self.app.update_queue.put(update)
            return
        if fresh is None:
            log.warning("update_not_ours", update_id=update_id)
            self.election.lost()
        elif not fresh:
            log.info("update_seen_before", update_id=update_id)
        else:
            assert term is not None
            self._inflight[update_id] = term
            await self.app.update_queue.put(update)

    async def _confirm(self, update_id: int) -> bool:
        """Make Telegram forget ``update_id`` (getUpdates with the next offset, fenced like
        every getUpdates): True once it has."""
        try:
            await self.app.bot.get_updates(
                offset=update_id + 1, timeout=0, allowed_updates=ALLOWED_UPDATES
            )
        except TelegramError as exc:
            log.warning("update_not_confirmed", update_id=update_id, error=type(exc).__name__)
            return False
        return True

    async def journal_start(self, update: Update, context: Context) -> None:
        """Before any handler: an update that could not be journaled gets its one line;
        one admitted under a lease this replica no longer holds is left to the poller
        that does (its recovery answers or reruns it)."""
        update_id = update.update_id
        if update_id in self._unrecorded:
            self._unrecorded.discard(update_id)
            await self._answer_unrecorded(update, context)
            raise ApplicationHandlerStop
        term = self._inflight.get(update_id)
        if term is None:  # pragma: no cover - every update is admitted or recovered
            raise ApplicationHandlerStop
        if term:
            _TERM.set(term)
            if not self.election.holds(term):
                self._let_go(update_id)
                raise ApplicationHandlerStop

    async def journal_done(self, update: Update, context: Context) -> None:
        """After every handler: the update is handled (its id is kept for dedupe)."""
        if self._fenced():
            self._let_go(update.update_id)
            return
        self._inflight.pop(update.update_id, None)
        self._unmarked.add(update.update_id)
        try:
            await self._mark_done()
        except StorageUnavailable as exc:  # answered: stored as soon as the database is back
            log.warning("journal_done_failed", update_id=update.update_id, error=type(exc).__name__)
            if self._marking is None or self._marking.done():
                self._marking = asyncio.create_task(self._mark_until_stored())
            return
        log.debug("update_done", update_id=update.update_id)

    async def _mark_done(self) -> None:
        """Store "done" for every handled update (a failure is tried again next time)."""
        for update_id in sorted(self._unmarked):
            await self.storage.finish_update(update_id)
            self._unmarked.discard(update_id)

    async def _mark_until_stored(self) -> None:
        """Keep trying: an answered update whose "done" is not stored would be run again
        by the next poller's recovery — a second answer."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(StorageUnavailable),
            wait=wait_exponential(multiplier=0.2, max=5),
        ):
            with attempt:
                await self._mark_done()
        log.info("journal_done_stored")

    def _fenced(self) -> bool:
        """True when this task handles an update under a lease this replica lost."""
        term = _TERM.get()
        return term is not None and not self.election.holds(term)

    def _must_hold(self) -> None:
        if self._fenced():
            raise LostPollerRole("the poller lease ran out while handling an update")

    def _let_go(self, update_id: int) -> None:
        """Stop handling an update under a lost lease: unfinished, the poller reruns it."""
        if self._inflight.get(update_id) == _TERM.get():
            del self._inflight[update_id]
        log.warning("update_left_to_the_poller", update_id=update_id, term=_TERM.get())

    async def _answer_unrecorded(self, update: Update, context: Context) -> None:
        """The one line for an update the journal could not take (if a handler would
        take the update at all)."""
        if not any(h.check_update(update) for h in self.app.handlers.get(0, [])):
            return
        message, query = update.message, update.callback_query
        if message is not None:
            reply = self.service.unrecorded(to_request(message, self.http))
            await self.send(context.bot, message.chat_id, reply, reply_to=message.message_id)
        elif query is not None:
            await _quietly(query.answer(DATABASE_AWAY))

    async def recover(self, term: int) -> None:
        """On becoming the poller: finish what an earlier poller (this replica's too)
        started and did not finish. A send is answered ``outcome unknown`` (never sent
        again), one that asks to confirm never asks twice; anything else runs again.
        Nothing recorded more than 24 hours ago is run (the storage leaves it out).

        Fenced like a handler (under ``term``: it stops as soon as the lease is lost) and
        at most once per entry: each is claimed in the database under the lease before it
        is answered or rerun, and an answered one is marked done before its answer is
        posted — an answer Telegram took but whose reply was lost is not posted again.
        One entry that fails is logged; the others are still recovered."""
        _TERM.set(term)
        await self._mark_done()
        for entry in await self.storage.unfinished_updates("", self.clock.now()):  # "": ours too
            if not self.election.holds(term):
                log.warning("recovery_stopped", term=term, reason="lost the poller lease")
                return
            update_id = entry.update_id
            if self._inflight.get(update_id) == term or update_id in self._unmarked:
                continue  # running here under this lease, or queued by an earlier try
            try:
                await self._recover_entry(entry, term)
            except LostPollerRole:
                log.warning("recovery_stopped", term=term, reason="lost the poller lease")
                return
            except Exception as exc:  # this entry only: the others are still recovered
                if isinstance(exc, TelegramError) and _may_have_arrived(exc):  # done already
                    log.warning("answer_outcome_unknown", update_id=update_id)
                else:
                    log.exception("recovery_failed", update_id=update_id)

    async def _recover_entry(self, entry: JournalEntry, term: int) -> None:
        update_id, bot = entry.update_id, self.app.bot
        if not await self.storage.claim_journal_entry(update_id, self.replica, term):
            return  # done meanwhile, claimed in an earlier round, or the lease is gone
        update = Update.de_json(json.loads(entry.payload), bot)
        answer = await self._interrupted_send(update)
        if answer is None:
            self._inflight[update_id] = term
            await self.app.update_queue.put(update)
        else:
            self._must_hold()
            await self.storage.finish_update(update_id)  # first: posted at most once
            chat_id, reply, reply_to = answer
            await self.send(bot, chat_id, reply, reply_to=reply_to)
        log.info("recovered_update", update_id=update_id, owner=entry.owner)

    async def _interrupted_send(self, update: Update) -> _Answer | None:
        """The answer to a send the dead poller may have made; None when it is safe to
        rerun."""
        if update.message is not None:
            return await self._interrupted_message(update.message)
        query = update.callback_query
        if query is not None and query.data and isinstance(query.message, Message):
            return await self._interrupted_press(query.data, query.from_user.id, query.message)
        return None

    async def _interrupted_message(self, message: Message) -> _Answer | None:
        """A command that sends, or a reply to a bridge post (it sends back)."""
        request = to_request(message, self.http)
        replied = message.reply_to_message
        post = replied and await self.storage.find_post(message.chat_id, replied.message_id)
        if post:
            reply = await self.service.interrupted(request, post.channel.command)
        elif (kind := self.service.interruption(request)) is Interrupted.NOTHING:
            return None
        else:
            reply = await self.service.interrupted(request, prompt=kind is Interrupted.PROMPT)
        return message.chat_id, reply, message.message_id

    async def _interrupted_press(self, data: str, user_id: int, prompt: Message) -> _Answer | None:
        """Send pressed on a prompt: still waiting means nobody sent it yet (rerun)."""
        pressed = ButtonPress.parse(data)
        if pressed is None or pressed.press is not Press.SEND:
            return None
        if await self.service.prompt_waiting(pressed.key):
            return None
        request = Request(user_id, prompt.chat_id, False, prompt.text or "")
        # anyone can send any callback data: a name only if it is one of our commands
        name = pressed.command if pressed.command in commands.SPECS else None
        reply = await self.service.interrupted(request, name)
        return prompt.chat_id, reply, prompt.message_id

    async def on_command(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or commands.is_for_other_bot(
            message.text or message.caption or "", context.bot.username
        ):
            return
        reply = await self.service.handle(to_request(message, self.http))
        await self.answer(context, message, reply)

    async def on_reply(self, update: Update, context: Context) -> None:
        """A text reply to one of the bot's messages: a bridge post's answer goes back out."""
        message = update.effective_message
        if message is None:
            return
        replied, reply = message.reply_to_message, None
        if replied and replied.from_user and replied.from_user.id == context.bot.id:
            request = to_request(message, self.http)
            reply = await self.service.answer_post(request, replied.message_id)
        if reply is not None:
            await self.answer(context, message, reply)
        elif message.chat.type == "private":
            await self.on_command(update, context)  # not a post: the usual private hint

    async def answer(self, context: Context, message: Message, reply: Reply) -> None:
        """Reply under ``message``; a confirmation prompt expires by itself."""
        sent = await self.send(context.bot, message.chat_id, reply, reply_to=message.message_id)
        if reply.confirm and sent and context.job_queue is not None:
            context.job_queue.run_once(
                self.expire_prompt,
                CONFIRM_TTL_S,
                data=_PromptRef(reply.confirm.token, sent[-1].chat_id, sent[-1].id),
            )

    async def post(
        self, chat_id: int, text: str, reply_to: int | None, buttons: Sequence[Button] = ()
    ) -> int:
        """The bridge's and paging's way into the chat: one message (they split), its id,
        with ``buttons`` under it.

        What a failure means decides what the bridge does next: a chat refused for good
        (``ChatRefused``), an answer lost after the request left (``PostMaybeSent``: it
        may be in the chat), or surely not posted (``PostFailed``).
        """
        parameters = (
            ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        )
        try:
            message = await self.app.bot.send_message(
                chat_id,
                text,
                reply_parameters=parameters,
                reply_markup=_markup(buttons),
                read_timeout=POST_READ_TIMEOUT_S,
            )
        except ChatMigrated as exc:
            moved = int(exc.new_chat_id)
            raise ChatRefused(f"the group became supergroup {moved}", moved_to=moved) from None
        except (Forbidden, BadRequest) as exc:  # BadRequest is a NetworkError: before it
            raise ChatRefused(f"Telegram refuses the chat ({exc.message})") from None
        except TelegramError as exc:
            failure = PostMaybeSent if _may_have_arrived(exc) else PostFailed
            raise failure(f"Telegram did not answer the post ({exc.message})") from None
        return int(message.message_id)

    async def on_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        pressed = _pressed(query)
        if query is None or pressed is None:
            return
        result = await self.service.press(
            pressed.key, query.from_user.id, pressed.press is Press.SEND, self.load_attachment
        )
        self._must_hold()
        await _quietly(query.answer(result.toast))
        if result.reply is not None and isinstance(query.message, Message):
            await self.replace(context.bot, query.message, result.reply)

    async def on_incident_button(self, update: Update, context: Context) -> None:
        """Acknowledge or Silence 1h under an incident post."""
        query = update.callback_query
        pressed = _pressed(query)
        if query is None or pressed is None or not isinstance(query.message, Message):
            return
        toast = await self.service.incident_button(
            int(pressed.key),
            pressed.press,
            query.from_user.id,
            query.message.chat_id,
            user_name(query.from_user) or f"user {query.from_user.id}",
        )
        self._must_hold()
        await _quietly(query.answer(toast[:200]))

    async def on_error(self, update: object, context: Context) -> None:
        if self._fenced() and isinstance(update, Update):  # the poller answers it
            self._let_go(update.update_id)
            raise ApplicationHandlerStop
        if _ANSWERED.get():  # answered already, or maybe (its answer was lost): one answer
            error = context.error
            lost = isinstance(error, TelegramError) and _may_have_arrived(error)
            event = "answer_outcome_unknown" if lost else "error_after_answer"
            log.warning(event, error=type(context.error).__name__, exc_info=not lost)
            return
        error_id = secrets.token_hex(4)
        log.error("unhandled_error", error_id=error_id, exc_info=context.error)
        if isinstance(update, Update) and update.effective_chat is not None:
            text = f"Something went wrong (error id {error_id}); it has been logged."
            await _quietly(context.bot.send_message(update.effective_chat.id, text))

    def load_attachment(self, ref: FileRef) -> TelegramAttachment:
        """A prompt's file, found again by its Telegram file id."""
        return TelegramAttachment(
            ref.kind, ref.filename, ref.file_id, ref.size, self.app.bot, self.http
        )

    async def expire_prompt(self, context: Context) -> None:
        _not_an_update()
        job = context.job
        if job is None or not isinstance(job.data, _PromptRef):
            return
        token, chat_id, message_id = job.data.token, job.data.chat_id, job.data.message_id
        reply = await self.service.expire(token)
        if reply is not None:
            await _quietly(context.bot.edit_message_text(reply.text, chat_id, message_id))

    async def run_schedule(self, schedule: Schedule) -> None:
        """A schedule came due: run it, and post what it says in its chat."""
        _not_an_update()
        reply = await self.service.run_scheduled(schedule)
        if reply is not None:
            await self.send(self.app.bot, schedule.chat_id, reply)

    async def send(
        self,
        bot: Bot,
        chat_id: int,
        reply: Reply,
        reply_to: int | None = None,
        buttons: Sequence[Button] = (),
    ) -> list[Message]:
        """Post ``reply`` (split if long); the last message carries any buttons.

        Handling an update, only while this replica holds the lease it was admitted under.
        Once a message is written, its update has an answer (``_ANSWERED``) unless Telegram
        surely refused it; a ``NetworkError`` (the answer lost) leaves that in doubt, so
        nothing more is said about the update.
        """
        self._must_hold()
        if reply.confirm:
            buttons = _confirm_buttons(reply.confirm)
        parameters = (
            ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        )
        if reply.file is not None:
            document = await _answering(
                bot.send_document(
                    chat_id,
                    reply.file.content,
                    filename=reply.file.filename,
                    caption=split_text(reply.text, MessageLimit.CAPTION_LENGTH)[0],
                    reply_parameters=parameters,
                )
            )
            return [document]
        chunks = split_text(reply.text)
        sent: list[Message] = []
        for index, chunk in enumerate(chunks):
            markup = _markup(buttons) if index == len(chunks) - 1 else None
            sent.append(
                await _answering(
                    bot.send_message(
                        chat_id,
                        chunk,
                        reply_parameters=parameters if index == 0 else None,
                        reply_markup=markup,
                    )
                )
            )
        return sent

    async def replace(self, bot: Bot, message: Message, reply: Reply) -> None:
        """Put ``reply`` on a prompt message (buttons removed); overflow goes in new messages."""
        self._must_hold()
        first, *rest = split_text(reply.text)
        await _quietly(
            _answering(bot.edit_message_text(first, message.chat_id, message.message_id))
        )
        for chunk in rest:
            await _answering(bot.send_message(message.chat_id, chunk))

    # -- what the lifecycle drives (``lifecycle.FrontEnd``) ------------------------------

    async def start(self) -> None:
        """Ready to handle updates (none is taken in yet); the command menu registered.

        The first call (``getMe``) is retried while Telegram cannot be reached, for
        ``STARTUP_RETRY_S``; a token Telegram rejects is a config error. Either way the
        bot stops with one line — never a traceback, which would print the token.
        """
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(NetworkError),
                stop=stop_after_delay(STARTUP_RETRY_S),
                wait=wait_exponential(multiplier=0.5, max=5),
                reraise=True,
            ):
                with attempt:
                    await self.app.initialize()
        except InvalidToken:
            await self._close_requests()
            raise ConfigError("telegram.token", "Telegram rejected the bot token") from None
        except NetworkError as exc:
            await self._close_requests()
            raise TelegramUnavailable(
                f"cannot reach Telegram at telegram.base_url ({type(exc).__name__})"
            ) from None
        try:
            await self.app.start()
        except BaseException:
            await self.app.shutdown()
            raise
        await _quietly(self.register_commands(self.app.bot))

    async def _close_requests(self) -> None:
        """An Application that never initialised does not close its clients itself."""
        await asyncio.gather(*(r.shutdown() for r in self._requests), return_exceptions=True)

    async def stop(self) -> None:
        """Finish every update in flight, then close (polling has stopped by now)."""
        await self.app.stop()
        if self._marking is not None:
            self._marking.cancel()
            await asyncio.gather(self._marking, return_exceptions=True)
        try:
            await self._mark_done()  # a last try; what is left, the next poller reruns
        except StorageUnavailable:
            log.warning("journal_done_not_stored", updates=sorted(self._unmarked))
        await self.app.shutdown()

    async def start_polling(self, term: int) -> None:
        """Become the poller under lease ``term``: first finish what an earlier poller
        started (replicas), then poll with a fresh updater whose queue is ``admit``."""
        if self.replicated:
            await self.recover(term)
        updater = Updater(self.app.bot, _AdmittingQueue(self.admit))
        await updater.initialize()
        await updater.start_polling(
            timeout=POLL_TIMEOUT_S,
            allowed_updates=ALLOWED_UPDATES,
            error_callback=_polling_failed,
        )
        self.updater = updater

    async def stop_polling(self) -> None:
        """Stop polling (its last getUpdates confirms what was taken in)."""
        updater, self.updater = self.updater, None
        if updater is not None and updater.running:
            await updater.stop()

    @property
    def polling(self) -> bool:
        return self.updater is not None and self.updater.running

    async def register_webhook(self) -> None:
        """Webhook mode: tell Telegram where to deliver (the bot's web server)."""
        telegram = self.config.telegram
        await self.app.bot.set_webhook(
            telegram.webhook_url or "",
            secret_token=telegram.secret_token,
            allowed_updates=ALLOWED_UPDATES,
        )

    async def deliver(self, data: dict[str, Any]) -> None:
        """An update the webhook received, handed to the application like a polled one;
        ``InboundRejected`` (400) when it is not an update."""
        try:
            update = Update.de_json(data, self.app.bot)
        except Exception as exc:  # PTB's parser meets untrusted JSON: any error is a 400
            log.warning("webhook_update_unreadable", error=type(exc).__name__)
            raise InboundRejected(400, "not a Telegram update") from None
        await self.admit(update)

    async def register_commands(self, bot: Bot) -> None:
        """The menu users see, from the same table as /help."""
        member = [
            BotCommand(s.name, s.summary)
            for s in commands.COMMANDS
            if s.access is commands.Access.MEMBER
        ]
        everything = [BotCommand(s.name, s.summary) for s in commands.COMMANDS]
        await bot.set_my_commands(member)
        for admin in sorted(self.service.config.access.admins):
            await _quietly(bot.set_my_commands(everything, scope=BotCommandScopeChat(admin)))


def _not_an_update() -> None:
    """A job runs on every replica, never fenced. Its task may have copied the context
    of the handler that scheduled it (APScheduler wakes up in the caller's context), so
    the term is cleared."""
    _TERM.set(None)


async def _answering(call: Awaitable[T]) -> T:
    """``call``, a write of an answer to Telegram: from now on the update has its answer
    (``_ANSWERED``), unless Telegram surely did not take it (``_may_have_arrived``)."""
    before = _ANSWERED.get()
    _ANSWERED.set(True)
    try:
        return await call
    except TelegramError as exc:
        if not _may_have_arrived(exc):  # Telegram answered (or it never left): not taken
            _ANSWERED.set(before)
        raise


POST_READ_TIMEOUT_S = 5.0  # python-telegram-bot's default: then the post may have arrived
# Faults (as our transport maps them, see bot.transport) that leave a request unsent.
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def _may_have_arrived(exc: TelegramError) -> bool:
    """Whether a failed call may still have reached Telegram.

    python-telegram-bot raises ``NetworkError``/``TimedOut`` *from* the httpx exception
    when no answer came, and with no such cause when Telegram answered an error status
    (it did not post). Only a fault before the request left is sure not to have arrived.
    """
    cause = exc.__cause__
    if cause is None or isinstance(cause, TelegramError):
        return False  # Telegram answered (an error status, or a body it could not parse)
    return not isinstance(cause, _NEVER_SENT)


async def _quietly(call: Any) -> Any:
    """Await a Telegram call whose failure must not cost the user their reply."""
    try:
        return await call
    except TelegramError as exc:
        log.warning("telegram_call_failed", error=type(exc).__name__, detail=exc.message)
        return None


STARTUP_RETRY_S = 30.0  # how long start-up waits for Telegram to be reachable
TELEGRAM_POOL = 256  # python-telegram-bot's default connection pool for bot methods


def _application(
    config: Config,
    rate_limiter: BaseRateLimiter[Any] | None,
    requests: tuple[HTTPXRequest, HTTPXRequest],
) -> App:
    """python-telegram-bot's Application, on the bot's network stack, without handlers.

    It has no updater of its own: polling, ``start_polling`` makes one for each lease
    term; in webhook mode the bot's own web server hands it the updates.
    """
    limiter = rate_limiter or AIORateLimiter(
        overall_max_rate=config.telegram.messages_per_second,
        group_max_rate=config.telegram.messages_per_minute_per_group,
        max_retries=5,
    )
    builder = (
        Application.builder()
        .token(config.telegram.token)
        .base_url(config.telegram.base_url)
        .base_file_url(config.telegram.base_file_url)
        .concurrent_updates(True)
        .rate_limiter(limiter)
        .request(requests[0])
        .get_updates_request(requests[1])
        .updater(None)
    )
    app: App = builder.build()
    return app


ALLOWED_UPDATES = ["message", "callback_query"]


def _request(pool: int) -> HTTPXRequest:
    """PTB's httpx client, on the bot's one network stack (aiohttp, see ``transport``)."""
    limits = httpx.Limits(max_connections=pool)
    return HTTPXRequest(
        connection_pool_size=pool, httpx_kwargs={"transport": AiohttpTransport(limits)}
    )


class _FencedRequest(HTTPXRequest):
    """The ``getUpdates`` client: no request leaves unless ``may_poll()`` — this replica's
    poller lease is known valid for the whole long poll (``Election.may_poll``)."""

    def __init__(self, may_poll: Callable[[], bool]) -> None:
        limits = httpx.Limits(max_connections=1)
        super().__init__(
            connection_pool_size=1, httpx_kwargs={"transport": AiohttpTransport(limits)}
        )
        self._may_poll = may_poll

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        if not self._may_poll():
            raise NetworkError("not sent: this replica is not (surely) the poller")
        return await super().do_request(*args, **kwargs)


class _AdmittingQueue(asyncio.Queue[object]):
    """The updater's queue: ``put`` is ``TelegramFrontend.admit``. The updater puts every
    update of a batch before it sends the next getUpdates (the one that confirms them),
    so nothing is confirmed to Telegram before it is journaled."""

    def __init__(self, admit: Callable[[object], Awaitable[None]]) -> None:
        super().__init__()
        self._admit = admit

    async def put(self, item: object) -> None:
        await self._admit(item)


def _polling_failed(error: TelegramError) -> None:
    log.warning("polling_failed", error=type(error).__name__, detail=error.message)
