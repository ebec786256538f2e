"""The words every layer of the bot uses, defined once, below all of them.

A channel, how a command ended, a replica's role, a user's standing, the audit record:
the parser, the replies, the sends, the bridge, the CLI and the storage all speak of
these, so they live here and import nothing of the bot's — the storage imports this
module, never the other way round, and no layer spells a channel or a role as a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> int | None:
    """``15m`` -> 900: a duration as the config and the chat write it, <number><s|m|h|d>;
    None when ``text`` is not one."""
    match = _DURATION.fullmatch(text.strip())
    return int(match[1]) * _UNIT_S[match[2]] if match else None


class Channel(Enum):
    """Where a message goes or comes from. The value is the spelling of the inbound URL
    (``/inbound/whatsapp/…``), of WhatsMate's paths and of the storage."""

    WHATSAPP = "whatsapp"
    TELEGRAM = "telegram"

    @property
    def command(self) -> str:
        """The name of the command that sends on it: ``wa``, ``tg``."""
        return _SPELLINGS[self][0]

    @property
    def label(self) -> str:
        """How a person names it: ``WhatsApp``, ``Telegram``."""
        return _SPELLINGS[self][1]


_SPELLINGS = {Channel.WHATSAPP: ("wa", "WhatsApp"), Channel.TELEGRAM: ("tg", "Telegram")}


class Outcome(Enum):
    """How a command, or one recipient of a send, ended."""

    OK = "ok"
    ERROR = "error"
    DENIED = "denied"
    UNKNOWN = "unknown"
    DRY_RUN = "dry-run"
    USAGE = "usage"
    CANCELLED = "cancelled"
    PENDING = "pending"


class Role(Enum):
    """What a replica does with Telegram's updates (``/healthz`` shows it)."""

    POLLER = "poller"  # elected: the one that calls getUpdates
    STANDBY = "standby"  # waits to take over from the poller
    WEBHOOK = "webhook"  # Telegram pushes updates to every replica


class Notify(Enum):
    """When a schedule posts its result (``notify:`` in the config)."""

    ALWAYS = "always"  # every run
    CHANGE = "change"  # the first result, then only when it differs


class UserRole(Enum):
    """Who is asking, as the access lists make them."""

    ADMIN = "admin"
    USER = "user"
    STRANGER = "stranger"


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail: who, where, what, to whom, how it ended (no body)."""

    chat_id: int
    user_id: int
    command: str
    recipients: tuple[str, ...]
    outcome: Outcome
    detail: str
    at: float = 0.0
    job_ids: tuple[str, ...] = ()  # WhatsMate's ids of the jobs a v3 send or /pdf created


class Press(Enum):
    """What pressing a button under one of the bot's messages asks for."""

    SEND = "send"  # a confirmation prompt's
    CANCEL = "cancel"
    ACK = "ack"  # an incident post's
    SILENCE = "silence"

    @property
    def area(self) -> str:
        """The kind of message the button is under: the first word of its callback data."""
        return "incident" if self in (Press.ACK, Press.SILENCE) else "confirm"


@dataclass(frozen=True)
class ButtonPress:
    """A button's callback data, ``<area>:<key>:<press>[:<command>]``, written and read
    here only. ``key`` is the prompt's token or the incident's number; ``command``, on a
    prompt's buttons, names the command it confirms (a recovery answers in its name)."""

    key: str
    press: Press
    command: str = ""

    @property
    def data(self) -> str:
        parts = (self.press.area, self.key, self.press.value, self.command)
        return ":".join(parts if self.command else parts[:3])

    @classmethod
    def parse(cls, data: str) -> ButtonPress | None:
        """The press ``data`` stands for; None for data no button of this bot carries."""
        area, key, value, command = [*data.split(":", 3), "", "", ""][:4]
        press = next((p for p in Press if p.value == value), None)
        if press is None or press.area != area or not key:
            return None
        if area == "incident" and not key.isdigit():  # an incident's key is its number
            return None
        return cls(key, press, command)
