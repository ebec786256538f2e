"""Turn the ``<to>`` word of a command into phone numbers, and hide numbers in output.

A ``<to>`` word is a number, a contact alias, a group name, or a comma list of these.
Kept apart from parsing because it needs the address book from the config, and apart
from the service because it is pure and worth testing on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.errors import RecipientError

_NUMBER = re.compile(r"\+?[0-9](?:[0-9.\-]*[0-9])?")
MIN_DIGITS, MAX_DIGITS = 5, 15


@dataclass(frozen=True, slots=True)
class Recipient:
    """One destination: ``written`` is how the user named it, ``number`` the digits sent."""

    written: str
    number: str


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
    """Contact aliases and groups, keyed case-insensitively."""

    contacts: Mapping[str, str]
    groups: Mapping[str, Sequence[str]]

    def resolve(self, to: str) -> tuple[Recipient, ...]:
        """All recipients named by one ``<to>`` word, each number once, in order given."""
        found: dict[str, Recipient] = {}
        for part in to.split(","):
            if not part:
                raise RecipientError(f"empty recipient in {to!r}")
            for recipient in self._resolve_one(part, seen_groups=()):
                found.setdefault(recipient.number, recipient)
        return tuple(found.values())

    def _resolve_one(self, word: str, seen_groups: tuple[str, ...]) -> list[Recipient]:
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
        raise RecipientError(f"unknown recipient {word!r}: not a number, contact or group")
