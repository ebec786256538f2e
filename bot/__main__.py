"""The command line: ``whatsmate-bot run | demo | check | exec`` (also ``python -m bot``).

Exit codes are part of the contract (SPEC.md): a bad config is one line naming the key
and exit 2, never a traceback; ``exec`` exits 0 ok, 1 gateway or outcome failure,
2 usage or config error, so it can run from cron.

Start-up only builds what lives as long as the process (modules, classes, the config):
the collector is off until start-up is over (``run``: the runtime open; ``check`` and
``exec``: the config read; ``demo``: at once), then all of it is frozen (``gc.freeze``,
never scanned again) and collection resumes for what the process allocates. Letting
CPython collect as those objects pile up cost a sixth of the start-up (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence

from bot.config import Config, load_config
from bot.errors import (
    BotError,
    ConfigError,
    GatewayError,
    StorageUnavailable,
    TelegramUnavailable,
)
from bot.logs import configure_logging, get_logger, redact
from bot.vocabulary import Outcome

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXEC_EXIT = {
    Outcome.OK: EXIT_OK,
    Outcome.DRY_RUN: EXIT_OK,
    Outcome.ERROR: EXIT_FAILURE,
    Outcome.UNKNOWN: EXIT_FAILURE,
    Outcome.CANCELLED: EXIT_FAILURE,
    Outcome.USAGE: EXIT_USAGE,
    Outcome.DENIED: EXIT_USAGE,
    Outcome.PENDING: EXIT_USAGE,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whatsmate-bot", description="Telegram chat-ops bot for the WhatsMate API."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")

    def with_config(name: str, text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
        return command

    with_config("run", "run the bot (long polling, or webhook when telegram.webhook_url is set)")
    demo = sub.add_parser(
        "demo",
        help="console chat against a built-in sandbox gateway (no network)",
        description="Console chat as an admin against a sandbox WhatsMate. "
        "Reads commands from stdin, one a line.",
    )
    demo.add_argument(
        "--api-version",
        type=int,
        choices=(1, 3),
        default=1,
        help="the WhatsMate API the sandbox answers like (default 1)",
    )
    with_config("check", "validate the config and check both gateway status endpoints")
    exec_command = with_config("exec", "run one command as the first admin and print the reply")
    exec_command.add_argument("command", help='the command, e.g. "/status"')
    exec_command.add_argument(
        "--yes", action="store_true", help="send even to more than confirm_over recipients"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "demo":
        from bot.demo import run_demo

        configure_logging(fmt="console", level="warning")
        _started()
        return asyncio.run(run_demo(api_version=args.api_version))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(fmt=config.log.format, level=config.log.level, secrets=config.secrets)
    try:
        if args.action == "run":
            return asyncio.run(_run(config))
        _started()
        if args.action == "check":
            return asyncio.run(_check(config))
        return asyncio.run(_exec(config, args.command, args.yes))
    except ConfigError as exc:  # found on opening (a database.url asyncpg refuses)
        print(f"config error: {redact(str(exc), config.secrets)}", file=sys.stderr)
        return EXIT_USAGE


def _started() -> None:
    """Start-up is over: freeze what it built and collect from here on."""
    gc.freeze()
    gc.enable()


async def _run(config: Config) -> int:
    from bot.lifecycle import Lifecycle
    from bot.runtime import open_runtime
    from bot.telegram_app import TelegramFrontend

    log = get_logger("bot")
    stop = asyncio.Event()

    def on_signal(number: int) -> None:
        if stop.is_set():
            log.warning("second_signal_exiting_now", signal=number)
            os._exit(128 + number)
        log.info("signal_received", signal=number)
        stop.set()

    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal, number)
    async with open_runtime(config, serving=True) as runtime:
        _started()
        await Lifecycle.of_bot(runtime, TelegramFrontend(runtime)).run(stop)
    log.info("stopped")
    return EXIT_OK


async def _check(config: Config) -> int:
    from bot.runtime import open_runtime

    print("config: ok")
    async with open_runtime(config) as runtime:
        gateway, instance = runtime.gateway, config.whatsmate.telegram_instance
        results = await asyncio.gather(
            gateway.gateway_status(), gateway.telegram_status(instance), return_exceptions=True
        )
    healthy = True
    for label, result in zip(
        ("WhatsApp gateway", f"Telegram gateway (instance {instance})"), results, strict=True
    ):
        if isinstance(result, GatewayError):
            print(f"{label}: unreachable — {result.detail}")
            healthy = False
        elif isinstance(result, BaseException):
            raise result
        else:
            print(f"{label}: {result.status}")
            healthy = healthy and result.ok
    return EXIT_OK if healthy else EXIT_FAILURE


async def _exec(config: Config, text: str, confirmed: bool) -> int:
    from bot.runtime import open_runtime
    from bot.service import Request

    admin = config.access.first_admin
    if admin is None:
        print(
            "config error: access.admins: exec runs as the first admin; none is configured",
            file=sys.stderr,
        )
        return EXIT_USAGE
    async with open_runtime(config) as runtime:
        reply = await runtime.service.handle(
            Request(admin, admin, private=True, text=text), confirmed=confirmed
        )
    print(reply.text)
    if reply.confirm:
        print("Not sent: re-run with --yes to confirm.", file=sys.stderr)
    return EXEC_EXIT[reply.outcome]


def entry() -> None:
    try:
        sys.exit(main())
    except (StorageUnavailable, TelegramUnavailable) as exc:  # down: a failure, not usage
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    except BotError as exc:  # pragma: no cover - a last line of defence, one line only
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    entry()
