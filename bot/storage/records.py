"""The small values ``Storage`` takes and gives back: what callers know of the tables.

Rows never leave the storage layer as tuples; each area reads and writes these frozen
records, typed with the shared vocabulary (a channel is a ``Channel``, not a string).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.vocabulary import Channel


@dataclass(frozen=True)
class Arrival:
    """An inbound message to store, and the windows that decide where it goes."""

    channel: Channel
    number: str
    body: str
    digest: str  # the same delivery again has the same digest
    received: float
    repeat_after: float  # a same digest received after this is a repeat
    thread_after: float  # a command that sent to the number after this is its thread
    default_chat: int
    handled: bool = False  # already dealt with (an ack): kept only to know a repeat


@dataclass(frozen=True)
class StoredSchedule:
    """A schedule added from the chat with ``/schedule add``."""

    name: str
    chat_id: int
    every: str
    command: str


@dataclass(frozen=True)
class LastRun:
    at: float
    reply: str | None


@dataclass(frozen=True)
class Thread:
    """The command that last sent to a number: where an answer from it belongs."""

    chat_id: int
    message_id: int


@dataclass(frozen=True)
class InboundMessage:
    """One accepted message from WhatsApp or Telegram, waiting to be posted."""

    id: int
    channel: Channel
    number: str
    body: str
    chat_id: int
    reply_to: int | None


@dataclass(frozen=True)
class PostProgress:
    """How far the post of some inbound messages got, kept so that no part of it is
    posted twice unmarked: a post that failed half-way goes on from the part that failed."""

    parts_done: int = 0
    maybe_sent: bool = False  # part ``parts_done`` was sent and its answer lost (or due)
    first_id: int | None = None  # the message id of the post's first part, once posted

    @property
    def started(self) -> bool:
        """Something of the post may be in the chat: its messages stay one post."""
        return self.parts_done > 0 or self.maybe_sent


@dataclass(frozen=True)
class Taken:
    """Inbound messages one replica took to post, as one post, and how far it got."""

    messages: tuple[InboundMessage, ...]
    progress: PostProgress = PostProgress()


@dataclass(frozen=True)
class StoredPrompt:
    """A Send / Cancel prompt: who asked, when, and the request to run on Send (JSON)."""

    token: str
    created: float
    user_id: int
    request: str


@dataclass(frozen=True)
class JournalEntry:
    """An update a poller recorded before handling it, and had not finished."""

    update_id: int
    owner: str
    payload: str
    received: float = 0.0  # when it was recorded (seconds since the epoch)


@dataclass(frozen=True)
class PostRef:
    """What a bridge post in the chat stands for, so a reply to it can go back."""

    channel: Channel
    number: str
    merged: bool
