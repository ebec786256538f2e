"""The Telegram front end: the only module that imports ``telegram``.

Handlers are thin adapters: they turn an ``Update`` into a ``service.Request``, hand it
to the ``Service`` and show the ``Reply``. What python-telegram-bot already does well is
used as it is: concurrent update processing, ``AIORateLimiter`` for flood limits (429
``retry_after``), the JobQueue for schedules, the updater for polling or the webhook.
State lives in the ``TelegramFrontend`` object and the service, never in ``bot_data``.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import secrets
import time
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
    Voice,
)
from telegram.constants import MessageLimit
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError
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
from bot.commands import MediaKind
from bot.errors import (
    AttachmentError,
    ChatRefused,
    InboundRejected,
    LimitExceeded,
    PostFailed,
    PostMaybeSent,
)
from bot.logs import get_logger
from bot.replicas import Election, replica_id
from bot.replies import split_text
from bot.runtime import Runtime
from bot.schedules import Schedule, cron_trigger
from bot.sends import FileCap, FileRef
from bot.service import CONFIRM_TTL_S, Reply, Request
from bot.transport import AiohttpTransport

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


def to_request(message: Message, http: httpx.AsyncClient) -> Request:
    replied = message.reply_to_message
    return Request(
        user_id=message.from_user.id if message.from_user else 0,
        chat_id=message.chat_id,
        message_id=message.message_id,
        private=message.chat.type == "private",
        text=message.text or message.caption or "",
        reply_text=(replied.text or replied.caption) if replied else None,
        attachment=find_attachment(message, http),
    )


def _buttons(token: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Send", callback_data=f"confirm:{token}:send"),
                InlineKeyboardButton("Cancel", callback_data=f"confirm:{token}:cancel"),
            ]
        ]
    )


@dataclass(frozen=True)
class _PromptRef:
    """Which confirmation prompt an expiry job is about."""

    token: str
    chat_id: int
    message_id: int


class TelegramFrontend:
    """Handlers and jobs of one running bot; holds what they share explicitly."""

    def __init__(self, runtime: Runtime) -> None:
        self.service = runtime.service
        self.http = runtime.http
        self.storage = runtime.storage
        self.replicated = runtime.config.database_url is not None
        self.replica = replica_id()
        self.app: App | None = None
        self._rerun: set[int] = set()

    # -- the update journal (replicas on PostgreSQL) ------------------------------------

    async def journal_start(self, update: Update, context: Context) -> None:
        """Before any handler: record the update, or skip it if it was seen before
        (Telegram redelivers; a load balancer may hand one update to two replicas)."""
        if update.update_id in self._rerun:
            return
        payload = json.dumps(update.to_dict())
        fresh = await self.storage.record_update(
            update.update_id, self.replica, payload, time.time()
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
        for entry in await self.storage.unfinished_updates(self.replica):
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
        name = None if not post else "wa" if post.channel == "whatsapp" else "tg"
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

    async def post(self, chat_id: int, text: str, reply_to: int | None) -> int:
        """The bridge's way into the chat: one message (the bridge splits), its id.

        What a failure means decides what the bridge does next: a chat refused for good
        (``ChatRefused``), an answer lost after the request left (``PostMaybeSent``: it
        may be in the chat), or surely not posted (``PostFailed``).
        """
        assert self.app is not None
        parameters = (
            ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        )
        try:
            message = await self.app.bot.send_message(
                chat_id, text, reply_parameters=parameters, read_timeout=POST_READ_TIMEOUT_S
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
        if query is None or query.data is None:
            return
        _, token, action = [*query.data.split(":"), "", ""][:3]
        result = await self.service.press(
            token, query.from_user.id, action == "send", self.load_attachment
        )
        await _quietly(query.answer(result.toast))
        if result.reply is not None and isinstance(query.message, Message):
            await self.replace(context.bot, query.message, result.reply)

    async def on_error(self, update: object, context: Context) -> None:
        error_id = secrets.token_hex(4)
        log.error("unhandled_error", error_id=error_id, exc_info=context.error)
        if isinstance(update, Update) and update.effective_chat is not None:
            text = f"Something went wrong (error id {error_id}); it has been logged."
            await _quietly(context.bot.send_message(update.effective_chat.id, text))

    def load_attachment(self, ref: FileRef) -> TelegramAttachment:
        """A prompt's file, found again by its Telegram file id."""
        assert self.app is not None
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

    async def run_schedule(self, context: Context) -> None:
        job = context.job
        if job is None or not isinstance(job.data, Schedule):
            return
        schedule = job.data
        reply = await self.service.run_scheduled(schedule)
        if reply is not None:
            await self.send(context.bot, schedule.chat_id, reply)

    async def send(
        self, bot: Bot, chat_id: int, reply: Reply, reply_to: int | None = None
    ) -> list[Message]:
        """Post ``reply`` (split if long); the last message carries any buttons."""
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
            markup = _buttons(reply.confirm) if reply.confirm and index == len(chunks) - 1 else None
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

    async def post_init(self, app: App) -> None:
        self.app = app
        await _quietly(self.register_commands(app.bot))
        self.service.attach_scheduler(JobQueueScheduler(app, self.run_schedule))
        await self.service.start_schedules()

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


class JobQueueScheduler:
    """``schedules.Scheduler`` on python-telegram-bot's JobQueue."""

    def __init__(self, app: App, callback: Any) -> None:
        self._app = app
        self._callback = callback

    def start(self, schedule: Schedule, first_in_s: float) -> None:
        queue = self._app.job_queue
        if queue is None:  # pragma: no cover - the job-queue extra is a dependency
            raise RuntimeError("python-telegram-bot was installed without the job-queue extra")
        if first_in_s <= 0:  # run_repeating(first=0) never fires (APScheduler): run once now
            queue.run_once(self._callback, 0, name=schedule.name, data=schedule)
        if schedule.every_s:
            queue.run_repeating(
                self._callback,
                interval=schedule.every_s,
                first=first_in_s if first_in_s > 0 else schedule.every_s,
                name=schedule.name,
                data=schedule,
            )
        else:
            trigger = cron_trigger(schedule.cron or "")
            queue.run_custom(
                self._callback, {"trigger": trigger}, name=schedule.name, data=schedule
            )

    def stop(self, name: str) -> None:
        if self._app.job_queue is not None:
            for job in self._app.job_queue.get_jobs_by_name(name):
                job.schedule_removal()


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


TELEGRAM_POOL = 256  # python-telegram-bot's default connection pool for bot methods


def build_application(
    runtime: Runtime, *, rate_limiter: BaseRateLimiter[Any] | None = None
) -> tuple[App, TelegramFrontend]:
    """The python-telegram-bot Application wired to ``service``.

    In webhook mode it has no updater: the bot's own web server hands it the updates.
    """
    config = runtime.config
    frontend = TelegramFrontend(runtime)
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
    # A text reply to one of the bot's messages may answer a bridge post.
    app.add_handler(
        MessageHandler(
            filters.UpdateType.MESSAGE & filters.REPLY & filters.TEXT & ~filters.Regex(r"^\s*/"),
            frontend.on_reply,
        )
    )
    # Commands anywhere; in a private chat every text gets an answer (a hint if not a command).
    command_text = filters.Regex(r"^\s*/") | filters.CaptionRegex(r"^\s*/")
    private_text = filters.ChatType.PRIVATE & (filters.TEXT | filters.CAPTION)
    app.add_handler(
        MessageHandler(
            filters.UpdateType.MESSAGE & (command_text | private_text), frontend.on_command
        )
    )
    app.add_handler(CallbackQueryHandler(frontend.on_button, pattern=r"^confirm:"))
    if frontend.replicated:  # every update recorded before, and marked after, handling
        app.add_handler(TypeHandler(Update, frontend.journal_start), group=-1)
        app.add_handler(TypeHandler(Update, frontend.journal_done), group=1)
    app.add_error_handler(frontend.on_error)
    return app, frontend


ALLOWED_UPDATES = ["message", "callback_query"]


def _request(pool: int) -> HTTPXRequest:
    """PTB's httpx client, on the bot's one network stack (aiohttp, see ``transport``)."""
    limits = httpx.Limits(max_connections=pool)
    return HTTPXRequest(
        connection_pool_size=pool, httpx_kwargs={"transport": AiohttpTransport(limits)}
    )


async def serve(
    app: App, frontend: TelegramFrontend, runtime: Runtime, stop: asyncio.Event
) -> None:
    """Run until ``stop`` is set, then finish the updates in flight and shut down.

    Polling: this replica polls while it holds the poller lock (always, on SQLite) and
    stands by otherwise. The web server (``http.port``) stops first, so no update or
    inbound message is taken that the bot would not finish; accepted inbound messages
    are already stored.
    """
    config = runtime.config
    telegram = config.telegram
    election = Election(runtime.storage)
    async with app:
        await app.start()
        await frontend.post_init(app)

        def role() -> str:
            return "webhook" if telegram.webhook_url else election.role

        async def health() -> tuple[bool, dict[str, str]]:
            try:
                await runtime.storage.ping()
            except Exception:
                return False, {"role": role(), "storage": "unreachable"}
            polling = app.updater is not None and app.updater.running
            taking = role() != "poller" or polling
            return taking and runtime.service.last_gateway_up is not False, {"role": role()}

        async def deliver(data: dict[str, Any]) -> None:
            try:
                update = Update.de_json(data, app.bot)
            except Exception as exc:  # PTB's parser meets untrusted JSON: any error is a 400
                log.warning("webhook_update_unreadable", error=type(exc).__name__)
                raise InboundRejected(400, "not a Telegram update") from None
            await app.update_queue.put(update)

        server = None
        if config.http.port:
            from bot.web import Webhook, WebServer, make_app  # aiohttp.web only when serving

            webhook = (
                Webhook(telegram.secret_token or "", deliver) if telegram.webhook_url else None
            )
            server = WebServer(
                make_app(
                    health=health, metrics=runtime.metrics, webhook=webhook, bridge=runtime.bridge
                ),
                config.http.listen,
                config.http.port,
            )
            await server.start()
        poster = (
            asyncio.create_task(runtime.bridge.run_poster(frontend.post))
            if runtime.bridge is not None
            else None
        )
        updater = app.updater

        async def lead() -> None:
            assert updater is not None
            if frontend.replicated:
                await frontend.recover(app)
            await updater.start_polling(allowed_updates=ALLOWED_UPDATES)

        async def step_down() -> None:
            assert updater is not None
            await updater.stop()

        electing = None
        if telegram.webhook_url:
            await app.bot.set_webhook(
                telegram.webhook_url,
                secret_token=telegram.secret_token,
                allowed_updates=ALLOWED_UPDATES,
            )
        else:
            electing = asyncio.create_task(election.run(lead, step_down, stop))
        log.info("started", mode="webhook" if telegram.webhook_url else "polling")
        await stop.wait()
        log.info("stopping")
        if server is not None:
            await server.stop()
        if electing is not None:
            await electing
        if updater is not None and updater.running:
            await updater.stop()
        if poster is not None:
            poster.cancel()
            await asyncio.gather(poster, return_exceptions=True)
        await app.stop()
