"""Execute one command for one person: access, recipients, confirmation, audit, replies.

This is the bot without Telegram. ``telegram_app``, the console demo and ``exec`` all
hand a ``Request`` to ``Service.handle`` and show the ``Reply`` they get back, so every
front end behaves the same. Every request yields exactly one reply; strangers get one
refusal and cause no gateway call; nothing here ever echoes a secret or stores a
message body in the audit.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, assert_never

from bot import commands as c
from bot.audit import AuditLog
from bot.clock import Clock
from bot.config import Config
from bot.errors import (
    AttachmentError,
    GatewayError,
    LimitExceeded,
    RecipientError,
    StorageUnavailable,
    UsageError,
)
from bot.gateway import GatewayStatus, WhatsMate, check_translation
from bot.health import GatewayHealth
from bot.logs import get_logger
from bot.pdf import DEFAULT_PDF_POLLING, PdfPolling, is_telegram_file, pdf_to_text
from bot.recipients import Recipient, mask
from bot.replies import (
    DATABASE_AWAY,
    NOT_ALLOWED,
    Confirm,
    Reply,
    Result,
    describe_failure,
    history_line,
    send_result,
    summary_line,
)
from bot.schedules import (
    Schedule,
    Scheduler,
    added_schedules,
    first_run_in,
    manage_schedules,
    should_post,
    slot_of,
)
from bot.sends import (
    Attachment,
    AttachmentLoader,
    FileRef,
    SendPlan,
    attachment_for,
    plan_send,
    run_send,
)
from bot.storage import Storage, StoredPrompt, Thread
from bot.vocabulary import AuditEntry, Channel, Outcome, Press, UserRole

if TYPE_CHECKING:  # paging is imported only by bots that page (runtime)
    from bot.paging.escalation import Pager

__all__ = ["NOT_ALLOWED", "ButtonResult", "Interrupted", "Reply", "Request", "Service"]

CONFIRM_TTL_S = 300.0
LANGUAGE_CACHE_S = 24 * 3600.0
log = get_logger("bot.service")


@dataclass(frozen=True)
class Request:
    user_id: int
    chat_id: int
    private: bool
    text: str
    reply_text: str | None = None
    attachment: Attachment | None = None
    message_id: int | None = None  # the command's message: where answers to a send land
    user_name: str | None = None  # how the chat names the user (@name, else first name)

    @property
    def who(self) -> str:
        return self.user_name or f"user {self.user_id}"


def request_to_json(request: Request) -> str:
    """A request as a prompt keeps it (any replica may run it on Send): its file by
    reference, never its bytes."""
    attachment = request.attachment
    file = None
    if attachment is not None:
        file = {
            "kind": attachment.kind.value,
            "filename": attachment.filename,
            "file_id": attachment.file_id,
            "size": attachment.size,
        }
    fields = {
        "user_id": request.user_id,
        "chat_id": request.chat_id,
        "private": request.private,
        "text": request.text,
        "reply_text": request.reply_text,
        "message_id": request.message_id,
        "user_name": request.user_name,
        "file": file,
    }
    return json.dumps(fields)


def request_from_json(text: str, load: AttachmentLoader | None) -> Request:
    data = json.loads(text)
    file, attachment = data.pop("file"), None
    if file is not None and load is not None:
        attachment = load(
            FileRef(c.MediaKind(file["kind"]), file["filename"], file["file_id"], file["size"])
        )
    return Request(**data, attachment=attachment)


@dataclass(frozen=True)
class ButtonResult:
    """The answer to a Send / Cancel press: a short toast, and the new text of the prompt."""

    toast: str
    reply: Reply | None = None


@dataclass(frozen=True)
class _Identity:
    user_id: int
    chat_id: int
    role: UserRole


CommandObserver = Callable[[str, str, float], None]


class Interrupted(Enum):
    """What a command cut short by a dead (or deposed) poller may have left behind."""

    NOTHING = "nothing"  # safe to run again
    MAYBE_SENT = "maybe sent"  # a send or PDF job may have reached WhatsMate: never again
    PROMPT = "prompt"  # it asked, or was about to ask, to confirm: never ask twice


class Service:
    """Runs commands against WhatsMate on behalf of Telegram users."""

    def __init__(
        self,
        config: Config,
        gateway: WhatsMate,
        audit: AuditLog,
        *,
        storage: Storage,
        clock: Clock,
        scheduler: Scheduler | None = None,
        gateway_health: GatewayHealth,
        observe: CommandObserver | None = None,
        pdf_polling: PdfPolling = DEFAULT_PDF_POLLING,
        pager: Pager | None = None,
    ) -> None:
        self.config = config
        self._pager = pager
        self._gateway = gateway
        self._audit = audit
        self._storage = storage
        self._scheduler = scheduler  # None: schedules are not run (exec, check, demo)
        self._clock = clock
        self._observe = observe
        self._pdf_polling = pdf_polling
        self._languages: tuple[float, dict[str, str]] | None = None
        self._languages_lock = asyncio.Lock()
        self._gateway_health = gateway_health

    def role(self, user_id: int, chat_id: int, private: bool) -> UserRole:
        access = self.config.access
        if user_id in access.admins:
            return UserRole.ADMIN
        if user_id in access.users and not private and chat_id in access.chats:
            return UserRole.USER
        return UserRole.STRANGER

    # -- entry points -------------------------------------------------------------

    async def handle(self, request: Request, *, confirmed: bool = False) -> Reply:
        """The one reply to one command message.

        ``confirmed`` skips the Send / Cancel prompt for large sends (``exec --yes``).
        """
        started = time.perf_counter()
        identity = self._identity(request)
        name = c.command_name(request.text) or "?"
        result = await self._handle(identity, request, confirmed)
        self._finish(identity, f"/{name}", result, started)
        return result.reply

    async def press(
        self, token: str, user_id: int, send: bool, load: AttachmentLoader | None = None
    ) -> ButtonResult:
        """Send or Cancel pressed on a confirmation prompt (created on any replica).

        ``load`` turns the stored reference of the command's file back into an
        ``Attachment`` (the front end knows how to fetch it).
        """
        prompt = await self._storage.peek_prompt(token)
        if prompt is not None and prompt.user_id != user_id:
            return ButtonResult("Only the person who asked can confirm or cancel this.")
        prompt = await self._storage.claim_prompt(token)  # of two presses, one gets it
        if prompt is None:
            return ButtonResult("This was already handled or has expired.")
        started = time.perf_counter()
        request = request_from_json(prompt.request, load)
        identity = self._identity(request)
        name = f"/{c.command_name(request.text) or '?'}"
        if self._clock.now() - prompt.created > CONFIRM_TTL_S:
            result = _closed("Expired after 5 minutes", "expired", self._recipient_names(request))
            toast = "Expired."
        elif not send:
            result = _closed("Cancelled", "cancelled", self._recipient_names(request))
            toast = "Cancelled."
        else:
            result = await self._handle(identity, request, confirmed=True)
            toast = "Sending…" if result.reply.outcome is Outcome.OK else "Done."
        self._finish(identity, name, result, started)
        return ButtonResult(toast, result.reply)

    async def expire(self, token: str) -> Reply | None:
        """Drop a prompt nobody answered; returns the text to put on it, or None if handled."""
        prompt = await self._storage.claim_prompt(token)
        if prompt is None:
            return None
        request = request_from_json(prompt.request, None)
        result = _closed("Expired after 5 minutes", "expired", self._recipient_names(request))
        name = f"/{c.command_name(request.text) or '?'}"
        self._finish(self._identity(request), name, result, time.perf_counter())
        return result.reply

    def interruption(self, request: Request) -> Interrupted:
        """What handling ``request`` could have done before its replica stopped: reached
        WhatsMate with a send (or a PDF job), asked to confirm one, or nothing a rerun
        would repeat. Pure: no I/O."""
        if self._identity(request).role is UserRole.STRANGER:
            return Interrupted.NOTHING
        try:
            command = self._parse(request).command
            if isinstance(command, c.PdfToText):
                return Interrupted.MAYBE_SENT
            if not isinstance(command, c.SEND_COMMANDS):
                return Interrupted.NOTHING
            recipients = self._recipients(command)
        except (UsageError, RecipientError):
            return Interrupted.NOTHING
        if len(recipients) > self.config.confirm_over:
            return Interrupted.PROMPT
        return Interrupted.MAYBE_SENT

    async def interrupted(
        self, request: Request, name: str | None = None, *, prompt: bool = False
    ) -> Reply:
        """The answer to a send whose replica stopped handling it, audited: outcome unknown,
        never sent again — or, for one that asks to confirm, never a second prompt."""
        name = name or c.command_name(request.text) or "?"
        if prompt:
            text = (
                f"/{name}: not sent — the bot restarted while asking you to confirm it. A "
                "Send / Cancel prompt shown before still works; without one, send it again."
            )
            reply, detail = Reply(text, Outcome.CANCELLED), "interrupted before confirmation"
        else:
            text = (
                f"/{name}: outcome unknown — the bot restarted while handling it, so it may "
                "have been delivered. Not retried: check with the recipient before sending "
                "again."
            )
            reply, detail = Reply(text, Outcome.UNKNOWN), "interrupted by a restart"
        result = Result(reply, detail, self._recipient_names(request))
        self._finish(self._identity(request), f"/{name}", result, time.perf_counter())
        return reply

    def unrecorded(self, request: Request) -> Reply:
        """The one answer to a command that could not be journaled (the database is away):
        it is not run, so nothing is sent."""
        identity = self._identity(request)
        if identity.role is UserRole.STRANGER:
            result = Result(Reply(NOT_ALLOWED, Outcome.DENIED), "not allowed")
        else:
            result = Result(Reply(DATABASE_AWAY, Outcome.ERROR), "database unreachable")
        name = f"/{c.command_name(request.text) or '?'}"
        self._finish(identity, name, result, time.perf_counter())
        return result.reply

    async def prompt_waiting(self, token: str) -> bool:
        """True while a confirmation prompt has not been answered."""
        return await self._storage.peek_prompt(token) is not None

    def _identity(self, request: Request) -> _Identity:
        role = self.role(request.user_id, request.chat_id, request.private)
        return _Identity(request.user_id, request.chat_id, role)

    def _parse(self, request: Request) -> c.Parsed:
        attached = request.attachment.kind if request.attachment else None
        return c.parse(request.text, request.reply_text, attached)

    def _recipients(
        self, command: c.SendText | c.SendLocation | c.SendMedia
    ) -> tuple[Recipient, ...]:
        """Who a send goes to: numbers, contacts, groups, and the channel's gateway groups."""
        channel = command.channel if isinstance(command, c.SendText | c.SendMedia) else None
        return self.config.address_book.resolve(command.to, channel or Channel.TELEGRAM)

    def _recipient_names(self, request: Request) -> tuple[str, ...]:
        """The audit's names for the recipients of a request's send (none if unreadable)."""
        try:
            command = self._parse(request).command
            if not isinstance(command, c.SEND_COMMANDS):
                return ()
            return tuple(r.audit_name for r in self._recipients(command))
        except (UsageError, RecipientError):
            return ()

    async def start_schedules(self) -> None:
        """Start every configured and chat-added schedule; a missed slot runs once now."""
        if self._scheduler is not None:
            await self._start(self._scheduler, [*self._configured(), *await self._added()])

    async def sync_schedules(self) -> None:
        """Follow the chat-added schedules other replicas added or removed."""
        if self._scheduler is None:
            return
        stored = await self._added()
        running = self._scheduler.names()
        kept = {s.name for s in (*self._configured(), *stored)}
        for name in sorted(running - kept):
            self._scheduler.stop(name)
            log.info("schedule_stopped", schedule=name, reason="removed")
        await self._start(self._scheduler, [s for s in stored if s.name not in running])

    async def _added(self) -> list[Schedule]:
        return await added_schedules(self._storage)

    async def _start(self, scheduler: Scheduler, schedules: list[Schedule]) -> None:
        if not schedules:
            return
        last_runs = await self._storage.last_runs()
        now = self._clock.now()
        for schedule in schedules:
            scheduler.start(schedule, first_run_in(schedule, last_runs.get(schedule.name), now))

    async def run_scheduled(self, schedule: Schedule) -> Reply | None:
        """Run a schedule's command as admin, once per slot across every replica.

        None when another replica has this slot, the schedule was removed (on any
        replica: it stops here too), or ``notify: change`` has nothing new.
        """
        if schedule.from_chat and schedule.name not in {s.name for s in await self._added()}:
            if self._scheduler is not None:
                self._scheduler.stop(schedule.name)
            log.info("schedule_stopped", schedule=schedule.name, reason="removed")
            return None
        now = self._clock.now()
        slot = slot_of(schedule, now, await self._storage.first_run(schedule.name, now))
        if not await self._storage.claim_slot(schedule.name, slot, now):
            return None
        started = time.perf_counter()
        admin = self.config.access.first_admin or 0
        identity = _Identity(admin, schedule.chat_id, UserRole.ADMIN)
        request = Request(admin, schedule.chat_id, False, schedule.command)
        result = await self._handle(identity, request, confirmed=True)
        name = f"{c.command_name(schedule.command) or '?'} (schedule {schedule.name})"
        self._finish(identity, f"/{name}", result, started)
        reply = result.reply
        try:
            last = (await self._storage.last_runs()).get(schedule.name)
            await self._storage.mark_run(schedule.name, self._clock.now(), reply.text)
        except StorageUnavailable as exc:  # it ran: its answer is posted, not lost
            log.warning("schedule_run_not_recorded", schedule=schedule.name, error=str(exc))
            return reply
        return reply if should_post(schedule, last.reply if last else None, reply.text) else None

    # -- dispatch -----------------------------------------------------------------

    async def _handle(self, identity: _Identity, request: Request, confirmed: bool) -> Result:
        if identity.role is UserRole.STRANGER:
            return Result(Reply(NOT_ALLOWED, Outcome.DENIED), "not allowed")

        async def dispatch() -> Result:
            parsed = self._parse(request)
            if parsed.spec.access is c.Access.ADMIN and identity.role is not UserRole.ADMIN:
                return Result(Reply(NOT_ALLOWED, Outcome.DENIED), "admin only")
            return await self._execute(identity, parsed, request, confirmed)

        return await _result_of(dispatch())

    async def _execute(
        self, identity: _Identity, parsed: c.Parsed, request: Request, confirmed: bool
    ) -> Result:
        command = parsed.command
        if not isinstance(command, c.SEND_COMMANDS):
            return await self._query(identity, command, request.who)
        recipients = self._recipients(command)
        attachment = attachment_for(parsed, request.attachment)
        plan = plan_send(command, recipients, self._gateway, attachment)  # limits: before all
        if len(recipients) > self.config.confirm_over and not confirmed:
            prompt = await self._ask_confirmation(parsed.spec.name, command, recipients, request)
            names = tuple(r.audit_name for r in recipients)
            return Result(prompt, "awaiting confirmation", names)
        return await self._send(identity, request.message_id, plan, recipients)

    async def _ask_confirmation(
        self,
        name: str,
        command: c.SendCommand,
        recipients: tuple[Recipient, ...],
        request: Request,
    ) -> Reply:
        token = secrets.token_urlsafe(12)
        stored = StoredPrompt(token, self._clock.now(), request.user_id, request_to_json(request))
        await self._storage.save_prompt(stored)
        shown = ", ".join(r.written if r.group else mask(r.number) for r in recipients[:5])
        more = f" and {len(recipients) - 5} more" if len(recipients) > 5 else ""
        lines = [
            f"Send /{name} to {len(recipients)} recipients?",
            f"To: {shown}{more}",
        ]
        first_line = _first_line(command)
        if first_line:
            lines.append(f"Message: {first_line}")
        lines.append("Only you can confirm; this expires in 5 minutes.")
        return Reply("\n".join(lines), Outcome.PENDING, confirm=Confirm(token, name))

    async def _send(
        self,
        identity: _Identity,
        message_id: int | None,
        plan: SendPlan,
        recipients: tuple[Recipient, ...],
    ) -> Result:
        lines = await run_send(plan, self._gateway, self.config.whatsmate.max_concurrency)
        reached = [
            line.recipient.number
            for line in lines
            if line.recipient.group is None and line.outcome in (Outcome.OK, Outcome.UNKNOWN)
        ]
        if message_id is not None and reached:  # an answer from them lands under the command
            thread = Thread(identity.chat_id, message_id)
            try:  # sent already: nothing may replace the send's result, only the thread is lost
                await self._storage.record_threads(reached, thread, self._clock.now())
            except StorageUnavailable as exc:
                log.warning("thread_not_recorded", recipients=len(reached), error=str(exc))
        return send_result(plan.title, lines, tuple(r.audit_name for r in recipients))

    async def answer_post(self, request: Request, post_id: int) -> Reply | None:
        """A Telegram reply to a bridge post: its text goes back to that number and channel.

        None when ``post_id`` is not a bridge post (the reply is not for the bot).
        """
        post = await self._storage.find_post(request.chat_id, post_id)
        if post is None:
            return None
        started = time.perf_counter()
        identity = self._identity(request)
        name = post.channel.command
        if identity.role is UserRole.STRANGER:
            result = Result(Reply(NOT_ALLOWED, Outcome.DENIED), "not allowed")
        elif post.merged:
            text = (
                "That post merges several messages, so a reply cannot tell whom to answer: "
                f"use /{name} <to> <message>."
            )
            result = Result(Reply(text, Outcome.USAGE), "reply to a merged post")
        elif not request.text.strip():
            result = Result(Reply("Only a text reply goes back; nothing was sent.", Outcome.USAGE))
        else:
            to = self.config.address_book.alias_of(post.number) or post.number
            parsed = c.Parsed(c.SPECS[name], c.SendText(post.channel, to, request.text))
            result = await _result_of(self._execute(identity, parsed, request, confirmed=False))
        self._finish(identity, f"/{name}", result, started)
        return result.reply

    # -- everything that is not a send ----------------------------------------------

    async def _query(self, identity: _Identity, command: c.QueryCommand, who: str) -> Result:
        match command:
            case c.Status():
                return await self._status()
            case c.Translate():
                return await self._translate(command)
            case c.PdfToText():
                return await self._pdf(command)
            case c.ListLanguages():
                return await self._languages_reply(command.filter)
            case c.History():
                return await self._history(identity, command.count)
            case c.WhoAmI():
                user, role, chat = identity.user_id, identity.role.value, identity.chat_id
                return Result(Reply(f"You are {user} ({role}) in chat {chat}.", Outcome.OK))
            case c.Help():
                access = c.Access.ADMIN if identity.role is UserRole.ADMIN else c.Access.MEMBER
                text = "Commands you may use:\n" + "\n".join(c.help_lines(access))
                return Result(Reply(text, Outcome.OK))
            case c.ScheduleList() | c.ScheduleAdd() | c.ScheduleRemove():
                return await self._schedule(identity, command)
            case c.Acknowledge() | c.SilenceIncident() | c.ListIncidents():
                return await self._paging(command, who)
            case _:
                assert_never(command)

    async def _translate(self, command: c.Translate) -> Result:
        check_translation(command.text)
        await self._check_language(command.source)
        await self._check_language(command.target)
        text = await self._gateway.translate(command.source, command.target, command.text)
        return Result(Reply(text, Outcome.OK), f"{command.source}->{command.target}")

    async def _pdf(self, command: c.PdfToText) -> Result:
        if is_telegram_file(command.url, self.config.telegram):
            text = (
                "Not sent: that is a Telegram file address, which carries the bot's token "
                "and never leaves the bot. Give the PDF's own http(s) address."
            )
            return Result(Reply(text, Outcome.USAGE), "telegram file url refused")
        return await pdf_to_text(self._gateway, command.url, self._pdf_polling)

    async def _status(self) -> Result:
        instance = self.config.whatsmate.telegram_instance
        whatsapp, telegram = await asyncio.gather(
            _status_line("WhatsApp gateway", self._gateway.gateway_status()),
            _status_line(
                f"Telegram gateway (instance {instance})", self._gateway.telegram_status(instance)
            ),
        )
        up = whatsapp[1] and telegram[1]
        self._gateway_health.record(up)
        outcome = Outcome.OK if up else Outcome.ERROR
        detail = "; ".join(line for line, _ in (whatsapp, telegram))
        return Result(Reply(f"{whatsapp[0]}\n{telegram[0]}", outcome), detail)

    async def _codes(self) -> dict[str, str]:
        async with self._languages_lock:
            cached = self._languages
            if cached is None or self._clock.now() - cached[0] > LANGUAGE_CACHE_S:
                self._languages = cached = (
                    self._clock.now(),
                    await self._gateway.supported_codes(),
                )
            return cached[1]

    async def _check_language(self, code: str) -> None:
        try:
            codes = await self._codes()
        except GatewayError:
            return  # cannot check now: let WhatsMate judge the code
        if code not in codes and code.lower() not in {k.lower() for k in codes}:
            raise UsageError(
                c.SPECS["translate"].usage, f"Unknown language code {code!r}; /langs lists them."
            )

    async def _languages_reply(self, needle: str) -> Result:
        codes = await self._codes()
        wanted = needle.casefold()
        rows = [
            f"{code} — {name}" if name and name != code else code
            for code, name in sorted(codes.items())
            if wanted in code.casefold() or wanted in name.casefold()
        ]
        if not rows:
            return Result(Reply(f"No language code matches {needle!r}.", Outcome.OK), "0 codes")
        noun = "language code" if len(rows) == 1 else "language codes"
        header = f"{len(rows)} {noun}" + (f" matching {needle!r}" if needle else "")
        reply = Reply(header + ":\n" + "\n".join(rows), Outcome.OK)
        return Result(reply, f"{len(rows)} codes")

    async def _history(self, identity: _Identity, count: int) -> Result:
        only = None if identity.role is UserRole.ADMIN else identity.user_id
        entries = await self._audit.recent(count, only)
        if not entries:
            return Result(Reply("No audit entries yet.", Outcome.OK), "0 entries")
        lines = [history_line(entry) for entry in entries]
        return Result(Reply("\n".join(lines), Outcome.OK), f"{len(entries)} entries")

    async def _schedule(self, identity: _Identity, command: c.ScheduleCommand) -> Result:
        if self._scheduler is None:
            return Result(Reply("Schedules are not available in this mode.", Outcome.ERROR))
        return await manage_schedules(
            command,
            configured=self._configured(),
            storage=self._storage,
            scheduler=self._scheduler,
            chat_id=identity.chat_id,
            user_id=identity.user_id,
        )

    async def _paging(self, command: c.PagingCommand, who: str) -> Result:
        """/incidents, /ack, /silence: the incident's own post hears of it too."""
        if self._pager is None:
            text = "Incident paging is not configured (alerts: in the config)."
            return Result(Reply(text, Outcome.ERROR), "paging off")
        if isinstance(command, c.ListIncidents):
            return Result(Reply(await self._pager.incidents_text(), Outcome.OK))
        if isinstance(command, c.Acknowledge):
            answer = await self._pager.acknowledge(command.incident, who, Channel.TELEGRAM)
        else:
            answer = await self._pager.silence(command.incident, command.seconds, who)
        outcome = Outcome.OK if answer.done else Outcome.ERROR
        return Result(Reply(answer.text, outcome), f"#{command.incident}")

    async def incident_button(
        self, number: int, press: Press, user_id: int, chat_id: int, who: str
    ) -> str:
        """Acknowledge or Silence 1h pressed under an incident post: the toast to show.

        Users and admins only; anyone else is told ``not allowed`` and nothing changes.
        """
        started = time.perf_counter()
        identity = _Identity(user_id, chat_id, self.role(user_id, chat_id, private=False))
        name = f"/{press.value}"
        if identity.role is UserRole.STRANGER:
            result = Result(Reply(NOT_ALLOWED, Outcome.DENIED), "not allowed")
        elif self._pager is None or press not in (Press.ACK, Press.SILENCE):
            result = Result(Reply("This button is no longer in use.", Outcome.USAGE))
        else:
            command: c.PagingCommand = (
                c.Acknowledge(number) if press is Press.ACK else c.SilenceIncident(number, 3600)
            )
            result = await self._paging(command, who)
            if result.reply.outcome is Outcome.ERROR and press is Press.SILENCE:
                await self._pager.report_under(number, f"{who}: {result.reply.text}")
        self._finish(identity, f"{name} (button)", result, started)
        return result.reply.text

    def _configured(self) -> list[Schedule]:
        return [Schedule.from_config(s) for s in self.config.schedules]

    # -- bookkeeping ----------------------------------------------------------------

    def _finish(self, identity: _Identity, command: str, result: Result, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        outcome = result.reply.outcome
        self._audit.record(
            AuditEntry(
                identity.chat_id,
                identity.user_id,
                command,
                result.recipients,
                outcome,
                result.detail,
                job_ids=result.job_ids,
            )
        )
        log.info(
            "command",
            command=command,
            chat=identity.chat_id,
            user=identity.user_id,
            role=identity.role.value,
            outcome=outcome.value,
            recipients=len(result.recipients),
            duration_ms=duration_ms,
            gateway_status=result.detail[:200],
        )
        if self._observe is not None:
            self._observe(command, outcome.value, duration_ms / 1000)


async def _result_of(work: Awaitable[Result]) -> Result:
    """``work``'s result, or the one-line result of what it raised on purpose. The
    database away can only come before a send (after one, nothing replaces its result):
    the command did nothing, the reply says to try again."""
    try:
        return await work
    except UsageError as exc:
        return Result(Reply(str(exc), Outcome.USAGE), "usage")
    except RecipientError as exc:
        return Result(Reply(f"Not sent: {exc}.", Outcome.USAGE), "bad recipient")
    except LimitExceeded as exc:
        return Result(Reply(f"Not sent: {exc}.", Outcome.USAGE), "over a limit")
    except AttachmentError as exc:
        text = f"Not sent: could not fetch the file: {exc}."
        return Result(Reply(text, Outcome.ERROR), str(exc))
    except GatewayError as exc:
        return Result(Reply(f"WhatsMate {describe_failure(exc)}", Outcome.ERROR), exc.detail)
    except StorageUnavailable:
        return Result(Reply(DATABASE_AWAY, Outcome.ERROR), "database unreachable")


def _closed(what: str, detail: str, recipients: tuple[str, ...]) -> Result:
    """A prompt that ends without sending (expired or cancelled)."""
    return Result(Reply(f"{what} — nothing was sent.", Outcome.CANCELLED), detail, recipients)


async def _status_line(label: str, call: Awaitable[GatewayStatus]) -> tuple[str, bool]:
    try:
        status = await call
    except GatewayError as exc:
        return f"{label}: unreachable — {describe_failure(exc)}", False
    return f"{label}: {status.status}", status.ok


def _first_line(command: c.SendCommand) -> str:
    """What a confirmation prompt shows of the message."""
    match command:
        case c.SendText():
            return summary_line(command.message)
        case c.SendLocation():
            return f"location {command.latitude:g}, {command.longitude:g}"
        case c.SendMedia():
            caption = f" ({command.caption[:60]})" if command.caption else ""
            return f"a {command.kind.value}{caption}"
        case _:
            assert_never(command)
