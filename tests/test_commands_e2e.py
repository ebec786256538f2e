"""Every command through the chat: the exact WhatsMate request and the reply the user saw."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import ADMIN, OTHER_CHAT, STRANGER, TEAM, USER, BotUnderTest, assert_call
from tests.fakes import BOT_USERNAME, photo_sizes


async def test_wa_sends_one_call_per_recipient_with_exact_body(bot: BotUnderTest) -> None:
    text = await bot.reply_text(
        "/wa alice,+44-7700.900123,alice line one\nline two", chat=TEAM, user=USER
    )
    first, second = bot.whatsmate.requests
    assert_call(
        first,
        "POST",
        "/v1/whatsapp/single/message/0",
        {"number": "4412345678", "message": "line one\nline two"},
    )
    assert_call(
        second,
        "POST",
        "/v1/whatsapp/single/message/0",
        {"number": "447700900123", "message": "line one\nline two"},
    )
    assert text == ("WhatsApp (instance 0): sent to 2 of 2\nalice: queued\n+44-7700.900123: queued")


async def test_wa_group_expands_to_members(bot: BotUnderTest) -> None:
    text = await bot.reply_text("/wa oncall page")
    assert [r.json()["number"] for r in bot.whatsmate.requests] == ["4412345678", "4411112222"]
    assert "alice: queued" in text
    assert "4411112222: queued" in text


@pytest.mark.parametrize(
    ("setting", "title", "path"),
    [
        ({"whatsapp_instance": 1}, "WhatsApp (instance 1)", "/v1/whatsapp/single/message/1"),
        ({"whatsapp_endpoint": "queue"}, "WhatsApp (queue)", "/v1/whatsapp/queue/message"),
    ],
)
async def test_wa_instance_one_and_deprecated_queue_endpoint(
    make_bot: BotUnderTest, setting: dict[str, object], title: str, path: str
) -> None:
    bot = await make_bot.start(whatsmate=setting)
    assert await bot.reply_text("/wa alice hi") == f"{title}\nalice: queued"
    assert_call(bot.whatsmate.requests[0], "POST", path, {"number": "4412345678", "message": "hi"})


async def test_tg_single_and_batch(bot: BotUnderTest) -> None:
    assert await bot.reply_text("/tg alice hello") == "Telegram\nalice: Message sent"
    assert_call(
        bot.whatsmate.requests[0],
        "POST",
        "/v1/telegram/single/message/0",
        {"number": "4412345678", "message": "hello"},
    )
    text = await bot.reply_text("/tg oncall,bob all hands")
    assert_call(
        bot.whatsmate.requests[1],
        "POST",
        "/v1/telegram/batch/message/0",
        {"numbers": ["4412345678", "4411112222", "447700900123"], "message": "all hands"},
    )
    assert text.splitlines() == [
        "Telegram: sent to 3 of 3",
        "alice: Message sent",
        "4411112222: Message sent",
        "bob: Message sent",
    ]


async def test_location_numbers_are_json_numbers(bot: BotUnderTest) -> None:
    await bot.say("/loc alice 51.5074 -0.1278")
    await bot.say("/loc oncall -33.8688 151.2093")
    single, batch = bot.whatsmate.requests
    assert_call(
        single,
        "POST",
        "/v1/telegram/single/location/0",
        {"number": "4412345678", "latitude": 51.5074, "longitude": -0.1278},
    )
    assert b'"latitude":51.5074' in single.body
    assert_call(
        batch,
        "POST",
        "/v1/telegram/batch/location/0",
        {"numbers": ["4412345678", "4411112222"], "latitude": -33.8688, "longitude": 151.2093},
    )


async def test_photo_as_caption_sends_largest_size_base64(bot: BotUnderTest) -> None:
    image = bytes(range(256)) * 40
    bot.telegram.add_file("big-photo", image)
    text = await bot.reply_text(
        "/photo alice rack 4 cabling", caption=True, photo=photo_sizes("big-photo", image)
    )
    assert text == "Photo photo.jpg\nalice: Message sent"
    (request,) = bot.whatsmate.requests
    assert_call(request, "POST", "/v1/telegram/single/photo/binary/0")
    body = request.json()
    assert body["number"] == "4412345678"
    assert body["caption"] == "rack 4 cabling"
    assert base64.b64decode(body["image"]) == image
    assert [c.body for c in bot.telegram.calls("/getFile$")] == [b"file_id=big-photo"]


async def test_photo_by_reply_to_many_uses_batch_without_caption(bot: BotUnderTest) -> None:
    image = b"\x89PNG fake"
    bot.telegram.add_file("p1", image)
    original = bot.telegram.message(
        "look", user=ADMIN, chat=TEAM, caption=True, photo=photo_sizes("p1", image)
    )
    await bot.say("/photo oncall", reply_to=original, chat=TEAM)
    (request,) = bot.whatsmate.requests
    assert_call(request, "POST", "/v1/telegram/batch/photo/binary/0")
    body = request.json()
    assert body["numbers"] == ["4412345678", "4411112222"]
    assert "caption" not in body
    assert base64.b64decode(body["image"]) == image


async def test_voice_note_reply_sends_audio_with_derived_filename(bot: BotUnderTest) -> None:
    voice = b"OggS voice bytes"
    bot.telegram.add_file("v1", voice)
    original = bot.telegram.message(
        "",
        user=ADMIN,
        chat=TEAM,
        caption=True,
        voice={"file_id": "v1", "file_unique_id": "v1", "duration": 3, "mime_type": "audio/ogg"},
    )
    text = await bot.reply_text("/audio alice", reply_to=original, chat=TEAM)
    (request,) = bot.whatsmate.requests
    assert_call(request, "POST", "/v1/telegram/single/audio/binary/0")
    assert request.json() == {
        "number": "4412345678",
        "filename": "voice.ogg",
        "audio": base64.b64encode(voice).decode(),
    }
    assert text == "Audio voice.ogg\nalice: Message sent"


async def test_audio_file_to_group_keeps_filename(bot: BotUnderTest) -> None:
    audio = b"ID3 mp3 bytes" * 100
    bot.telegram.add_file("a1", audio)
    await bot.say(
        "/audio oncall",
        caption=True,
        audio={
            "file_id": "a1",
            "file_unique_id": "a1",
            "duration": 9,
            "file_name": "alarm.mp3",
            "mime_type": "audio/mpeg",
        },
    )
    (request,) = bot.whatsmate.requests
    assert_call(request, "POST", "/v1/telegram/batch/audio/binary/0")
    body = request.json()
    assert body["filename"] == "alarm.mp3"
    assert base64.b64decode(body["audio"]) == audio


@pytest.mark.parametrize(("to", "path"), [("alice", "single"), ("oncall", "batch")])
async def test_document_keeps_filename_and_exact_bytes(
    bot: BotUnderTest, to: str, path: str
) -> None:
    document = bytes(range(256)) * 1001  # not a multiple of 3: exercises base64 padding
    bot.telegram.add_file("d1", document)
    await bot.say(
        f"/doc {to}",
        caption=True,
        document={
            "file_id": "d1",
            "file_unique_id": "d1",
            "file_name": "runbook.pdf",
            "mime_type": "application/pdf",
        },
    )
    (request,) = bot.whatsmate.requests
    assert_call(request, "POST", f"/v1/telegram/{path}/document/binary/0")
    body = request.json()
    assert body["filename"] == "runbook.pdf"
    assert base64.b64decode(body["document"]) == document
    assert int(request.headers["content-length"]) == len(request.body)


async def test_translate_text_and_reply(bot: BotUnderTest) -> None:
    assert await bot.reply_text("/translate en fr the server is down") == "[fr] the server is down"
    original = bot.telegram.message("guten Morgen", user=ADMIN, chat=TEAM)
    assert (
        await bot.reply_text("/translate de en", reply_to=original, chat=TEAM)
        == "[en] guten Morgen"
    )
    translations = bot.whatsmate.calls("/v1/translation/translate")
    assert_call(
        translations[0],
        "POST",
        "/v1/translation/translate",
        {"fromLang": "en", "toLang": "fr", "text": "the server is down"},
    )
    assert translations[1].json() == {"fromLang": "de", "toLang": "en", "text": "guten Morgen"}
    assert len(bot.whatsmate.calls("supported-codes")) == 1  # cached


async def test_langs_filter_and_cache(bot: BotUnderTest) -> None:
    assert await bot.reply_text("/langs FR") == "1 language code matching 'FR':\nfr — French"
    text = await bot.reply_text("/langs")
    assert text.startswith("4 language codes:")
    assert "de — German" in text
    assert await bot.reply_text("/langs klingon") == "No language code matches 'klingon'."
    (request,) = bot.whatsmate.requests
    assert_call(request, "GET", "/v1/translation/supported-codes")


async def test_language_codes_are_fetched_again_after_a_day(bot: BotUnderTest) -> None:
    await bot.reply_text("/langs fr")
    bot.clock.advance(23 * 3600)
    await bot.reply_text("/langs fr")
    assert len(bot.whatsmate.calls("supported-codes")) == 1
    bot.clock.advance(2 * 3600)
    assert await bot.reply_text("/langs fr") == "1 language code matching 'fr':\nfr — French"
    assert len(bot.whatsmate.calls("supported-codes")) == 2


async def test_status_calls_both_endpoints(bot: BotUnderTest) -> None:
    bot.whatsmate.telegram_status = "down"
    text = await bot.reply_text("/status", chat=TEAM, user=USER)
    assert text == "WhatsApp gateway: up\nTelegram gateway (instance 0): down"
    assert sorted(r.path for r in bot.whatsmate.requests) == [
        "/v1/gateway/status",
        "/v1/telegram/status/0",
    ]
    for request in bot.whatsmate.requests:
        assert_call(request, "GET", request.path)


async def test_help_whoami_and_bot_suffix(bot: BotUnderTest) -> None:
    admin_help = await bot.reply_text(f"/help@{BOT_USERNAME}")
    member_help = await bot.reply_text("/help", user=USER, chat=TEAM)
    assert "/schedule" in admin_help
    assert "/schedule" not in member_help
    assert "/wa <to> <message>" in member_help
    assert await bot.reply_text("/whoami", user=USER, chat=TEAM) == (
        f"You are {USER} (user) in chat {TEAM}."
    )
    assert bot.whatsmate.requests == []


async def test_command_for_another_bot_is_ignored(bot: BotUnderTest) -> None:
    bot.telegram.message("/wa@SomeOtherBot alice hi", user=ADMIN, chat=TEAM)
    await bot.say("/whoami", chat=TEAM)
    await bot.stop()
    assert len(bot.telegram.replies(TEAM)) == 1
    assert bot.whatsmate.requests == []


async def test_command_menu_is_registered_from_the_table(bot: BotUnderTest) -> None:
    default = next(c for c in bot.telegram.commands if "scope" not in c)
    names = [entry["command"] for entry in default["commands"]]
    assert names[:3] == ["wa", "tg", "loc"]
    assert "schedule" not in names
    admin = next(c for c in bot.telegram.commands if "scope" in c)
    assert admin["scope"] == {"type": "chat", "chat_id": ADMIN}
    assert "schedule" in [entry["command"] for entry in admin["commands"]]


BAD_INPUT = [
    ("/wa", "Usage: /wa <to> <message>"),
    ("/wa alice", "Usage: /wa <to> <message>"),
    ("/wa     ", "Usage: /wa <to> <message>"),
    ("/tg abc-def hi", "Not sent: unknown recipient 'abc-def'"),
    ("/wa 123 hi", "Not sent: '123' is not a phone number"),
    ("/wa 1234567890123456 hi", "Not sent: '1234567890123456' is not a phone number"),
    ("/wa 44🙂12345678 hi", "Not sent: unknown recipient '44🙂12345678'"),
    ("/wa alice,,bob hi", "Not sent: empty recipient"),
    ("/loc alice 91 0", "Usage: /loc <to> <latitude> <longitude>\nLatitude must be between"),
    ("/loc alice 0 181", "Usage: /loc <to> <latitude> <longitude>\nLongitude must be between"),
    ("/loc alice north 0", "Usage: /loc <to> <latitude> <longitude>\nLatitude 'north' is not"),
    ("/loc alice nan 0", "Usage: /loc <to> <latitude> <longitude>\nLatitude must be between"),
    ("/loc alice 1", "Usage: /loc <to> <latitude> <longitude>"),
    ("/photo alice", "Usage: /photo <to> [caption]\nSend a photo with the command"),
    ("/audio alice", "Usage: /audio <to> [caption]\nSend an audio file"),
    ("/doc alice", "Usage: /doc <to> [caption]\nSend a document"),
    ("/doc", "Usage: /doc <to> [caption]"),
    ("/translate en", "Usage: /translate <from> <to> <text>"),
    ("/translate english fr hi", "Usage: /translate <from> <to> <text>\n'english' is not a"),
    ("/history 0", "Usage: /history [n]"),
    ("/history x", "Usage: /history [n]"),
    ("/status now", "Usage: /status"),
    ("/frobnicate", "Usage: /help lists the commands you may use (unknown command /frobnicate)."),
    ("/", "Usage: /help lists the commands you may use"),
    ("/wa/tg alice hi", "Usage: /help lists the commands you may use"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_INPUT)
async def test_bad_input_gets_usage_or_one_line_error_and_no_call(
    bot: BotUnderTest, text: str, expected: str
) -> None:
    reply = await bot.reply_text(text)
    assert reply.startswith(expected)
    assert bot.whatsmate.sends() == []


async def test_unknown_language_code_is_refused_before_translating(bot: BotUnderTest) -> None:
    reply = await bot.reply_text("/translate en xx hello")
    assert (
        reply
        == "Usage: /translate <from> <to> <text>\nUnknown language code 'xx'; /langs lists them."
    )
    assert bot.whatsmate.calls("/translate") == []


STRANGER_CASES = [
    (STRANGER, STRANGER),  # a stranger, privately
    (STRANGER, TEAM),  # a stranger in the team chat
    (USER, USER),  # a user in a private chat
    (USER, OTHER_CHAT),  # a user in a chat that is not a team chat
]


@pytest.mark.parametrize(("user", "chat"), STRANGER_CASES)
@pytest.mark.parametrize("text", ["/help", "/wa alice hi", "/status", "/wa", "/nonsense"])
async def test_not_allowed_gets_one_refusal_and_no_call(
    bot: BotUnderTest, user: int, chat: int, text: str
) -> None:
    assert await bot.reply_text(text, user=user, chat=chat) == (
        "Sorry, you are not allowed to use this bot here."
    )
    await bot.stop()
    assert len(bot.telegram.replies(chat)) == 1
    assert bot.whatsmate.requests == []


async def test_user_cannot_manage_schedules(bot: BotUnderTest) -> None:
    reply = await bot.reply_text("/schedule list", user=USER, chat=TEAM)
    assert reply == "Sorry, you are not allowed to use this bot here."
