"""Execute one command for one person: access, recipients, confirmation, audit, replies.

This is the bot without Telegram. ``telegram_app``, the console demo and ``exec`` all
hand a ``Request`` to ``Service.handle`` and show the ``Reply`` they get back, so every
front end behaves the same. Every request yields exactly one reply; strangers get one
refusal and cause no gateway call; nothing here ever echoes a secret or stores a
message body in the audit.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

from bot import commands as c
from bot.audit import AuditEntry, AuditLog, Outcome
from bot.config import Config
from bot.errors import (
    AttachmentError,
    AuthError,
    BadResponse,
    GatewayError,
    GatewayHTTPError,
    NotSent,
    OutcomeUnknown,
    QuotaError,
    RecipientError,
    SendRejected,
    UsageError,
)
from bot.gateway import MediaFile, SendResult, WhatsMate
from bot.logs import get_logger
from bot.recipients import Recipient, mask
from bot.schedules import (
    Schedule,
    Scheduler,
    ScheduleStore,
    first_run_in,
    parse_schedule_every,
    should_post,
)

CONFIRM_TTL_S = 300.0
LANGUAGE_CACHE_S = 24 * 3600.0
NOT_ALLOWED = "Sorry, you are not allowed to use this bot here."
_ACCEPTS = {
    c.MediaKind.PHOTO: {c.MediaKind.PHOTO},
    c.MediaKind.AUDIO: {c.MediaKind.AUDIO},
    c.MediaKind.DOCUMENT: {c.MediaKind.DOCUMENT, c.MediaKind.PHOTO, c.MediaKind.AUDIO},
}
_CHANNEL_NAMES = {c.Channel.WHATSAPP: "WhatsApp", c.Channel.TELEGRAM: "Telegram"}
log = get_logger("bot.service")


class Role(Enum):
    ADMIN = "admin"
    USER = "user"
    STRANGER = "stranger"


class Attachment(Protocol):
    """A file that came with (or was replied to by) the command; fetched only when needed."""

    @property
    def kind(self) -> c.MediaKind: ...

    @property
    def filename(self) -> str: ...

    async def download(self, destination: Path) -> None: ...


@dataclass(frozen=True)
class Request:
    user_id: int
    chat_id: int
    private: bool
    text: str
    reply_text: str | None = None
    attachment: Attachment | None = None


@dataclass(frozen=True)
class Reply:
    """What the user sees. ``confirm`` set: show Send / Cancel buttons carrying that token."""

    text: str
    outcome: Outcome
    confirm: str | None = None


@dataclass(frozen=True)
class ButtonResult:
    """The answer to a Send / Cancel press: a short toast, and the new text of the prompt."""

    toast: str
    reply: Reply | None = None


@dataclass(frozen=True)
class _Identity:
    user_id: int
    chat_id: int
    role: Role


@dataclass(frozen=True)
class _Pending:
    identity: _Identity
    parsed: c.Parsed
    recipients: tuple[Recipient, ...]
    attachment: Attachment | None
    created: float


@dataclass(frozen=True)
class _SendLine:
    recipient: Recipient
    outcome: Outcome
    text: str


CommandObserver = Callable[[str, str, float], None]


class Service:
    """Runs commands against WhatsMate on behalf of Telegram users."""

    def __init__(
        self,
        config: Config,
        gateway: WhatsMate,
        audit: AuditLog,
        *,
        store: ScheduleStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: CommandObserver | None = None,
    ) -> None:
        self.config = config
        self._gateway = gateway
        self._audit = audit
        self._store = store
        self._scheduler: Scheduler | None = None
        self._clock = clock
        self._observe = observe
        self._pending: dict[str, _Pending] = {}
        self._languages: tuple[float, dict[str, str]] | None = None
        self._languages_lock = asyncio.Lock()
        self._last_replies: dict[str, str] = {}
        self.last_gateway_up: bool | None = None

    def attach_scheduler(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def role(self, user_id: int, chat_id: int, private: bool) -> Role:
        access = self.config.access
        if user_id in access.admins:
            return Role.ADMIN
        if user_id in access.users and not private and chat_id in access.chats:
            return Role.USER
        return Role.STRANGER

    # -- entry points -------------------------------------------------------------

    async def handle(self, request: Request, *, confirmed: bool = False) -> Reply:
        """The one reply to one command message.

        ``confirmed`` skips the Send / Cancel prompt for large sends (``exec --yes``).
        """
        started = time.perf_counter()
        identity = _Identity(
            request.user_id,
            request.chat_id,
            self.role(request.user_id, request.chat_id, request.private),
        )
        name = c.command_name(request.text) or "?"
        reply, recipients, detail = await self._handle(identity, request, confirmed)
        self._finish(identity, f"/{name}", recipients, reply.outcome, detail, started)
        return reply

    async def press(self, token: str, user_id: int, send: bool) -> ButtonResult:
        """Send or Cancel pressed on a confirmation prompt."""
        pending = self._pending.get(token)
        if pending is None:
            return ButtonResult("This was already handled or has expired.")
        if pending.identity.user_id != user_id:
            return ButtonResult("Only the person who asked can confirm or cancel this.")
        del self._pending[token]  # before any await: a second press finds nothing
        started = time.perf_counter()
        name = f"/{pending.parsed.spec.name}"
        numbers = tuple(r.number for r in pending.recipients)
        if self._clock() - pending.created > CONFIRM_TTL_S:
            reply = Reply("Expired after 5 minutes — nothing was sent.", Outcome.CANCELLED)
            self._finish(pending.identity, name, numbers, reply.outcome, "expired", started)
            return ButtonResult("Expired.", reply)
        if not send:
            reply = Reply("Cancelled — nothing was sent.", Outcome.CANCELLED)
            self._finish(pending.identity, name, numbers, reply.outcome, "cancelled", started)
            return ButtonResult("Cancelled.", reply)
        reply, detail = await self._send(
            pending.parsed.command, pending.recipients, pending.attachment
        )
        self._finish(pending.identity, name, numbers, reply.outcome, detail, started)
        return ButtonResult("Sending…" if reply.outcome is Outcome.OK else "Done.", reply)

    def expire(self, token: str) -> Reply | None:
        """Drop a prompt nobody answered; returns the text to put on it, or None if handled."""
        pending = self._pending.pop(token, None)
        if pending is None:
            return None
        numbers = tuple(r.number for r in pending.recipients)
        reply = Reply("Expired after 5 minutes — nothing was sent.", Outcome.CANCELLED)
        name = f"/{pending.parsed.spec.name}"
        self._finish(pending.identity, name, numbers, reply.outcome, "expired", time.perf_counter())
        return reply

    async def start_schedules(self) -> None:
        """Start every configured and chat-added schedule; a missed slot runs once now."""
        if self._store is None or self._scheduler is None:
            return
        last_runs = await self._store.last_runs()
        configured = [Schedule.from_config(s) for s in self.config.schedules]
        now = time.time()
        for schedule in (*configured, *await self._store.added()):
            last = last_runs.get(schedule.name)
            if last is not None and last.reply is not None:
                self._last_replies[schedule.name] = last.reply
            self._scheduler.start(schedule, first_run_in(schedule, last, now))

    async def run_scheduled(self, schedule: Schedule) -> Reply | None:
        """Run a schedule's command as admin; None when ``notify: change`` has nothing new."""
        started = time.perf_counter()
        admin = self.config.access.first_admin or 0
        identity = _Identity(admin, schedule.chat_id, Role.ADMIN)
        request = Request(admin, schedule.chat_id, False, schedule.command)
        reply, recipients, detail = await self._handle(identity, request, confirmed=True)
        name = f"{c.command_name(schedule.command) or '?'} (schedule {schedule.name})"
        self._finish(identity, f"/{name}", recipients, reply.outcome, detail, started)
        last = self._last_replies.get(schedule.name)
        self._last_replies[schedule.name] = reply.text
        if self._store is not None:
            await self._store.mark_run(schedule.name, time.time(), reply.text)
        return reply if should_post(schedule, last, reply.text) else None

    # -- dispatch -----------------------------------------------------------------

    async def _handle(
        self, identity: _Identity, request: Request, confirmed: bool
    ) -> tuple[Reply, tuple[str, ...], str]:
        if identity.role is Role.STRANGER:
            return Reply(NOT_ALLOWED, Outcome.DENIED), (), "not allowed"
        try:
            parsed = c.parse(request.text, request.reply_text)
            if parsed.spec.access is c.Access.ADMIN and identity.role is not Role.ADMIN:
                return Reply(NOT_ALLOWED, Outcome.DENIED), (), "admin only"
            return await self._execute(identity, parsed, request, confirmed)
        except UsageError as exc:
            return Reply(str(exc), Outcome.USAGE), (), "usage"
        except RecipientError as exc:
            return Reply(f"Not sent: {exc}.", Outcome.USAGE), (), "bad recipient"
        except AttachmentError as exc:
            return Reply(f"Not sent: could not fetch the file: {exc}.", Outcome.ERROR), (), str(exc)
        except GatewayError as exc:
            return Reply(f"WhatsMate {describe_failure(exc)}", Outcome.ERROR), (), exc.detail

    async def _execute(
        self, identity: _Identity, parsed: c.Parsed, request: Request, confirmed: bool
    ) -> tuple[Reply, tuple[str, ...], str]:
        command = parsed.command
        if isinstance(command, c.SEND_COMMANDS):
            recipients = self.config.address_book.resolve(command.to)
            numbers = tuple(r.number for r in recipients)
            attachment = self._attachment_for(parsed, request.attachment)
            if len(recipients) > self.config.confirm_over and not confirmed:
                prompt = self._ask_confirmation(identity, parsed, recipients, attachment)
                return prompt, numbers, "awaiting confirmation"
            reply, detail = await self._send(command, recipients, attachment)
            return reply, numbers, detail
        reply, detail = await self._query(identity, command)
        return reply, (), detail

    def _attachment_for(self, parsed: c.Parsed, attachment: Attachment | None) -> Attachment | None:
        command = parsed.command
        if not isinstance(command, c.SendMedia):
            return None
        if attachment is None or attachment.kind not in _ACCEPTS[command.kind]:
            what = {
                "photo": "a photo",
                "audio": "an audio file or voice note",
                "document": "a document",
            }[command.kind.value]
            raise parsed.spec.fail(
                f"Send {what} with the command as its caption, or reply to one with the command."
            )
        return attachment

    def _ask_confirmation(
        self,
        identity: _Identity,
        parsed: c.Parsed,
        recipients: tuple[Recipient, ...],
        attachment: Attachment | None,
    ) -> Reply:
        token = secrets.token_urlsafe(8)
        self._pending[token] = _Pending(identity, parsed, recipients, attachment, self._clock())
        shown = ", ".join(mask(r.number) for r in recipients[:5])
        more = f" and {len(recipients) - 5} more" if len(recipients) > 5 else ""
        lines = [
            f"Send /{parsed.spec.name} to {len(recipients)} recipients?",
            f"To: {shown}{more}",
        ]
        first_line = _first_line(parsed.command)
        if first_line:
            lines.append(f"Message: {first_line}")
        lines.append("Only you can confirm; this expires in 5 minutes.")
        return Reply("\n".join(lines), Outcome.PENDING, confirm=token)

    # -- sends --------------------------------------------------------------------

    async def _send(
        self,
        command: c.Command,
        recipients: tuple[Recipient, ...],
        attachment: Attachment | None,
    ) -> tuple[Reply, str]:
        instance = self.config.whatsmate.telegram_instance
        gw = self._gateway
        if isinstance(command, c.SendText) and command.channel is c.Channel.WHATSAPP:
            wa = self.config.whatsmate
            message = command.message
            if wa.whatsapp_endpoint == "queue":
                lines = await self._each(
                    recipients, lambda r: gw.whatsapp_queue_message(r.number, message)
                )
                title = "WhatsApp (queue)"
            else:
                lines = await self._each(
                    recipients,
                    lambda r: gw.whatsapp_message(wa.whatsapp_instance, r.number, message),
                )
                title = f"WhatsApp (instance {wa.whatsapp_instance})"
        elif isinstance(command, c.SendText):
            text = command.message
            lines = await self._batch(
                recipients,
                lambda n: gw.telegram_message(instance, n, text),
                lambda ns: gw.telegram_batch_message(instance, ns, text),
            )
            title = "Telegram"
        elif isinstance(command, c.SendLocation):
            lat, lon = command.latitude, command.longitude
            lines = await self._batch(
                recipients,
                lambda n: gw.telegram_location(instance, n, lat, lon),
                lambda ns: gw.telegram_batch_location(instance, ns, lat, lon),
            )
            title = f"Location {lat:g}, {lon:g}"
        elif isinstance(command, c.SendMedia) and attachment is not None:
            lines, title = await self._send_media(command, recipients, attachment)
        else:  # pragma: no cover - the parser only produces the cases above
            raise AssertionError(f"not a send: {command!r}")
        return _send_reply(title, lines)

    async def _send_media(
        self, command: c.SendMedia, recipients: tuple[Recipient, ...], attachment: Attachment
    ) -> tuple[list[_SendLine], str]:
        instance = self.config.whatsmate.telegram_instance
        gw = self._gateway
        with tempfile.TemporaryDirectory(prefix="whatsmate-bot-") as folder:
            path = Path(folder) / "upload"
            await attachment.download(path)
            media = MediaFile(path, attachment.filename)
            caption = command.caption
            single: Callable[[str], Awaitable[SendResult]]
            batch: Callable[[list[str]], Awaitable[SendResult]]
            if command.kind is c.MediaKind.PHOTO:
                single = lambda n: gw.telegram_photo(instance, n, media, caption)  # noqa: E731
                batch = lambda ns: gw.telegram_batch_photo(instance, ns, media, caption)  # noqa: E731
            elif command.kind is c.MediaKind.AUDIO:
                single = lambda n: gw.telegram_audio(instance, n, media)  # noqa: E731
                batch = lambda ns: gw.telegram_batch_audio(instance, ns, media)  # noqa: E731
            else:
                single = lambda n: gw.telegram_document(instance, n, media)  # noqa: E731
                batch = lambda ns: gw.telegram_batch_document(instance, ns, media)  # noqa: E731
            lines = await self._batch(recipients, single, batch)
        return lines, f"{command.kind.value.capitalize()} {attachment.filename}"

    async def _each(
        self,
        recipients: Sequence[Recipient],
        send: Callable[[Recipient], Awaitable[SendResult]],
    ) -> list[_SendLine]:
        """One call per recipient, at most ``max_concurrency`` at a time, in order given.

        The bound is per broadcast, so one large send never holds up another command;
        the connection pool (``max_connections``) caps all calls together.
        """
        fan_out = asyncio.Semaphore(self.config.whatsmate.max_concurrency)

        async def one(recipient: Recipient) -> _SendLine:
            async with fan_out:
                return await _attempt(recipient, send(recipient))

        return list(await asyncio.gather(*(one(r) for r in recipients)))

    async def _batch(
        self,
        recipients: Sequence[Recipient],
        single: Callable[[str], Awaitable[SendResult]],
        batch: Callable[[list[str]], Awaitable[SendResult]],
    ) -> list[_SendLine]:
        """One call for everyone: the single endpoint for one recipient, batch for more."""
        if len(recipients) == 1:
            return [await _attempt(recipients[0], single(recipients[0].number))]
        numbers = [r.number for r in recipients]
        outcome = await _attempt(recipients[0], batch(numbers))
        return [replace(outcome, recipient=r) for r in recipients]

    # -- everything that is not a send ----------------------------------------------

    async def _query(self, identity: _Identity, command: c.Command) -> tuple[Reply, str]:
        if isinstance(command, c.Status):
            return await self._status()
        if isinstance(command, c.Translate):
            await self._check_language(command.source)
            await self._check_language(command.target)
            text = await self._gateway.translate(command.source, command.target, command.text)
            return Reply(text, Outcome.OK), f"{command.source}->{command.target}"
        if isinstance(command, c.ListLanguages):
            return await self._languages_reply(command.filter)
        if isinstance(command, c.History):
            return await self._history(identity, command.count)
        if isinstance(command, c.WhoAmI):
            text = f"You are {identity.user_id} ({identity.role.value}) in chat {identity.chat_id}."
            return Reply(text, Outcome.OK), ""
        if isinstance(command, c.Help):
            access = c.Access.ADMIN if identity.role is Role.ADMIN else c.Access.MEMBER
            text = "Commands you may use:\n" + "\n".join(c.help_lines(access))
            return Reply(text, Outcome.OK), ""
        if isinstance(command, c.ScheduleList | c.ScheduleAdd | c.ScheduleRemove):
            return await self._schedule(identity, command)
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover

    async def _status(self) -> tuple[Reply, str]:
        instance = self.config.whatsmate.telegram_instance
        whatsapp, telegram = await asyncio.gather(
            _status_line("WhatsApp gateway", self._gateway.gateway_status()),
            _status_line(
                f"Telegram gateway (instance {instance})", self._gateway.telegram_status(instance)
            ),
        )
        self.last_gateway_up = whatsapp[1] and telegram[1]
        outcome = Outcome.OK if self.last_gateway_up else Outcome.ERROR
        detail = "; ".join(line for line, _ in (whatsapp, telegram))
        return Reply(f"{whatsapp[0]}\n{telegram[0]}", outcome), detail

    async def _codes(self) -> dict[str, str]:
        async with self._languages_lock:
            cached = self._languages
            if cached is None or self._clock() - cached[0] > LANGUAGE_CACHE_S:
                self._languages = cached = (self._clock(), await self._gateway.supported_codes())
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

    async def _languages_reply(self, needle: str) -> tuple[Reply, str]:
        codes = await self._codes()
        wanted = needle.casefold()
        rows = [
            f"{code} — {name}" if name and name != code else code
            for code, name in sorted(codes.items())
            if wanted in code.casefold() or wanted in name.casefold()
        ]
        if not rows:
            return Reply(f"No language code matches {needle!r}.", Outcome.OK), "0 codes"
        noun = "language code" if len(rows) == 1 else "language codes"
        header = f"{len(rows)} {noun}" + (f" matching {needle!r}" if needle else "")
        return Reply(header + ":\n" + "\n".join(rows), Outcome.OK), f"{len(rows)} codes"

    async def _history(self, identity: _Identity, count: int) -> tuple[Reply, str]:
        only = None if identity.role is Role.ADMIN else identity.user_id
        entries = await self._audit.recent(count, only)
        if not entries:
            return Reply("No audit entries yet.", Outcome.OK), "0 entries"
        lines = [_history_line(entry) for entry in entries]
        return Reply("\n".join(lines), Outcome.OK), f"{len(entries)} entries"

    async def _schedule(
        self, identity: _Identity, command: c.ScheduleList | c.ScheduleAdd | c.ScheduleRemove
    ) -> tuple[Reply, str]:
        if self._store is None or self._scheduler is None:
            return Reply("Schedules are not available in this mode.", Outcome.ERROR), ""
        configured = [Schedule.from_config(s) for s in self.config.schedules]
        added = await self._store.added()
        if isinstance(command, c.ScheduleList):
            rows = [
                f"{s.name}: {s.when} in chat {s.chat_id}: {s.command}"
                + (" (config)" if not s.from_chat else "")
                for s in (*configured, *added)
            ]
            return Reply("\n".join(rows) or "No schedules.", Outcome.OK), ""
        if isinstance(command, c.ScheduleRemove):
            if any(s.name == command.name for s in configured):
                return Reply(
                    f"{command.name} comes from the config file; edit it there.", Outcome.USAGE
                ), ""
            if not await self._store.remove(command.name):
                return Reply(f"No schedule named {command.name!r}.", Outcome.USAGE), ""
            self._scheduler.stop(command.name)
            return Reply(f"Removed schedule {command.name}.", Outcome.OK), command.name
        every_s = parse_schedule_every(command.every)
        usage = c.SPECS["schedule"]
        if every_s is None:
            raise usage.fail("<every> is a number and s, m, h or d, at least 10s (e.g. 15m).")
        inner = c.parse(command.command)
        if isinstance(inner.command, c.ScheduleList | c.ScheduleAdd | c.ScheduleRemove):
            raise usage.fail("A schedule cannot manage schedules.")
        taken = {s.name for s in (*configured, *added)}
        name = next(f"s{n}" for n in range(1, len(taken) + 2) if f"s{n}" not in taken)
        schedule = Schedule(
            name, identity.chat_id, command.command, every_s, notify="change", from_chat=True
        )
        await self._store.add(schedule, command.every, identity.user_id)
        self._scheduler.start(schedule, first_in_s=0)
        text = f"Added schedule {name}: {schedule.when}: {command.command} (posts changes only)."
        return Reply(text, Outcome.OK), name

    # -- bookkeeping ----------------------------------------------------------------

    def _finish(
        self,
        identity: _Identity,
        command: str,
        recipients: tuple[str, ...],
        outcome: Outcome,
        detail: str,
        started: float,
    ) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        self._audit.record(
            AuditEntry(identity.chat_id, identity.user_id, command, recipients, outcome, detail)
        )
        log.info(
            "command",
            command=command,
            chat=identity.chat_id,
            user=identity.user_id,
            role=identity.role.value,
            outcome=outcome.value,
            recipients=len(recipients),
            duration_ms=duration_ms,
            gateway_status=detail[:200],
        )
        if self._observe is not None:
            self._observe(command, outcome.value, duration_ms / 1000)


async def _attempt(recipient: Recipient, call: Awaitable[SendResult]) -> _SendLine:
    try:
        result = await call
    except OutcomeUnknown as exc:
        return _SendLine(recipient, Outcome.UNKNOWN, describe_failure(exc))
    except GatewayError as exc:
        return _SendLine(recipient, Outcome.ERROR, describe_failure(exc))
    if result.preview is not None:
        return _SendLine(recipient, Outcome.DRY_RUN, result.preview)
    return _SendLine(recipient, Outcome.OK, result.status)


def _send_reply(title: str, lines: list[_SendLine]) -> tuple[Reply, str]:
    outcomes = {line.outcome for line in lines}
    outcome = next(
        o for o in (Outcome.UNKNOWN, Outcome.ERROR, Outcome.DRY_RUN, Outcome.OK) if o in outcomes
    )
    if outcome is Outcome.DRY_RUN:
        previews = list(dict.fromkeys(line.text for line in lines))
        text = "Dry run — nothing was sent. Would call:\n" + "\n".join(previews)
        return Reply(text, outcome), "dry run"
    ok = sum(line.outcome is Outcome.OK for line in lines)
    header = f"{title}: sent to {ok} of {len(lines)}" if len(lines) > 1 else title
    body = [f"{line.recipient.written}: {line.text}" for line in lines]
    detail = "; ".join(dict.fromkeys(line.text for line in lines))
    return Reply("\n".join([header, *body]), outcome), detail


async def _status_line(label: str, call: Awaitable[object]) -> tuple[str, bool]:
    try:
        status = await call
    except GatewayError as exc:
        return f"{label}: unreachable — {describe_failure(exc)}", False
    up = bool(getattr(status, "up", False))
    return f"{label}: {getattr(status, 'status', '?')}", up


def describe_failure(exc: GatewayError) -> str:
    """One line a team member understands: what failed, the HTTP status, WhatsMate's words."""
    if isinstance(exc, OutcomeUnknown):
        return (
            f"outcome unknown — {exc.detail}; it may have been delivered. "
            "Not retried: check with the recipient before sending again."
        )
    if isinstance(exc, NotSent):
        return f"not sent — could not reach WhatsMate ({exc.detail}); nothing was delivered."
    if isinstance(exc, AuthError):
        return f"failed — credentials refused (HTTP {exc.status}: {exc.message})"
    if isinstance(exc, QuotaError):
        return f"failed — plan or quota limit (HTTP {exc.status}: {exc.message})"
    if isinstance(exc, GatewayHTTPError):
        return f"failed — HTTP {exc.status}: {exc.message}"
    if isinstance(exc, SendRejected):
        return f"failed — WhatsMate said: {exc.status}"
    if isinstance(exc, BadResponse):
        return f"failed — unexpected answer ({exc.detail})"
    return f"failed — {exc.detail}"


def _first_line(command: c.Command) -> str:
    if isinstance(command, c.SendText):
        line = command.message.splitlines()[0] if command.message else ""
        return line if len(line) <= 80 else line[:79] + "…"
    if isinstance(command, c.SendLocation):
        return f"location {command.latitude:g}, {command.longitude:g}"
    if isinstance(command, c.SendMedia):
        return f"a {command.kind.value}" + (f" ({command.caption[:60]})" if command.caption else "")
    return ""


_DIGIT_RUN = re.compile(r"\d{5,}")


def _history_line(entry: AuditEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.at))
    to = ", ".join(mask(n) for n in entry.recipients[:5])
    if len(entry.recipients) > 5:
        to += f" +{len(entry.recipients) - 5}"
    detail = _DIGIT_RUN.sub(lambda m: mask(m[0]), entry.detail)[:80]
    parts = [when, f"user {entry.user_id}", entry.command]
    if to:
        parts.append(f"→ {to}")
    parts.append(entry.outcome.value)
    if detail:
        parts.append(detail)
    return " · ".join(parts)
