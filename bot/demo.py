"""``python -m bot demo``: the whole bot in a terminal, with no credentials and no network.

A console chat stands in for Telegram (you are the admin), the in-process ``Sandbox``
stands in for WhatsMate, and everything else — parser, service, gateway client, audit —
is the real code. Commands come from stdin, one a line, so it can be piped.
``/simulate-reply <to> <text>`` (demo only) plays WhatsMate Enterprise delivering an
answer from ``<to>``, so the two-way bridge can be seen without an Enterprise account.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from bot.bridge import Bridge
from bot.config import Config, parse_config
from bot.errors import InboundRejected, RecipientError
from bot.runtime import open_runtime
from bot.sandbox import Sandbox
from bot.service import Request
from bot.vocabulary import Channel

DEMO_ADMIN = 1001
DEMO_CHAT = -100500


def demo_config(audit_path: Path, api_version: int = 1) -> Config:
    v3 = {
        "whatsapp_groups": {"ops-room": {"name": "Ops Room", "admin": "4412345678"}},
        "telegram_groups": {"ops-tg": {"name": "Ops", "admin": "4412345678"}},
    }
    return parse_config(
        {
            "telegram": {"token": "demo-token-not-used"},
            "whatsmate": {
                "base_url": "https://sandbox.whatsmate.invalid",
                "client_id": "demo",
                "client_secret": "demo-secret",
                "api_version": api_version,
                **({"whatsapp_instance": 1, "telegram_instance": 1} if api_version == 3 else {}),
            },
            **(v3 if api_version == 3 else {}),
            "access": {"admins": [DEMO_ADMIN], "users": [1002], "chats": [DEMO_CHAT]},
            "contacts": {
                "alice": "4412345678",
                "bob": "+44 7700-900123".replace(" ", ""),
                "carol": "4915112345678",
            },
            "groups": {
                "oncall": ["alice", "4411112222"],
                "everyone": ["alice", "bob", "carol", "4411112222"],
            },
            "audit": {"path": str(audit_path)},
            "confirm_over": 3,
            "log": {"format": "console", "level": "warning"},
        },
        {},
    )


SIMULATE = "/simulate-reply"
DEMO_SECRET = "demo-inbound-secret"


async def run_demo(
    stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, api_version: int = 1
) -> int:
    interactive = stdin.isatty()
    sandbox = Sandbox()

    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    async def post(chat_id: int, text: str, reply_to: int | None) -> int:
        where = f"under your message #{reply_to}" if reply_to else f"in chat {chat_id}"
        say("\n".join(f"bot (post {where})> {row}" for row in text.splitlines()))
        return 0

    with tempfile.TemporaryDirectory(prefix="whatsmate-demo-") as folder:
        config = demo_config(Path(folder) / "audit.sqlite3", api_version)
        async with open_runtime(config, transport=sandbox.transport()) as runtime:
            bridge = Bridge(
                runtime.storage,
                runtime.audit,
                secret=DEMO_SECRET,
                default_chat=DEMO_CHAT,
                address_book=config.address_book,
                clock=runtime.clock,
            )
            groups = "; gateway groups: ops-room (/wa), ops-tg (/tg)" if api_version == 3 else ""
            say(
                f"whatsmate-bot demo: you are admin 1001 in a console chat; WhatsMate is a "
                f"sandbox answering like API v{api_version}.\nContacts: alice, bob, carol; "
                f"groups: oncall, everyone{groups}. Try /help, then /wa alice hi and "
                f"{SIMULATE} alice on my way (demo only: alice answers on WhatsApp)."
            )
            pending: str | None = None
            for number, line in enumerate(_lines(stdin, stdout, interactive), start=1):
                text = line.rstrip("\n")
                if not text.strip():
                    continue
                seen = len(sandbox.received)
                if not interactive:
                    say(f"you> {text}  (message #{number})")
                if text.startswith(SIMULATE):
                    await _simulate_reply(bridge, config, text[len(SIMULATE) :], say)
                    await bridge.post_all(post)
                    continue
                if pending is not None:
                    result = await runtime.service.press(
                        pending, DEMO_ADMIN, text.strip().lower() in {"send", "y", "yes"}
                    )
                    pending = None
                    reply_text = result.reply.text if result.reply else result.toast
                else:
                    request = Request(DEMO_ADMIN, DEMO_ADMIN, True, text, message_id=number)
                    reply = await runtime.service.handle(request)
                    reply_text = reply.text
                    if reply.confirm:
                        pending = reply.confirm
                        reply_text += "\n[Send] [Cancel] — type send or cancel"
                say("\n".join(f"bot> {row}" for row in reply_text.splitlines()))
                for method, path, body in sandbox.received[seen:]:
                    shown = f" {json.dumps(body, ensure_ascii=False)}" if body else ""
                    say(f"  [sandbox got {method} {path}{shown}]")
    return 0


def _lines(stdin: TextIO, stdout: TextIO, interactive: bool) -> Iterator[str]:
    """Lines typed (after a ``you>`` prompt on a terminal) or piped in."""
    while True:
        if interactive:
            print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            return
        yield line


async def _simulate_reply(
    bridge: Bridge, config: Config, rest: str, say: Callable[[str], None]
) -> None:
    """What WhatsMate Enterprise would POST when ``<to>`` answers on WhatsApp."""
    to, _, message = rest.strip().partition(" ")
    try:
        (recipient, *_) = config.address_book.resolve(to)
        body = {"number": recipient.number, "message": message}
        await bridge.accept(Channel.WHATSAPP, json.dumps(body).encode())
    except (RecipientError, InboundRejected, ValueError):
        say(f"bot> Usage: {SIMULATE} <contact or number> <message>")
        return
    say(f"  [WhatsMate POSTs /inbound/whatsapp/<secret> {json.dumps(body)}]")
