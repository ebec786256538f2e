"""The parser and the recipient rules as pure functions, including a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import commands as c
from bot.errors import RecipientError, UsageError
from bot.recipients import AddressBook, clean_number, mask
from bot.replies import split_text
from bot.vocabulary import Channel

BOOK = AddressBook({"alice": "4412345678"}, {"oncall": ("alice", "4411112222")})


@given(st.text(max_size=300))
@settings(max_examples=400, deadline=None)
def test_any_text_is_a_command_or_a_usage_error(text: str) -> None:
    try:
        parsed = c.parse(text)
    except UsageError as exc:
        assert exc.usage.startswith("Usage:")
    else:
        assert parsed.spec.name in c.SPECS


@given(st.sampled_from([s.name for s in c.COMMANDS]), st.text(max_size=200))
@settings(max_examples=400, deadline=None)
def test_known_commands_with_any_arguments(name: str, rest: str) -> None:
    try:
        c.parse(f"/{name} {rest}", reply_text=rest)
    except UsageError as exc:
        assert str(exc).startswith(f"Usage: /{name}") or name == "schedule"


@given(st.text(max_size=40))
def test_any_recipient_word_resolves_or_raises_recipient_error(word: str) -> None:
    try:
        recipients = BOOK.resolve(word)
    except RecipientError:
        return
    assert all(5 <= len(r.number) <= 15 and r.number.isdigit() for r in recipients)


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("4412345678", "4412345678"),
        ("+44-1234.5678", "4412345678"),
        ("12345", "12345"),
        ("123456789012345", "123456789012345"),
        ("1234", None),
        ("1234567890123456", None),
        ("+-123456", None),
        ("12345-", None),
        ("١٢٣٤٥٦", None),
        ("44 12345", None),
    ],
)
def test_clean_number(text: str, digits: str | None) -> None:
    assert clean_number(text) == digits


def test_resolve_dedupes_and_keeps_the_written_name() -> None:
    recipients = BOOK.resolve("ALICE,oncall,4412345678")
    assert [(r.written, r.number) for r in recipients] == [
        ("ALICE", "4412345678"),
        ("4411112222", "4411112222"),
    ]


def test_mask() -> None:
    assert mask("4412345678") == "44•••678"
    assert mask("12345") == "•••••"


def test_message_keeps_newlines_and_inner_spacing() -> None:
    parsed = c.parse("/wa   alice   first  line\n  second\n\nthird  ")
    assert parsed.command == c.SendText(Channel.WHATSAPP, "alice", "first  line\n  second\n\nthird")


def test_translate_uses_the_replied_text_only_when_none_is_given() -> None:
    assert c.parse("/translate en fr", reply_text="hello").command == c.Translate(
        "en", "fr", "hello"
    )
    assert c.parse("/translate en fr hi", reply_text="hello").command == c.Translate(
        "en", "fr", "hi"
    )


def test_help_lines_follow_the_table() -> None:
    assert len(c.help_lines(c.Access.ADMIN)) == len(c.COMMANDS)
    assert all("/schedule" not in line for line in c.help_lines(c.Access.MEMBER))


@given(st.text(alphabet=st.sampled_from("ab\n"), max_size=30), st.integers(3, 8))
def test_split_text_never_loses_or_exceeds(text: str, limit: int) -> None:
    chunks = split_text(text, limit)
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    assert "".join(chunks).replace("\n", "") == (text or " ").replace("\n", "")


def test_split_text_breaks_on_lines() -> None:
    text = "\n".join(f"line {i:04d}" for i in range(1000))
    chunks = split_text(text)
    assert all(len(chunk) <= 4096 for chunk in chunks)
    assert "\n".join(chunks) == text
