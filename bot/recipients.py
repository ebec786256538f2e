"""Turn the ``<to>`` word of a command into phone numbers, and hide numbers in output.

A ``<to>`` word is a number, a contact alias, a group name, or a comma list of these;
under API v3 also the alias of a WhatsApp or Telegram group the gateway takes part in.
Kept apart from parsing because it needs the address book from the config, and apart
from the service because it is pure and worth testing on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bot.errors import RecipientError
from bot.vocabulary import Channel

_NUMBER = re.compile(r"\+?[0-9](?:[0-9.\-]*[0-9])?")
MIN_DIGITS, MAX_DIGITS = 5, 15


@dataclass(frozen=True, slots=True)
class Recipient:
    """One destination: ``written`` is how the user named it, ``number`` the digits sent.

    For a gateway group, ``group`` is its name and ``number`` its admin's number.
    """

    written: str
    number: str
    group: str | None = None

    @property
    def audit_name(self) -> str:
        """What the audit keeps: the number (masked when shown), or ``#alias`` of a group."""
        return f"#{self.written.casefold()}" if self.group else self.number


@dataclass(frozen=True, slots=True)
class GatewayGroup:
    """A WhatsApp or Telegram group the gateway takes part in (``whatsapp_groups``)."""

    name: str
    admin: str  # digits of the group creator's number


def clean_written_number(text: str) -> str | None:
    """Like ``clean_number``, but spaces allowed too (numbers written in the config)."""
    return clean_number(text.replace(" ", ""))


def clean_number(text: str) -> str | None:
    """Digits of a phone number written with an optional ``+`` and inner dashes or dots.

    Returns None when ``text`` is not shaped like a number or has not 5-15 digits.
    """
    if not _NUMBER.fullmatch(text):
        return None
    digits = re.sub(r"[^0-9]", "", text)
    return digits if MIN_DIGITS <= len(digits) <= MAX_DIGITS else None


def looks_like_number(text: str) -> bool:
    """True for words made only of digits, ``+``, dashes and dots (valid or not)."""
    return bool(text) and all(c in "0123456789+-." for c in text)


def mask(number: str) -> str:
    """``4412345678`` -> ``44•••678``: enough to recognise, not enough to dial."""
    if len(number) <= 5:
        return "•" * len(number)
    return f"{number[:2]}•••{number[-3:]}"


@dataclass(frozen=True)
class AddressBook:
    """Contact aliases, groups and gateway groups (per channel), keyed case-insensitively."""

    contacts: Mapping[str, str]
    groups: Mapping[str, Sequence[str]]
    gateway_groups: Mapping[Channel, Mapping[str, GatewayGroup]] = field(default_factory=dict)

    def alias_of(self, number: str) -> str | None:
        """The contact alias of ``number``, if it has one (the first in the config)."""
        return next((alias for alias, n in self.contacts.items() if n == number), None)

    def resolve(self, to: str, channel: Channel | None = None) -> tuple[Recipient, ...]:
        """All recipients named by one ``<to>`` word, each once, in order given.

        ``channel`` is where the send goes: its gateway groups are recipients too.
        """
        found: dict[tuple[str | None, str], Recipient] = {}
        for part in to.split(","):
            if not part:
                raise RecipientError(f"empty recipient in {to!r}")
            for recipient in self._resolve_one(part, (), channel):
                found.setdefault((recipient.group, recipient.number), recipient)
        return tuple(found.values())

    def _resolve_one(
        self, word: str, seen_groups: tuple[str, ...], channel: Channel | None = None
    ) -> list[Recipient]:
        if looks_like_number(word):
            number = clean_number(word)
            if number is None:
                raise RecipientError(
                    f"{word!r} is not a phone number ({MIN_DIGITS}-{MAX_DIGITS} digits, "
                    "optional leading +, dashes or dots inside)"
                )
            return [Recipient(word, number)]
        key = word.casefold()
        if key in self.contacts:
            return [Recipient(word, self.contacts[key])]
        if key in self.groups:
            if key in seen_groups:
                raise RecipientError(f"group {word!r} contains itself")
            members: list[Recipient] = []
            for member in self.groups[key]:
                members.extend(self._resolve_one(member, (*seen_groups, key)))
            return members
        for other, groups in self.gateway_groups.items():
            if key in groups:
                group = groups[key]
                if other is channel:
                    return [Recipient(word, group.admin, group.name)]
                use = f"/{other.command}"
                raise RecipientError(f"{word!r} is a {other.label} group: use {use}")
        raise RecipientError(f"unknown recipient {word!r}: not a number, contact or group")
