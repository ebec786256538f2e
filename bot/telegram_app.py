"""The Telegram front end: the only module that imports ``telegram``.

Handlers are thin adapters: they turn an ``Update`` into a ``service.Request``, hand it
to the ``Service`` and show the ``Reply``. What python-telegram-bot already does well is
used as it is: concurrent update processing, ``AIORateLimiter`` for flood limits (429
``retry_after``), the JobQueue for the expiry of prompts, the updater for polling or the
webhook. When it starts, polls and stops is not decided here: ``TelegramFrontend`` is
the ``lifecycle.FrontEnd`` that the lifecycle drives. State lives in the
``TelegramFrontend`` object and the service, never in ``bot_data``.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from telegram import (
    Audio,
    Bot,
    BotCommand,
    BotCommandScopeChat,
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
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    BaseRateLimiter,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import commands
from bot.bridge import Button
from bot.commands import MediaKind
from bot.config import Config
from bot.errors import AttachmentError, InboundRejected, LimitExceeded, PostFailed
from bot.logs import get_logger
from bot.replicas import replica_id
from bot.replies import split_text
from bot.runtime import Runtime
from bot.schedules import Schedule
from bot.sends import FileCap, FileRef
from bot.service import CONFIRM_TTL_S, Reply, Request
from bot.transport import AiohttpTransport
from bot.vocabulary import Outcome

log = get_logger("bot.telegram")
Context = ContextTypes.DEFAULT_TYPE
App = Application[Any, Any, Any, Any, Any, Any]


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


def _markup(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    row = [InlineKeyboardButton(b.label, callback_data=b.data) for b in buttons]
    return InlineKeyboardMarkup([row]) if row else None


def _confirm_buttons(token: str) -> tuple[Button, ...]:
    return (Button("Send", f"confirm:{token}:send"), Button("Cancel", f"confirm:{token}:cancel"))


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
        self.replica = replica_id()
        self._rerun: set[int] = set()
        self.app = _application(runtime.config, rate_limiter)
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
        app.add_handler(CallbackQueryHandler(self.on_button, pattern=r"^confirm:"))
        app.add_handler(CallbackQueryHandler(self.on_incident_button, pattern=r"^incident:"))
        if self.replicated:  # every update recorded before, and marked after, handling
            app.add_handler(TypeHandler(Update, self.journal_start), group=-1)
            app.add_handler(TypeHandler(Update, self.journal_done), group=1)
        app.add_error_handler(self.on_error)

    # -- the update journal (replicas on PostgreSQL) ------------------------------------

    async def journal_start(self, update: Update, context: Context) -> None:
        """Before any handler: record the update, or skip it if it was seen before
        (Telegram redelivers; a load balancer may hand one update to two replicas)."""
        if update.update_id in self._rerun:
            return
        payload = json.dumps(update.to_dict())
        fresh = await self.storage.record_update(
            update.update_id, self.replica, payload, self.clock.now()
        )
        if not fresh:
            log.info("update_seen_before", update_id=update.update_id)
            raise ApplicationHandlerStop

    async def journal_done(self, update: Update, context: Context) -> None:
        """After every handler: the update is handled (its id is kept for dedupe)."""
        self._rerun.discard(update.update_id)
        await self.storage.finish_update(update.update_id)
        log.debug("update_done", update_id=update.update_id)

    async def recover(self, app: App) -> None:
        """On becoming the poller: finish what a dead poller started. A send is answered
        ``outcome unknown`` (never sent again); anything else runs again."""
        for entry in await self.storage.unfinished_updates(self.replica, self.clock.now()):
            if entry.update_id in self._rerun:
                continue  # already queued by an earlier takeover that did not finish
            update = Update.de_json(json.loads(entry.payload), app.bot)
            if await self._interrupted_send(update, app.bot):
                await self.storage.finish_update(entry.update_id)
            else:
                self._rerun.add(entry.update_id)
                await app.update_queue.put(update)
            log.info("recovered_update", update_id=entry.update_id, owner=entry.owner)

    async def _interrupted_send(self, update: Update, bot: Bot) -> bool:
        """Answer a send the dead poller may have made; False when it is safe to rerun."""
        if update.message is not None:
            return await self._interrupted_message(update.message, bot)
        query = update.callback_query
        if query is not None and query.data and isinstance(query.message, Message):
            return await self._interrupted_press(query.data, query.from_user.id, query.message, bot)
        return False

    async def _interrupted_message(self, message: Message, bot: Bot) -> bool:
        """A command that sends, or a reply to a bridge post (it sends back)."""
        request = to_request(message, self.http)
        replied = message.reply_to_message
        post = replied and await self.storage.find_post(message.chat_id, replied.message_id)
        if not (self.service.may_have_sent(request) or post):
            return False
        name = post.channel.command if post else None
        reply = await self.service.interrupted(request, name)
        await self.send(bot, message.chat_id, reply, reply_to=message.message_id)
        return True

    async def _interrupted_press(self, data: str, user_id: int, prompt: Message, bot: Bot) -> bool:
        """Send pressed on a prompt: still waiting means nobody sent it yet (rerun)."""
        _, token, action = [*data.split(":"), "", ""][:3]
        if action != "send" or await self.service.prompt_waiting(token):
            return False
        asked = re.search(r"/(\w+)", prompt.text or "")
        request = Request(user_id, prompt.chat_id, False, prompt.text or "")
        reply = await self.service.interrupted(request, asked[1] if asked else None)
        await self.send(bot, prompt.chat_id, reply, reply_to=prompt.message_id)
        return True

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
                data=_PromptRef(reply.confirm, sent[-1].chat_id, sent[-1].id),
            )

    async def post(
        self, chat_id: int, text: str, reply_to: int | None, buttons: Sequence[Button] = ()
    ) -> int:
        """The bridge's and paging's way into the chat: the id of the (first) message."""
        try:
            sent = await self.send(
                self.app.bot, chat_id, Reply(text, Outcome.OK), reply_to, buttons
            )
        except TelegramError as exc:
            raise PostFailed(f"Telegram refused the post ({exc.message})") from None
        return sent[0].id

    async def on_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        _, token, action = [*query.data.split(":"), "", ""][:3]
        result = await self.service.press(
            token, query.from_user.id, action == "send", self.load_attachment
        )
        await _quietly(query.answer(result.toast))
        if result.reply is not None and isinstance(query.message, Message):
            await self.replace(context.bot, query.message, result.reply)

    async def on_incident_button(self, update: Update, context: Context) -> None:
        """Acknowledge or Silence 1h under an incident post."""
        query = update.callback_query
        if query is None or query.data is None or not isinstance(query.message, Message):
            return
        _, number, action = [*query.data.split(":"), "", ""][:3]
        if not number.isdigit():
            return
        toast = await self.service.incident_button(
            int(number),
            action,
            query.from_user.id,
            query.message.chat_id,
            user_name(query.from_user) or f"user {query.from_user.id}",
        )
        await _quietly(query.answer(toast[:200]))

    async def on_error(self, update: object, context: Context) -> None:
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
        job = context.job
        if job is None or not isinstance(job.data, _PromptRef):
            return
        token, chat_id, message_id = job.data.token, job.data.chat_id, job.data.message_id
        reply = await self.service.expire(token)
        if reply is not None:
            await _quietly(context.bot.edit_message_text(reply.text, chat_id, message_id))

    async def run_schedule(self, schedule: Schedule) -> None:
        """A schedule came due: run it, and post what it says in its chat."""
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
        """Post ``reply`` (split if long); the last message carries any buttons."""
        if reply.confirm:
            buttons = _confirm_buttons(reply.confirm)
        parameters = (
            ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        )
        if reply.file is not None:
            document = await bot.send_document(
                chat_id,
                reply.file.content,
                filename=reply.file.filename,
                caption=split_text(reply.text, MessageLimit.CAPTION_LENGTH)[0],
                reply_parameters=parameters,
            )
            return [document]
        chunks = split_text(reply.text)
        sent: list[Message] = []
        for index, chunk in enumerate(chunks):
            markup = _markup(buttons) if index == len(chunks) - 1 else None
            sent.append(
                await bot.send_message(
                    chat_id,
                    chunk,
                    reply_parameters=parameters if index == 0 else None,
                    reply_markup=markup,
                )
            )
        return sent

    async def replace(self, bot: Bot, message: Message, reply: Reply) -> None:
        """Put ``reply`` on a prompt message (buttons removed); overflow goes in new messages."""
        first, *rest = split_text(reply.text)
        await _quietly(bot.edit_message_text(first, message.chat_id, message.message_id))
        for chunk in rest:
            await bot.send_message(message.chat_id, chunk)

    # -- what the lifecycle drives (``lifecycle.FrontEnd``) ------------------------------

    async def start(self) -> None:
        """Ready to handle updates (none is taken in yet); the command menu registered."""
        await self.app.initialize()
        try:
            await self.app.start()
        except BaseException:
            await self.app.shutdown()
            raise
        await _quietly(self.register_commands(self.app.bot))

    async def stop(self) -> None:
        """Finish every update in flight, then close (polling has stopped by now)."""
        await self.app.stop()
        await self.app.shutdown()

    async def start_polling(self) -> None:
        """Become the poller: first finish what a dead poller started (replicas)."""
        assert self.app.updater is not None  # polling mode builds an updater
        if self.replicated:
            await self.recover(self.app)
        await self.app.updater.start_polling(allowed_updates=ALLOWED_UPDATES)

    async def stop_polling(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()

    @property
    def polling(self) -> bool:
        return self.app.updater is not None and self.app.updater.running

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
        await self.app.update_queue.put(update)

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


async def _quietly(call: Any) -> Any:
    """Await a Telegram call whose failure must not cost the user their reply."""
    try:
        return await call
    except TelegramError as exc:
        log.warning("telegram_call_failed", error=type(exc).__name__, detail=exc.message)
        return None


TELEGRAM_POOL = 256  # python-telegram-bot's default connection pool for bot methods


def _application(config: Config, rate_limiter: BaseRateLimiter[Any] | None) -> App:
    """python-telegram-bot's Application, on the bot's network stack, without handlers.

    In webhook mode it has no updater: the bot's own web server hands it the updates.
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
        .request(_request(TELEGRAM_POOL))
        .get_updates_request(_request(1))
    )
    if config.telegram.webhook_url:
        builder = builder.updater(None)
    app: App = builder.build()
    return app


ALLOWED_UPDATES = ["message", "callback_query"]


def _request(pool: int) -> HTTPXRequest:
    """PTB's httpx client, on the bot's one network stack (aiohttp, see ``transport``)."""
    limits = httpx.Limits(max_connections=pool)
    return HTTPXRequest(
        connection_pool_size=pool, httpx_kwargs={"transport": AiohttpTransport(limits)}
    )
