"""Parse chat text into frozen command objects. Pure: no I/O, no config, no Telegram.

``COMMANDS`` is the single table of what the bot understands; it drives the parser,
``/help`` and the command menu registered with Telegram, so the three never disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bot.errors import UnknownCommand, UsageError
from bot.vocabulary import Channel, duration_s


class Access(Enum):
    """Who may run a command (admins may run everything, anywhere)."""

    MEMBER = "member"  # users, in the team chats
    ADMIN = "admin"


class MediaKind(Enum):
    """What a file sent with (or replied to by) a command is, as Telegram reports it."""

    PHOTO = "photo"
    AUDIO = "audio"
    VOICE = "voice note"
    DOCUMENT = "document"


@dataclass(frozen=True)
class SendText:
    channel: Channel
    to: str
    message: str


@dataclass(frozen=True)
class SendLocation:
    to: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class SendMedia:
    """``/photo``, ``/audio``, ``/doc`` (Telegram), or ``/wa`` with a file (WhatsApp, v3)."""

    kind: MediaKind
    to: str
    caption: str | None = None
    channel: Channel = Channel.TELEGRAM


@dataclass(frozen=True)
class Translate:
    source: str
    target: str
    text: str


@dataclass(frozen=True)
class PdfToText:
    url: str


@dataclass(frozen=True)
class ListLanguages:
    filter: str = ""


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class History:
    count: int = 10


@dataclass(frozen=True)
class WhoAmI:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class ScheduleList:
    pass


@dataclass(frozen=True)
class ScheduleAdd:
    every: str
    command: str


@dataclass(frozen=True)
class ScheduleRemove:
    name: str


@dataclass(frozen=True)
class Acknowledge:
    incident: int


@dataclass(frozen=True)
class SilenceIncident:
    incident: int
    seconds: int


@dataclass(frozen=True)
class ListIncidents:
    pass


# Each union is matched with ``typing.assert_never`` on its last branch where it is
# dispatched, so mypy --strict fails until a new command is handled everywhere.
SendCommand = SendText | SendLocation | SendMedia
ScheduleCommand = ScheduleList | ScheduleAdd | ScheduleRemove
PagingCommand = Acknowledge | SilenceIncident | ListIncidents
QueryCommand = (
    Translate
    | PdfToText
    | ListLanguages
    | Status
    | History
    | WhoAmI
    | Help
    | ScheduleCommand
    | PagingCommand
)
"""Every command that is not a send: ``Service._query`` answers it."""
Command = SendCommand | QueryCommand
SCHEDULE_COMMANDS = (ScheduleList, ScheduleAdd, ScheduleRemove)
SEND_COMMANDS = (SendText, SendLocation, SendMedia)
PAGING_COMMANDS = (Acknowledge, SilenceIncident, ListIncidents)
HISTORY_MAX = 50
SILENCE_MIN_S, SILENCE_MAX_S = 60, 30 * 86400


@dataclass(frozen=True)
class Args:
    """What follows the command word, and what the message came with.

    ``rest`` is verbatim; ``reply_text`` is the text of a replied-to message; ``attached``
    the kind of file sent with the command or replied to (the parser never sees the file).
    """

    rest: str
    reply_text: str | None
    attached: MediaKind | None = None


@dataclass(frozen=True)
class CommandSpec:
    name: str
    arguments: str
    summary: str
    access: Access
    parse: Callable[[Args, str], Command]

    @property
    def usage(self) -> str:
        return f"Usage: /{self.name} {self.arguments}".rstrip()

    def fail(self, problem: str = "") -> UsageError:
        return UsageError(self.usage, problem)


def _split(rest: str, count: int) -> list[str]:
    """The first ``count`` words, then everything after them verbatim (newlines kept)."""
    parts: list[str] = []
    remaining = rest
    for _ in range(count):
        match = re.match(r"\s*(\S+)", remaining)
        if not match:
            break
        parts.append(match[1])
        remaining = remaining[match.end() :]
    parts.append(remaining.strip())
    return parts


def _send_text(channel: Channel) -> Callable[[Args, str], Command]:
    """``/wa`` and ``/tg``: the message, else the replied-to text; ``/wa`` with a file: media."""

    def parse(args: Args, name: str) -> Command:
        to, message = _to_and_rest(args)
        if to and channel is Channel.WHATSAPP and args.attached is not None:
            return SendMedia(args.attached, to, message or None, Channel.WHATSAPP)
        message = message or (args.reply_text or "").strip()
        if not to or not message:
            raise SPECS[name].fail()
        return SendText(channel, to, message)

    return parse


def _to_and_rest(args: Args) -> tuple[str, str]:
    """``<to>`` and everything after it (empty strings when missing)."""
    parts = _split(args.rest, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else ("", "")


def _pdf(args: Args, name: str) -> Command:
    url = args.rest.strip()
    if not re.fullmatch(r"https?://[^\s/]+\S*", url):
        raise SPECS[name].fail("Give the http(s) address of a PDF.")
    return PdfToText(url)


def _coordinate(text: str, limit: float, what: str, spec: CommandSpec) -> float:
    try:
        value = float(text)
    except ValueError:
        raise spec.fail(f"{what} {text!r} is not a number.") from None
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise spec.fail(f"{what} must be between -{limit:g} and {limit:g}.")
    return value


def _location(args: Args, name: str) -> Command:
    spec = SPECS[name]
    parts = _split(args.rest, 3)
    if len(parts) != 4 or parts[3]:
        raise spec.fail()
    to, lat, lon, _ = parts
    return SendLocation(
        to, _coordinate(lat, 90, "Latitude", spec), _coordinate(lon, 180, "Longitude", spec)
    )


def _media(kind: MediaKind) -> Callable[[Args, str], Command]:
    def parse(args: Args, name: str) -> Command:
        to, caption = _to_and_rest(args)
        if not to:
            raise SPECS[name].fail()
        return SendMedia(kind, to, caption or None)

    return parse


_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")


def _translate(args: Args, name: str) -> Command:
    spec = SPECS[name]
    source, target, text = (*_split(args.rest, 2), "", "")[:3]
    if not text and args.reply_text:
        text = args.reply_text.strip()
    if not (source and target and text):
        raise spec.fail()
    for code in (source, target):
        if not _LANG.fullmatch(code):
            raise spec.fail(f"{code!r} is not a language code; /langs lists them.")
    return Translate(source, target, text)


def _langs(args: Args, name: str) -> Command:
    return ListLanguages(args.rest.strip())


def _no_args(command: Command) -> Callable[[Args, str], Command]:
    def parse(args: Args, name: str) -> Command:
        if args.rest.strip():
            raise SPECS[name].fail()
        return command

    return parse


def _history(args: Args, name: str) -> Command:
    text = args.rest.strip()
    if not text:
        return History()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= HISTORY_MAX:
        raise SPECS[name].fail(f"n must be a number from 1 to {HISTORY_MAX}.")
    return History(int(text))


def _schedule(args: Args, name: str) -> Command:
    spec = SPECS[name]
    action, *rest = _split(args.rest, 1)
    if action == "list" and not rest[0]:
        return ScheduleList()
    if action == "remove" and rest[0] and " " not in rest[0]:
        return ScheduleRemove(rest[0])
    if action == "add":
        every, command = (*_split(rest[0], 1), "")[:2]
        if every and command.startswith("/"):
            return ScheduleAdd(every, command)
    raise spec.fail()


def _incident_number(text: str, spec: CommandSpec) -> int:
    digits = text.removeprefix("#")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 12:
        raise spec.fail(f"{text!r} is not an incident number (as in #12).")
    return int(digits)


def _ack(args: Args, name: str) -> Command:
    spec = SPECS[name]
    number, rest = (*_split(args.rest, 1), "")[:2]
    if not number or rest:
        raise spec.fail()
    return Acknowledge(_incident_number(number, spec))


def _silence(args: Args, name: str) -> Command:
    spec = SPECS[name]
    parts = _split(args.rest, 2)
    if len(parts) != 3 or parts[2]:
        raise spec.fail()
    seconds = duration_s(parts[1]) or 0
    if not SILENCE_MIN_S <= seconds <= SILENCE_MAX_S:
        raise spec.fail("The duration is e.g. 30m, 2h or 1d (1m to 30d).")
    return SilenceIncident(_incident_number(parts[0], spec), seconds)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        Channel.WHATSAPP.command,
        "<to> <message>",
        "send a WhatsApp message",
        Access.MEMBER,
        _send_text(Channel.WHATSAPP),
    ),
    CommandSpec(
        Channel.TELEGRAM.command,
        "<to> <message>",
        "send a Telegram message via WhatsMate",
        Access.MEMBER,
        _send_text(Channel.TELEGRAM),
    ),
    CommandSpec("loc", "<to> <latitude> <longitude>", "send a location", Access.MEMBER, _location),
    CommandSpec(
        "photo",
        "<to> [caption]",
        "send the attached or replied-to photo",
        Access.MEMBER,
        _media(MediaKind.PHOTO),
    ),
    CommandSpec(
        "audio",
        "<to> [caption]",
        "send the attached or replied-to audio or voice note",
        Access.MEMBER,
        _media(MediaKind.AUDIO),
    ),
    CommandSpec(
        "doc",
        "<to> [caption]",
        "send the attached or replied-to document",
        Access.MEMBER,
        _media(MediaKind.DOCUMENT),
    ),
    CommandSpec(
        "translate",
        "<from> <to> <text>",
        "translate text (or the replied-to message)",
        Access.MEMBER,
        _translate,
    ),
    CommandSpec("pdf", "<url>", "the text of a PDF on the web", Access.MEMBER, _pdf),
    CommandSpec("langs", "[filter]", "list language codes", Access.MEMBER, _langs),
    CommandSpec(
        "status", "", "WhatsApp and Telegram gateway status", Access.MEMBER, _no_args(Status())
    ),
    CommandSpec("history", "[n]", "recent audit entries", Access.MEMBER, _history),
    CommandSpec(
        "whoami",
        "",
        "your user id, this chat's id and your role",
        Access.MEMBER,
        _no_args(WhoAmI()),
    ),
    CommandSpec(
        "incidents", "", "open incidents and who is paged", Access.MEMBER, _no_args(ListIncidents())
    ),
    CommandSpec("ack", "<n>", "acknowledge incident n: paging stops", Access.MEMBER, _ack),
    CommandSpec(
        "silence", "<n> <duration>", "silence incident n in Alertmanager", Access.MEMBER, _silence
    ),
    CommandSpec("help", "", "this list", Access.MEMBER, _no_args(Help())),
    CommandSpec(
        "schedule",
        "list | add <every> <command> | remove <name>",
        "manage scheduled commands",
        Access.ADMIN,
        _schedule,
    ),
)
SPECS = {spec.name: spec for spec in COMMANDS}
_HEAD = re.compile(r"/([A-Za-z0-9_]+)(?:@([A-Za-z0-9_]+))?(?=\s|$)")


@dataclass(frozen=True)
class Parsed:
    """A parsed command and the table row it came from."""

    spec: CommandSpec
    command: Command


def command_name(text: str) -> str | None:
    """``/wa@Bot hi`` -> ``wa``: the command word of ``text``, or None if it is not a command."""
    match = _HEAD.match(text.lstrip())
    return match[1].lower() if match else None


def is_for_other_bot(text: str, bot_username: str | None) -> bool:
    """True for ``/cmd@OtherBot``: a group command addressed to another bot."""
    match = _HEAD.match(text.lstrip())
    return bool(match and match[2] and bot_username and match[2].lower() != bot_username.lower())


def parse(text: str, reply_text: str | None = None, attached: MediaKind | None = None) -> Parsed:
    """Parse one chat message. Raises UsageError (or UnknownCommand) on malformed input."""
    stripped = text.lstrip()
    if not stripped.startswith("/"):
        raise UsageError("Usage: commands start with / — /help lists the ones you may use.")
    match = _HEAD.match(stripped)
    if not match:
        word = stripped.split(maxsplit=1)[0] if stripped.strip() else "/"
        raise UnknownCommand(word[:40])
    spec = SPECS.get(match[1].lower())
    if spec is None:
        raise UnknownCommand(f"/{match[1][:40]}")
    args = Args(stripped[match.end() :], reply_text, attached)
    return Parsed(spec, spec.parse(args, spec.name))


def help_lines(access: Access) -> list[str]:
    """One usage line per command a member (or an admin) may run."""
    allowed = [s for s in COMMANDS if access is Access.ADMIN or s.access is Access.MEMBER]
    return [f"/{s.name} {s.arguments} — {s.summary}".replace("  ", " ") for s in allowed]
