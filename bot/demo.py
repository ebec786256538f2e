"""``python -m bot demo``: the whole bot in a terminal, with no credentials and no network.

A console chat stands in for Telegram (you are the admin), the in-process ``Sandbox``
stands in for WhatsMate, and everything else — parser, service, gateway client, audit —
is the real code. Commands come from stdin, one a line, so it can be piped.
``/simulate-reply <to> <text>`` (demo only) plays WhatsMate Enterprise delivering an
answer from ``<to>``, so the two-way bridge can be seen without an Enterprise account;
``/simulate-alert`` plays Alertmanager posting a firing alert to ``/alerts/<secret>``,
through the same intake, so the paging loop can be seen without one.
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from bot.bridge import Bridge, Button
from bot.config import Config, HttpConfig, parse_config
from bot.errors import InboundRejected, RecipientError
from bot.runtime import open_runtime
from bot.sandbox import Sandbox
from bot.service import Request
from bot.vocabulary import Channel

DEMO_ADMIN = 1001
DEMO_CHAT = -100500


DEMO_ALERTS = {
    "secret": "demo-alerts-secret-0123",
    "chat": DEMO_CHAT,
    "routes": [{"match": {}, "escalation": "oncall"}],
    "escalations": {
        "oncall": {"steps": [{"page": "alice"}, {"wait": "5m"}, {"page": "bob", "via": "telegram"}]}
    },
}


def demo_config(audit_path: Path, api_version: int = 1) -> Config:
    v3 = {
        "whatsapp_groups": {"ops-room": {"name": "Ops Room", "admin": "4412345678"}},
        "telegram_groups": {"ops-tg": {"name": "Ops", "admin": "4412345678"}},
    }
    config = parse_config(
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
            "alerts": DEMO_ALERTS,
            "http": {"port": 8080},  # what alerts need; the demo serves nothing (below)
        },
        {},
    )
    return replace(config, http=HttpConfig())


SIMULATE = "/simulate-reply"
SIMULATE_ALERT = "/simulate-alert"
SAMPLE_ALERT = {
    "version": "4",
    "status": "firing",
    "receiver": "whatsmate-bot",
    "groupKey": '{}:{alertname="HighCPU"}',
    "groupLabels": {"alertname": "HighCPU"},
    "commonLabels": {"alertname": "HighCPU", "instance": "db-1", "severity": "critical"},
    "commonAnnotations": {"summary": "CPU above 90% on db-1 for 5 minutes"},
    "externalURL": "http://alertmanager:9093",
    "truncatedAlerts": 0,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighCPU", "instance": "db-1", "severity": "critical"},
            "annotations": {"summary": "CPU above 90% on db-1 for 5 minutes"},
            "startsAt": "2026-01-01T03:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "c162cc887fc04ed3",
        }
    ],
}
POST_IDS_FROM = 10_001  # the demo's posts; lower ids are the lines you typed
DEMO_SECRET = "demo-inbound-secret"


async def run_demo(
    stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, api_version: int = 1
) -> int:
    interactive = stdin.isatty()
    sandbox = Sandbox()

    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    post_ids = itertools.count(POST_IDS_FROM)

    async def post(
        chat_id: int, text: str, reply_to: int | None, buttons: Sequence[Button] = ()
    ) -> int:
        post_id = next(post_ids)
        if reply_to is None:
            where = f"in chat {chat_id}"
        elif reply_to < POST_IDS_FROM:
            where = f"under your message #{reply_to}"
        else:
            where = f"under post #{reply_to}"
        say("\n".join(f"bot (post {where})> {row}" for row in text.splitlines()))
        if buttons:
            labels = " ".join(f"[{b.label}]" for b in buttons)
            say(f"bot (post {where})> {labels} (post #{post_id})")
        return post_id

    def show_calls(seen: int) -> None:
        for method, path, body in sandbox.received[seen:]:
            shown = f" {json.dumps(body, ensure_ascii=False)}" if body else ""
            say(f"  [sandbox got {method} {path}{shown}]")

    async def paging_round() -> None:
        """What the paging workers do in the background of a real bot, once."""
        pager = runtime.pager
        if pager is None:
            return
        await pager.poster.post_all(post)
        seen = len(sandbox.received)
        await pager.run_due()
        await pager.wait_sent()
        show_calls(seen)
        await pager.poster.post_all(post)

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
                acknowledge=runtime.pager.inbound_ack if runtime.pager else None,
            )
            groups = "; gateway groups: ops-room (/wa), ops-tg (/tg)" if api_version == 3 else ""
            say(
                f"whatsmate-bot demo: you are admin 1001 in a console chat; WhatsMate is a "
                f"sandbox answering like API v{api_version}.\nContacts: alice, bob, carol; "
                f"groups: oncall, everyone{groups}. Try /help, then /wa alice hi and "
                f"{SIMULATE} alice on my way (demo only: alice answers on WhatsApp).\n"
                f"Paging: {SIMULATE_ALERT} (Alertmanager fires HighCPU), then "
                f"{SIMULATE} alice ack and /incidents."
            )
            pending: str | None = None
            for number, line in enumerate(_lines(stdin, stdout, interactive), start=1):
                text = line.rstrip("\n")
                if not text.strip():
                    continue
                seen = len(sandbox.received)
                if not interactive:
                    say(f"you> {text}  (message #{number})")
                if text.strip() == SIMULATE_ALERT and runtime.pager is not None:
                    say(f"  [Alertmanager POSTs /alerts/<secret>: {_alert_line(SAMPLE_ALERT)}]")
                    await runtime.pager.accept(json.dumps(SAMPLE_ALERT).encode())
                    await paging_round()
                    continue
                if text.startswith(SIMULATE):
                    await _simulate_reply(bridge, config, text[len(SIMULATE) :], say)
                    await bridge.post_all(post)
                    await paging_round()
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
                        pending = reply.confirm.token
                        reply_text += "\n[Send] [Cancel] — type send or cancel"
                say("\n".join(f"bot> {row}" for row in reply_text.splitlines()))
                show_calls(seen)
                await paging_round()
    return 0


def _alert_line(body: dict[str, Any]) -> str:
    labels = body["commonLabels"]
    return f"{labels['alertname']} {body['status']} on {labels['instance']}"


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
