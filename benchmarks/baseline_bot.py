"""The textbook python-telegram-bot v22 bot the benchmarks compare against.

A CommandHandler per command, default settings, httpx calls inside the handlers (one
module-level client, as the httpx docs advise). ``--concurrent`` is the same bot with
``concurrent_updates(True)``. Configured from the environment by the benchmark runner.
"""

from __future__ import annotations

import base64
import os
import sys

import httpx
from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

WHATSMATE = os.environ["BENCH_WHATSMATE_URL"]
HEADERS = {"X-WM-CLIENT-ID": "ops@example.com", "X-WM-CLIENT-SECRET": "s3cr3t-wm"}
client = httpx.AsyncClient(headers=HEADERS, timeout=15)


async def wa(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/wa <number>[,<number>...] <message>``: one POST per number, one after the other."""
    assert update.message is not None
    assert context.args
    numbers, message = context.args[0].split(","), " ".join(context.args[1:])
    statuses = []
    for number in numbers:
        response = await client.post(
            f"{WHATSMATE}/v1/whatsapp/single/message/0", json={"number": number, "message": message}
        )
        statuses.append(f"{number}: {response.json()['status']}")
    summary = f"sent to {len(statuses)} of {len(numbers)}\n" if len(numbers) > 1 else ""
    await update.message.reply_text(summary + "\n".join(statuses[:20]))


async def doc(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/doc <number>`` as the caption of a document."""
    message = update.message
    assert message is not None
    assert message.document is not None
    number = (message.caption or "").split()[1]
    telegram_file = await message.document.get_file()
    data = await telegram_file.download_as_bytearray()
    payload = {
        "number": number,
        "filename": message.document.file_name,
        "document": base64.b64encode(data).decode(),
    }
    response = await client.post(f"{WHATSMATE}/v1/telegram/single/document/binary/0", json=payload)
    await message.reply_text(f"{number}: {response.json()['status']}")


def main() -> None:
    builder = Application.builder().token(os.environ["BENCH_TOKEN"])
    builder = builder.base_url(os.environ["BENCH_TELEGRAM_URL"] + "/bot")
    builder = builder.base_file_url(os.environ["BENCH_TELEGRAM_URL"] + "/file/bot")
    if "--concurrent" in sys.argv:
        builder = builder.concurrent_updates(True)
    app = builder.build()
    app.add_handler(CommandHandler("wa", wa))
    app.add_handler(MessageHandler(filters.CaptionRegex(r"^/doc") & filters.Document.ALL, doc))
    app.run_polling()


if __name__ == "__main__":
    main()
