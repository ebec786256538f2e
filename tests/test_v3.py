"""WhatsMate API v3 through the chat: every row of SPEC.md's v3 table, limits, job ids,
error bodies, and PDF to text (both versions). The fake WhatsMate refuses any v3 body
that breaks the documented field rules, so a test cannot pass on a body WhatsMate
would refuse."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bot.gateway import clean_filename
from tests.conftest import ADMIN, TEAM, USER, BotUnderTest, assert_call
from tests.fakes import HANG, answer, photo_sizes

V3 = {
    "whatsmate": {"api_version": 3, "whatsapp_instance": 7, "telegram_instance": 7},
    "whatsapp_groups": {"ops-room": {"name": "Ops Room", "admin": "+44 1234-5678"}},
    "telegram_groups": {"ops-tg": {"name": "Ops", "admin": "4412345678"}},
}
WA, TG = "/v3/whatsapp", "/v3/telegram"
IMAGE = bytes(range(256)) * 30
DOC = b"%PDF-1.4 runbook" * 100


@pytest.fixture
async def v3(make_bot: BotUnderTest) -> BotUnderTest:
    return await make_bot.start(**V3)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo(bot: BotUnderTest, data: bytes = IMAGE) -> dict[str, Any]:
    bot.telegram.add_file("p1", data)
    return {"photo": photo_sizes("p1", data)}


def document(bot: BotUnderTest, name: str = "runbook.pdf", data: bytes = DOC) -> dict[str, Any]:
    bot.telegram.add_file("d1", data)
    meta = {"file_id": "d1", "file_unique_id": "d1", "file_name": name, "file_size": len(data)}
    return {"document": {**meta, "mime_type": "application/pdf"}}


def voice(bot: BotUnderTest, data: bytes = b"OggS voice") -> dict[str, Any]:
    bot.telegram.add_file("v1", data)
    meta = {"file_id": "v1", "file_unique_id": "v1", "duration": 2, "file_size": len(data)}
    return {"voice": {**meta, "mime_type": "audio/ogg"}}


def audio(bot: BotUnderTest, data: bytes = b"ID3 alarm") -> dict[str, Any]:
    bot.telegram.add_file("a1", data)
    meta = {"file_id": "a1", "file_unique_id": "a1", "duration": 9, "file_size": len(data)}
    return {"audio": {**meta, "file_name": "alarm.mp3", "mime_type": "audio/mpeg"}}


async def test_wa_text_single_and_group_show_the_job_id(v3: BotUnderTest) -> None:
    text = await v3.reply_text("/wa alice,ops-room db-1 is down", chat=TEAM, user=USER)
    single, group = v3.whatsmate.requests
    assert_call(
        single,
        "POST",
        f"{WA}/single/text/message/7",
        {"number": "4412345678", "message": "db-1 is down"},
    )
    assert_call(
        group,
        "POST",
        f"{WA}/group/text/message/7",
        {"group_name": "Ops Room", "group_admin": "4412345678", "message": "db-1 is down"},
    )
    first, second = v3.whatsmate.job_ids
    assert text == (
        "WhatsApp (instance 7): sent to 2 of 2\n"
        f"alice: queued (job {first})\nops-room: queued (job {second})"
    )


async def test_wa_url_single_and_group(v3: BotUnderTest) -> None:
    url = "https://status.example.com/incidents/42"
    text = await v3.reply_text(f"/wa alice,ops-room {url}")
    single, group = v3.whatsmate.requests
    assert_call(single, "POST", f"{WA}/single/url/message/7", {"number": "4412345678", "url": url})
    assert_call(
        group,
        "POST",
        f"{WA}/group/url/message/7",
        {"group_name": "Ops Room", "group_admin": "4412345678", "url": url},
    )
    assert text.startswith("WhatsApp link (instance 7): sent to 2 of 2")


async def test_wa_photo_with_caption_and_to_a_group(v3: BotUnderTest) -> None:
    text = await v3.reply_text("/wa alice rack 4", caption=True, **photo(v3))
    assert_call(
        v3.whatsmate.requests[0],
        "POST",
        f"{WA}/single/image/message/7",
        {"number": "4412345678", "image": b64(IMAGE), "caption": "rack 4"},
    )
    assert text.startswith("WhatsApp photo photo.jpg\nalice: queued (job ")
    original = v3.telegram.message("", user=ADMIN, chat=TEAM, caption=True, **photo(v3))
    await v3.say("/wa ops-room", reply_to=original, chat=TEAM)
    assert_call(
        v3.whatsmate.requests[1],
        "POST",
        f"{WA}/group/image/message/7",
        {"group_name": "Ops Room", "image": b64(IMAGE)},
    )


@pytest.mark.parametrize(
    ("media", "filename"), [(document, "runbook.pdf"), (voice, "voice.ogg"), (audio, "alarm.mp3")]
)
async def test_wa_document_and_voice_note_go_as_documents(
    v3: BotUnderTest, media: Any, filename: str
) -> None:
    fields = media(v3)
    data = v3.telegram.files[next(iter(v3.telegram.files))]
    original = v3.telegram.message("", user=ADMIN, chat=TEAM, caption=True, **fields)
    await v3.say("/wa alice,ops-room see this", reply_to=original, chat=TEAM)
    single, group = v3.whatsmate.requests
    assert_call(
        single,
        "POST",
        f"{WA}/single/document/message/7",
        {
            "number": "4412345678",
            "document": b64(data),
            "filename": filename,
            "caption": "see this",
        },
    )
    assert_call(
        group,
        "POST",
        f"{WA}/group/document/message/7",
        {
            "group_name": "Ops Room",
            "document": b64(data),
            "filename": filename,
            "caption": "see this",
        },
    )


@pytest.mark.parametrize("version", [{}, V3])
async def test_wa_replying_to_a_text_forwards_it(make_bot: BotUnderTest, version: Any) -> None:
    bot = await make_bot.start(**version)
    original = bot.telegram.message("db-1 is back", user=USER, chat=TEAM)
    await bot.say("/wa alice", reply_to=original, chat=TEAM)
    (request,) = bot.whatsmate.requests
    assert request.json() == {"number": "4412345678", "message": "db-1 is back"}


async def test_tg_text_single_group_and_one_call_per_number(v3: BotUnderTest) -> None:
    text = await v3.reply_text("/tg alice,bob,ops-tg deploy done")
    first, second, group = v3.whatsmate.requests
    assert_call(
        first,
        "POST",
        f"{TG}/single/text/message/7",
        {"number": "4412345678", "message": "deploy done"},
    )
    assert second.json() == {"number": "447700900123", "message": "deploy done"}
    assert_call(
        group,
        "POST",
        f"{TG}/group/text/message/7",
        {"group_name": "Ops", "group_admin": "4412345678", "message": "deploy done"},
    )
    assert text.splitlines()[0] == "Telegram: sent to 3 of 3"


async def test_tg_photo_document_audio_and_voice_note(v3: BotUnderTest) -> None:
    await v3.say("/photo ops-tg rack", caption=True, **photo(v3))
    await v3.say("/doc alice the runbook", caption=True, **document(v3))
    await v3.say("/audio alice", caption=True, **audio(v3))
    await v3.say("/audio alice listen", caption=True, **voice(v3))
    image, doc, mp3, note = v3.whatsmate.requests
    assert_call(
        image,
        "POST",
        f"{TG}/group/image/message/7",
        {"group_name": "Ops", "group_admin": "4412345678", "image": b64(IMAGE), "caption": "rack"},
    )
    assert_call(
        doc,
        "POST",
        f"{TG}/single/document/message/7",
        {
            "number": "4412345678",
            "document": b64(DOC),
            "filename": "runbook.pdf",
            "caption": "the runbook",
        },
    )
    assert_call(
        mp3,
        "POST",
        f"{TG}/single/audio/message/7",
        {"number": "4412345678", "audio": b64(b"ID3 alarm"), "filename": "alarm.mp3"},
    )
    assert_call(
        note,
        "POST",
        f"{TG}/single/voice_note/message/7",
        {
            "number": "4412345678",
            "voice_note": b64(b"OggS voice"),
            "filename": "voice.ogg",
            "caption": "listen",
        },
    )


async def test_loc_goes_as_a_text_with_a_map_link(v3: BotUnderTest) -> None:
    text = await v3.reply_text("/loc alice 51.5074 -0.1278")
    (request,) = v3.whatsmate.requests
    assert_call(
        request,
        "POST",
        f"{TG}/single/text/message/7",
        {
            "number": "4412345678",
            "message": "Location: 51.5074, -0.1278\nhttps://maps.google.com/?q=51.5074,-0.1278",
        },
    )
    assert text.startswith(
        "Location 51.5074, -0.1278 (sent as text: API v3 has no location endpoint)\nalice: queued"
    )


async def test_status_reads_not_offered_for_a_404(v3: BotUnderTest) -> None:
    v3.whatsmate.status_offered = False
    text = await v3.reply_text("/status")
    assert text == "WhatsApp gateway: not offered\nTelegram gateway (instance 7): not offered"
    assert sorted(r.path for r in v3.whatsmate.requests) == [
        "/v1/gateway/status",
        "/v1/telegram/status/7",
    ]


async def test_translate_and_langs_unchanged_under_v3(v3: BotUnderTest) -> None:
    assert await v3.reply_text("/translate en fr hello") == "[fr] hello"
    assert (await v3.reply_text("/langs fr")).startswith("1 language code")


async def test_job_id_is_in_the_audit_and_history(v3: BotUnderTest) -> None:
    await v3.say("/wa alice hi")
    (job,) = v3.whatsmate.job_ids
    history = await v3.reply_text("/history 1")
    assert history.endswith(f"/wa · → 44•••678 · ok · queued · job {job[:12]}")
    assert v3.runtime is not None
    entries = await v3.runtime.audit.recent(5)
    assert job in {j for e in entries for j in e.job_ids}


@pytest.mark.parametrize(
    ("status", "words", "expected"),
    [
        (400, "number is invalid", "failed — HTTP 400: number is invalid"),
        (401, "bad credentials", "failed — credentials refused (HTTP 401: bad credentials)"),
        (444, "trial quota used", "failed — plan or quota limit (HTTP 444: trial quota used)"),
        (469, "quota exceeded", "failed — plan or quota limit (HTTP 469: quota exceeded)"),
    ],
)
async def test_error_message_bodies_are_carried_into_the_reply(
    v3: BotUnderTest, status: int, words: str, expected: str
) -> None:
    v3.whatsmate.fail("/v3/", answer(status, {"error_message": words}))
    assert await v3.reply_text("/wa alice hi") == f"WhatsApp (instance 7)\nalice: {expected}"


# -- limits: over by one is refused with "Not sent:", and nothing is called -------------

LIMITS = [
    ("/wa alice " + "x" * 901, "the message is 901 characters; WhatsMate takes at most 900"),
    ("/wa alice https://e.example/" + "x" * 883, "the link is 901 characters"),
    ("/tg alice " + "x" * 901, "the message is 901 characters"),
    ("/translate en fr " + "x" * 3501, "the text is 3501 characters; WhatsMate translates at most"),
]


@pytest.mark.parametrize(("text", "reason"), LIMITS)
async def test_text_limits(v3: BotUnderTest, text: str, reason: str) -> None:
    reply = await v3.reply_text(text)
    assert reply.startswith(f"Not sent: {reason}")
    assert v3.whatsmate.requests == []


async def test_at_the_limit_is_sent(v3: BotUnderTest) -> None:
    await v3.say("/wa alice " + "x" * 900)
    await v3.say("/photo alice " + "c" * 250, caption=True, **photo(v3))
    assert len(v3.whatsmate.sends()) == 2


async def test_caption_limit(v3: BotUnderTest) -> None:
    reply = await v3.reply_text("/photo alice " + "c" * 251, caption=True, **photo(v3))
    assert reply == "Not sent: the caption is 251 characters; WhatsMate takes at most 250."
    assert v3.whatsmate.requests == []
    assert v3.telegram.calls("/getFile$") == []


@pytest.mark.parametrize(
    ("command", "kind", "limit_mb"),
    [("/photo", "photo", 6), ("/doc", "document", 9), ("/audio", "voice", 3)],
)
async def test_a_file_telegram_reports_too_big_is_not_downloaded(
    v3: BotUnderTest, command: str, kind: str, limit_mb: int
) -> None:
    size = limit_mb * 1_000_000 * 3 // 4 + 1  # one byte more than fits once base64-encoded
    fields: dict[str, Any] = {
        "photo": {"photo": [{"file_id": "big", "file_unique_id": "b", "width": 9000,
                             "height": 9000, "file_size": size}]},
        "document": {"document": {"file_id": "big", "file_unique_id": "b", "file_size": size,
                                  "file_name": "huge.pdf"}},
        "voice": {"voice": {"file_id": "big", "file_unique_id": "b", "duration": 600,
                            "file_size": size}},
    }[kind]  # fmt: skip
    reply = await v3.reply_text(f"{command} alice", caption=True, **fields)
    assert reply.startswith("Not sent: the ")
    assert f"WhatsMate takes at most {limit_mb}.0 MB" in reply
    assert v3.telegram.calls("/getFile$") == []
    assert v3.whatsmate.requests == []


async def test_file_names_are_cleaned_and_the_reply_shows_them(v3: BotUnderTest) -> None:
    name = "Bericht März (final)!" + "x" * 90 + ".pdf"
    cleaned = clean_filename(name, 80)
    assert cleaned.endswith(".pdf") and len(cleaned) == 80
    assert cleaned.startswith("Bericht Marz _final__x")
    text = await v3.reply_text("/doc alice", caption=True, **document(v3, name))
    assert v3.whatsmate.requests[0].json()["filename"] == cleaned
    assert text.startswith(f"Document {cleaned}\nalice: queued")


async def test_under_v1_whatsapp_media_needs_v3(bot: BotUnderTest) -> None:
    reply = await bot.reply_text("/wa alice", caption=True, **photo(bot))
    assert reply.startswith("Not sent: WhatsMate API v1 sends no WhatsApp images")
    assert "whatsmate.api_version: 3" in reply
    assert bot.whatsmate.requests == []
    assert bot.telegram.calls("/getFile$") == []


async def test_under_v1_a_caption_on_a_document_needs_v3(bot: BotUnderTest) -> None:
    reply = await bot.reply_text("/doc alice see page 2", caption=True, **document(bot))
    assert reply == (
        "Not sent: WhatsMate API v1 takes no caption on /v1/telegram/single/document/binary/…; "
        "that needs whatsmate.api_version: 3."
    )
    assert bot.whatsmate.requests == []


async def test_under_v1_translation_limit_holds_too(bot: BotUnderTest) -> None:
    reply = await bot.reply_text("/translate en fr " + "x" * 3501)
    assert reply.startswith("Not sent: the text is 3501 characters")
    assert bot.whatsmate.requests == []


# -- PDF to text ------------------------------------------------------------------------

PDF_URL = "https://docs.example.com/runbook.pdf"


@pytest.mark.parametrize("version", [{}, V3])
async def test_pdf_submit_check_until_completed_then_text(
    make_bot: BotUnderTest, version: Any
) -> None:
    bot = await make_bot.start(**version)
    bot.whatsmate.pdf_statuses.extend(["Processing", "Processing"])
    text = await bot.reply_text(f"/pdf {PDF_URL}", chat=TEAM, user=USER)
    assert text == "Page 1: all systems nominal."
    (job,) = bot.whatsmate.job_ids
    assert [(r.method, r.path) for r in bot.whatsmate.requests] == [
        ("GET", f"/v1/pdf/job/submit?url={PDF_URL}"),
        ("GET", f"/v1/pdf/job/check/{job}"),
        ("GET", f"/v1/pdf/job/check/{job}"),
        ("GET", f"/v1/pdf/job/check/{job}"),
        ("GET", f"/v1/pdf/job/retrieve_text/{job}"),
    ]
    for request in bot.whatsmate.requests:
        assert_call(request, "GET", request.path)


async def test_a_long_pdf_text_comes_back_as_a_txt_document(v3: BotUnderTest) -> None:
    v3.whatsmate.pdf_text = "\n".join(f"line {n:05d} of the report" for n in range(800))
    v3.telegram.message(f"/pdf {PDF_URL}", user=ADMIN)
    await v3.telegram.wait_for(lambda: any(s.method == "sendDocument" for s in v3.telegram.sent))
    (sent,) = [s for s in v3.telegram.sent if s.method == "sendDocument"]
    (job,) = v3.whatsmate.job_ids
    assert sent.params["document"] == v3.whatsmate.pdf_text.encode()
    assert sent.params["document_filename"] == f"pdf-{job}.txt"
    assert sent.text.startswith(f"PDF job {job}: {len(v3.whatsmate.pdf_text)} characters")
    assert v3.telegram.replies(ADMIN) == []


async def test_pdf_submit_that_times_out_is_not_retried(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start(whatsmate={"timeout_s": 0.3})
    bot.whatsmate.fail("/pdf/job/submit", HANG)
    text = await bot.reply_text(f"/pdf {PDF_URL}")
    assert text.startswith("WhatsMate outcome unknown — no answer in time (ReadTimeout)")
    assert len(bot.whatsmate.calls("/pdf/")) == 1


async def test_pdf_gives_up_naming_the_job(make_bot: BotUnderTest) -> None:
    make_bot.pdf_polling = type(make_bot.pdf_polling)(every_s=0.01, give_up_s=0.2)
    bot = await make_bot.start()
    bot.whatsmate.pdf_statuses.extend(["Processing"] * 1000)
    text = await bot.reply_text(f"/pdf {PDF_URL}")
    (job,) = bot.whatsmate.job_ids
    assert text == (
        f"PDF job {job} is still Processing after 0.2 s; no text to show. "
        f"Ask WhatsMate about job {job}."
    )
    assert bot.whatsmate.calls("retrieve_text") == []


@pytest.mark.parametrize("url", ["telegram-file", "not a url", "ftp://x.example/a.pdf"])
async def test_pdf_refuses_telegram_file_urls_and_non_http(bot: BotUnderTest, url: str) -> None:
    if url == "telegram-file":
        url = f"{bot.telegram.base_file_url}{bot.telegram.token}/documents/d1"
    reply = await bot.reply_text(f"/pdf {url}")
    assert reply.startswith(("Not sent: that is a Telegram file address", "Usage: /pdf <url>"))
    assert bot.whatsmate.requests == []
    assert bot.telegram.token not in reply


# -- a size cap on every download -------------------------------------------------------


async def test_a_file_whose_size_telegram_omits_stops_at_the_limit(v3: BotUnderTest) -> None:
    """No size in the message or from getFile, and no Content-Length: the bot counts."""
    v3.telegram.add_file("p9", b"\xff" * 5_000_000, sized=False)
    photo_without_size = {"photo": [{"file_id": "p9", "file_unique_id": "p9", "width": 1280,
                                     "height": 960}]}  # fmt: skip
    reply = await v3.reply_text("/photo alice", caption=True, **photo_without_size)
    assert reply == (
        "Not sent: the image is over 4.5 MB; WhatsMate takes at most 6.0 MB once base64-encoded."
    )
    assert v3.whatsmate.requests == []


async def test_under_v1_a_download_stops_at_telegrams_20_mb(bot: BotUnderTest) -> None:
    over = "Not sent: the file is over 20 MB, the most the bot downloads (Telegram's bot limit)."
    bot.telegram.add_file("d9", b"%PDF" * (21 * 1024 * 1024 // 4), sized=False)
    unsized = {"file_id": "d9", "file_unique_id": "d9", "file_name": "huge.pdf"}
    assert await bot.reply_text("/doc alice", caption=True, document=unsized) == over
    reported = {**unsized, "file_id": "d8", "file_size": 25_000_000}
    assert await bot.reply_text("/doc alice", caption=True, document=reported) == over
    assert [r.body for r in bot.telegram.calls("/getFile$")] == [b"file_id=d9"]
    assert bot.whatsmate.requests == []


async def test_an_answer_over_the_cap_is_not_read_whole(v3: BotUnderTest) -> None:
    v3.whatsmate.pdf_text = "x" * 11_000_000
    text = await v3.reply_text(f"/pdf {PDF_URL}", chat=TEAM, user=USER)
    job = v3.whatsmate.job_ids[0]
    assert text == (
        f"WhatsMate failed — unexpected answer (HTTP 200: an answer over 10.0 MB) (PDF job {job})"
    )
