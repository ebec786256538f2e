"""From a send command to WhatsMate calls: content, endpoints, limits, fan-out.

The endpoints themselves are data in ``gateway`` (one table per API version); this
module only decides, for one command, what it carries (text, link, image, document,
audio, voice note, location), which recipients share a call (a batch) and which get
one each (v3, groups), checks every limit before anything is downloaded or sent, and
runs the calls with a bound of its own per broadcast.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, assert_never

from bot import commands as c
from bot.errors import GatewayError, LimitExceeded, OutcomeUnknown, UsageError
from bot.gateway import (
    WHATSAPP_QUEUE,
    Content,
    MediaFile,
    Outgoing,
    Route,
    Target,
    WhatsMate,
    check_media_size,
    clean_filename,
    largest_file,
)
from bot.recipients import Recipient
from bot.replies import SendLine, describe_failure
from bot.vocabulary import Channel, Outcome

_URL = re.compile(r"https?://[^\s/]+\S*")
# Which files each media command takes (``/wa`` takes any), and what it sends them as.
_ACCEPTS = {
    c.MediaKind.PHOTO: {c.MediaKind.PHOTO},
    c.MediaKind.AUDIO: {c.MediaKind.AUDIO, c.MediaKind.VOICE},
    c.MediaKind.DOCUMENT: set(c.MediaKind),
}
_CONTENT = {
    c.MediaKind.PHOTO: Content.IMAGE,
    c.MediaKind.AUDIO: Content.AUDIO,
    c.MediaKind.VOICE: Content.VOICE,
    c.MediaKind.DOCUMENT: Content.DOCUMENT,
}
_WANTED = {
    c.MediaKind.PHOTO: "a photo",
    c.MediaKind.AUDIO: "an audio file or voice note",
    c.MediaKind.DOCUMENT: "a document",
}


class Attachment(Protocol):
    """A file that came with (or was replied to by) the command; fetched only when needed."""

    @property
    def kind(self) -> c.MediaKind: ...

    @property
    def filename(self) -> str: ...

    @property
    def file_id(self) -> str:
        """How the front end finds the file again (a prompt keeps only this)."""

    @property
    def size(self) -> int | None:
        """The size Telegram reports, when it does (checked before downloading)."""

    async def download(self, destination: Path, cap: FileCap) -> None:
        """Stream the file to ``destination``; ``LimitExceeded(cap.reason)`` as soon as it
        is known to be over ``cap.max_bytes`` (by its reported size, or by counting)."""


@dataclass(frozen=True)
class FileCap:
    """The most a command's file may be, and the line that says a file is bigger."""

    max_bytes: int
    reason: str


# Telegram's Bot API hands bots files of at most 20 MB; the most the bot ever downloads.
DOWNLOAD_CAP = FileCap(
    20 * 1024 * 1024, "the file is over 20 MB, the most the bot downloads (Telegram's bot limit)"
)


@dataclass(frozen=True)
class FileRef:
    """What a confirmation prompt keeps of a command's file."""

    kind: c.MediaKind
    filename: str
    file_id: str
    size: int | None


AttachmentLoader = Callable[[FileRef], Attachment]


@dataclass(frozen=True)
class Delivery:
    """One call: its endpoint and its recipients (one, or several on a batch endpoint)."""

    route: Route
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True)
class SendPlan:
    title: str
    outgoing: Outgoing  # without the file: it is downloaded only when the send runs
    deliveries: tuple[Delivery, ...]
    attachment: Attachment | None = None
    file_cap: FileCap = DOWNLOAD_CAP


def attachment_for(parsed: c.Parsed, attachment: Attachment | None) -> Attachment | None:
    """The file a media command sends; a Usage error when it has none it can send."""
    command = parsed.command
    if not isinstance(command, c.SendMedia):
        return None
    if command.channel is Channel.WHATSAPP and attachment is not None:
        return attachment
    if attachment is None or attachment.kind not in _ACCEPTS[command.kind]:
        raise parsed.spec.fail(
            f"Send {_WANTED[command.kind]} with the command as its caption, "
            "or reply to one with the command."
        )
    return attachment


def plan_send(
    command: c.SendCommand,
    recipients: Sequence[Recipient],
    gateway: WhatsMate,
    attachment: Attachment | None,
) -> SendPlan:
    """Endpoints and limits for ``command``; raises LimitExceeded before any call."""
    channel, outgoing, title = _what(command, gateway, attachment)
    numbers = tuple(r for r in recipients if r.group is None)
    batch = gateway.route(channel, Target.BATCH, outgoing.content)
    batched = batch is not None and len(numbers) > 1
    deliveries = [Delivery(batch, numbers)] if batch is not None and batched else []
    for recipient in recipients:
        if recipient.group is not None or not batched:
            target = Target.SINGLE if recipient.group is None else Target.GROUP
            deliveries.append(Delivery(_route(gateway, channel, target, outgoing), (recipient,)))
    cap = DOWNLOAD_CAP
    for delivery in deliveries:
        gateway.check(delivery.route, outgoing, delivery.recipients[0])
        media = delivery.route.media_field
        limit = gateway.api.media_limits.get(media) if media else None
        if media and attachment is not None and attachment.size is not None:
            check_media_size(media, attachment.size, limit)
        if media and limit is not None and largest_file(media, limit)[0] < cap.max_bytes:
            cap = FileCap(*largest_file(media, limit))
    if attachment is not None and attachment.size is not None and attachment.size > cap.max_bytes:
        raise LimitExceeded(cap.reason)
    return SendPlan(title, outgoing, tuple(deliveries), attachment, cap)


def _route(gateway: WhatsMate, channel: Channel, target: Target, outgoing: Outgoing) -> Route:
    route = gateway.route(channel, target, outgoing.content)
    if route is None:
        what = "groups" if target is Target.GROUP else f"{outgoing.content.value}s"
        raise LimitExceeded(
            f"WhatsMate API v{gateway.api.version} sends no {channel.label} {what}"
            + gateway.api.upgrade_hint
        )
    return route


def _what(
    command: c.SendCommand, gateway: WhatsMate, attachment: Attachment | None
) -> tuple[Channel, Outgoing, str]:
    """The channel, what is sent, and the title of the reply."""
    match command:
        case c.SendText():
            return _text(command, gateway)
        case c.SendLocation():
            return _location(command, gateway)
        case c.SendMedia():
            if attachment is None:  # pragma: no cover - attachment_for() found one first
                raise UsageError(f"Usage: /help (/{command.kind.value} needs its file)")
            return _media(command, gateway, attachment)
        case _:
            assert_never(command)


def _text(command: c.SendText, gateway: WhatsMate) -> tuple[Channel, Outgoing, str]:
    channel = command.channel
    link = (
        _URL.fullmatch(command.message)
        and gateway.route(channel, Target.SINGLE, Content.URL) is not None
    )
    content = Content.URL if link else Content.TEXT
    single = gateway.route(channel, Target.SINGLE, content)
    if channel is Channel.TELEGRAM:
        title = "Telegram"
    elif single is WHATSAPP_QUEUE:
        title = "WhatsApp (queue)"
    else:
        instance = gateway.instance(channel)
        title = f"WhatsApp{' link' if link else ''} (instance {instance})"
    return channel, Outgoing(content, text=command.message), title


def _location(command: c.SendLocation, gateway: WhatsMate) -> tuple[Channel, Outgoing, str]:
    lat, lon = command.latitude, command.longitude
    title = f"Location {lat:g}, {lon:g}"
    if gateway.route(Channel.TELEGRAM, Target.SINGLE, Content.LOCATION) is not None:
        outgoing = Outgoing(Content.LOCATION, latitude=lat, longitude=lon)
        return Channel.TELEGRAM, outgoing, title
    text = f"Location: {lat}, {lon}\nhttps://maps.google.com/?q={lat},{lon}"
    title += f" (sent as text: API v{gateway.api.version} has no location endpoint)"
    return Channel.TELEGRAM, Outgoing(Content.TEXT, text=text), title


def _media(
    command: c.SendMedia, gateway: WhatsMate, attachment: Attachment
) -> tuple[Channel, Outgoing, str]:
    if command.channel is Channel.WHATSAPP:
        content = _CONTENT[attachment.kind]
        label = f"WhatsApp {attachment.kind.value}"
    else:
        content = (
            Content.DOCUMENT if command.kind is c.MediaKind.DOCUMENT else _CONTENT[attachment.kind]
        )
        label = command.kind.value.capitalize()
    name = _filename(gateway, attachment.filename)
    outgoing = Outgoing(content, caption=command.caption)
    return command.channel, outgoing, f"{label} {name}"


def _filename(gateway: WhatsMate, name: str) -> str:
    limit = gateway.api.filename_max
    return clean_filename(name, limit) if limit else name


async def run_send(plan: SendPlan, gateway: WhatsMate, max_concurrency: int) -> list[SendLine]:
    """Make the calls, at most ``max_concurrency`` at a time; one line per recipient.

    The bound is per broadcast, so one large send never holds up another command; the
    connection pool (``max_connections``) caps all calls together.
    """
    if plan.attachment is None:
        return await _fan_out(plan, plan.outgoing, gateway, max_concurrency)
    with tempfile.TemporaryDirectory(prefix="whatsmate-bot-") as folder:
        path = Path(folder) / "upload"
        await plan.attachment.download(path, plan.file_cap)
        media = MediaFile(path, _filename(gateway, plan.attachment.filename))
        return await _fan_out(plan, replace(plan.outgoing, media=media), gateway, max_concurrency)


async def _fan_out(
    plan: SendPlan, outgoing: Outgoing, gateway: WhatsMate, max_concurrency: int
) -> list[SendLine]:
    bound = asyncio.Semaphore(max_concurrency)

    async def one(delivery: Delivery) -> list[SendLine]:
        async with bound:
            try:
                result = await gateway.send(delivery.route, outgoing, delivery.recipients)
            except OutcomeUnknown as exc:
                line = SendLine(delivery.recipients[0], Outcome.UNKNOWN, describe_failure(exc))
            except GatewayError as exc:
                line = SendLine(delivery.recipients[0], Outcome.ERROR, describe_failure(exc))
            else:
                if result.preview is not None:
                    line = SendLine(delivery.recipients[0], Outcome.DRY_RUN, result.preview)
                else:
                    line = SendLine(
                        delivery.recipients[0], Outcome.OK, result.status, result.job_id
                    )
        return [replace(line, recipient=r) for r in delivery.recipients]

    done = await asyncio.gather(*(one(d) for d in plan.deliveries))
    return [line for lines in done for line in lines]
