"""The command line as scripts and operators meet it: real processes, exit codes, signals."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from bot import telegram_app
from bot.config import load_config
from bot.errors import TelegramUnavailable
from bot.runtime import open_runtime
from tests.conftest import ADMIN, ENV, BotUnderTest, free_port, start_bot_process
from tests.fakes import HANG, answer, delay


async def run_cli(
    *args: str, stdin: bytes = b"", timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env={**ENV, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", [[], ["run"], ["demo"], ["check"], ["exec"]])
async def test_every_subcommand_has_help(command: list[str]) -> None:
    code, out, _ = await run_cli(*command, "--help")
    assert code == 0 and "usage: whatsmate-bot" in out


async def test_bad_config_is_one_line_naming_the_key(make_bot: BotUnderTest) -> None:
    path = make_bot.write_config(acess={"admins": [1]})
    for action in (["run"], ["check"], ["exec"]):
        code, out, err = await run_cli(
            *action, "--config", str(path), *(["/status"] * (action == ["exec"]))
        )
        assert code == 2
        assert err == "config error: acess: unknown key\n" and "Traceback" not in err + out


async def test_check_exit_codes(make_bot: BotUnderTest) -> None:
    path = make_bot.write_config()
    code, out, _ = await run_cli("check", "--config", str(path))
    assert (code, out) == (
        0,
        "config: ok\nWhatsApp gateway: up\nTelegram gateway (instance 0): up\n",
    )
    make_bot.whatsmate.telegram_status = "down"
    code, out, _ = await run_cli("check", "--config", str(path))
    assert code == 1 and out.endswith("Telegram gateway (instance 0): down\n")


async def test_exec_exit_codes(make_bot: BotUnderTest) -> None:
    path = str(make_bot.write_config(whatsmate={"timeout_s": 0.3}))
    code, out, _ = await run_cli("exec", "--config", path, "/status")
    assert (code, out) == (0, "WhatsApp gateway: up\nTelegram gateway (instance 0): up\n")
    code, out, _ = await run_cli("exec", "--config", path, "/wa")
    assert (code, out) == (2, "Usage: /wa <to> <message>\n")
    make_bot.whatsmate.fail("/whatsapp/", HANG)
    code, out, _ = await run_cli("exec", "--config", path, "/wa alice hi")
    assert code == 1 and "alice: outcome unknown" in out
    many = "/wa 4411110001,4411110002,4411110003,4411110004,4411110005,4411110006 hi"
    code, out, err = await run_cli("exec", "--config", path, many)
    assert code == 2 and out.startswith("Send /wa to 6 recipients?") and "--yes" in err
    code, out, _ = await run_cli("exec", "--config", path, "--yes", many)
    assert code == 0 and out.startswith("WhatsApp (instance 0): sent to 6 of 6")
    assert len(make_bot.whatsmate.calls("/whatsapp/")) == 7  # 1 hung + 6, never a retry


async def test_demo_reads_commands_from_a_pipe() -> None:
    code, out, err = await run_cli("demo", stdin=b"/help\n/wa alice hi\n/status\n")
    assert code == 0, err
    assert "bot> WhatsApp (instance 0)\nbot> alice: queued" in out
    assert (
        '[sandbox got POST /v1/whatsapp/single/message/0 {"number": "4412345678", "message": "hi"}]'
        in out
    )
    assert "bot> WhatsApp gateway: up" in out


async def test_demo_v3_shows_a_send_with_its_job_id() -> None:
    code, out, err = await run_cli("demo", "--api-version", "3", stdin=b"/wa ops-room hi\n")
    assert code == 0, err
    assert "sandbox answering like API v3" in out
    assert "bot> ops-room: queued (job 0001-" in out
    assert (
        "[sandbox got POST /v3/whatsapp/group/text/message/1 "
        '{"group_name": "Ops Room", "group_admin": "4412345678", "message": "hi"}]'
    ) in out


async def test_check_accepts_status_endpoints_v3_does_not_offer(make_bot: BotUnderTest) -> None:
    path = make_bot.write_config(whatsmate={"api_version": 3})
    make_bot.whatsmate.status_offered = False
    code, out, _ = await run_cli("check", "--config", str(path))
    assert (code, out) == (
        0,
        "config: ok\nWhatsApp gateway: not offered\nTelegram gateway (instance 1): not offered\n",
    )


async def test_sigterm_finishes_commands_in_flight_then_exits_0(make_bot: BotUnderTest) -> None:
    telegram, whatsmate = make_bot.telegram, make_bot.whatsmate
    process = await start_bot_process(make_bot.write_config())
    await telegram.wait_polling()
    whatsmate.fail("/whatsapp/", delay(0.5), delay(0.5), delay(0.5))
    for n in range(3):
        telegram.message(f"/wa alice message {n}", user=ADMIN)
    await whatsmate.wait_for(lambda: len(whatsmate.calls("/whatsapp/")) == 3)
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()[-2000:]
    assert [r.text for r in telegram.replies(ADMIN)] == ["WhatsApp (instance 0)\nalice: queued"] * 3
    logged = err.decode()
    assert telegram.token not in logged and whatsmate.client_secret not in logged
    assert "message 1" not in logged


async def test_second_signal_exits_at_once(make_bot: BotUnderTest) -> None:
    telegram, whatsmate = make_bot.telegram, make_bot.whatsmate
    process = await start_bot_process(make_bot.write_config(whatsmate={"timeout_s": 60}))
    await telegram.wait_polling()
    whatsmate.fail("/whatsapp/", HANG)
    telegram.message("/wa alice stuck", user=ADMIN)
    await whatsmate.wait_for(lambda: len(whatsmate.calls("/whatsapp/")) == 1)
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    while b"signal_received" not in await asyncio.wait_for(process.stderr.readline(), 20):
        pass  # the first signal is handled before the second is sent
    process.send_signal(signal.SIGINT)
    await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 128 + signal.SIGINT


async def test_demo_simulates_an_answer_coming_back() -> None:
    stdin = b"/wa alice db-1 is down\n/simulate-reply alice on my way\n/simulate-reply bob hi\n"
    code, out, err = await run_cli("demo", stdin=stdin)
    assert code == 0, err
    assert "bot (post under your message #1)> alice on WhatsApp:" in out
    assert "bot (post in chat -100500)> bob on WhatsApp:\nbot (post in chat -100500)> hi" in out


@pytest.mark.parametrize("action", [["run"], ["exec", "/status"]])
async def test_an_unreachable_database_is_one_line_and_exit_1(
    make_bot: BotUnderTest, action: list[str]
) -> None:
    path = make_bot.write_config(database={"url": f"postgresql://bot@127.0.0.1:{free_port()}/x"})
    code, out, err = await run_cli(action[0], "--config", str(path), *action[1:])
    assert code == 1
    assert (
        err.strip().splitlines()[-1].startswith("error: database.url: cannot connect to PostgreSQL")
    )
    assert "Traceback" not in err + out


@pytest.mark.parametrize("action", [["run"], ["check"], ["exec", "/status"]])
async def test_a_numeric_secret_is_one_line_that_does_not_show_it(
    make_bot: BotUnderTest, action: list[str]
) -> None:
    path = make_bot.write_config(whatsmate={"client_secret": 1234567890123})
    code, out, err = await run_cli(action[0], "--config", str(path), *action[1:])
    assert code == 2
    assert err == (
        "config error: whatsmate.client_secret: expected a string, in quotes, "
        "got a number (not shown: it is a secret)\n"
    )
    assert "1234567890123" not in err + out


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://bot:pa55word@127.0.0.1:54x2/x", "a port is not a number"),
        ("postgresql://bot:pa55@word@127.0.0.1/x", "more than one @ before the host"),
        ("postgresql://bot:pa55word@127.0.0.1:1/x?target_session_attrs=any-old", "asyncpg"),
    ],
)
@pytest.mark.parametrize("action", [["run"], ["check"], ["exec", "/status"]])
async def test_a_malformed_database_url_is_one_line_and_exit_2(
    make_bot: BotUnderTest, action: list[str], url: str, problem: str
) -> None:
    path = make_bot.write_config(database={"url": url})
    code, out, err = await run_cli(action[0], "--config", str(path), *action[1:])
    assert code == 2, err
    (line,) = [line for line in err.splitlines() if not line.startswith('{"')]  # not a log
    assert line.startswith("config error: database.url: ") and problem in line
    assert "pa55" not in err + out and "Traceback" not in err + out


async def test_secrets_with_a_trailing_newline_work_end_to_end(make_bot: BotUnderTest) -> None:
    """A secret read from a mounted file ends with a newline: it is sent without it."""
    path = make_bot.write_config(whatsmate={"client_secret": "${WM_SECRET}"})
    env = {"WM_SECRET": f"{make_bot.whatsmate.client_secret}\n"}
    code, out, err = await run_cli("exec", "--config", str(path), "/wa alice hi", env=env)
    assert (code, out) == (0, "WhatsApp (instance 0)\nalice: queued\n"), err
    (send,) = make_bot.whatsmate.sends()
    assert send.headers["x-wm-client-secret"] == make_bot.whatsmate.client_secret


async def test_a_token_with_a_trailing_newline_polls(make_bot: BotUnderTest) -> None:
    bot = await make_bot.start(telegram={"token": f"{make_bot.telegram.token}\n"})
    assert await bot.reply_text("/whoami") == f"You are {ADMIN} (admin) in chat {ADMIN}."


async def test_demo_shows_the_paging_loop() -> None:
    stdin = b"/simulate-alert\n/simulate-reply alice ack\n/incidents\n"
    code, out, err = await run_cli("demo", stdin=stdin)
    assert code == 0, err
    assert "bot (post in chat -100500)> FIRING #1 HighCPU\n" in out
    assert "bot (post in chat -100500)> [Acknowledge] (post #10001)" in out
    assert (
        '[sandbox got POST /v1/whatsapp/single/message/0 {"number": "4412345678", "message": '
        '"FIRING #1 HighCPU: CPU above 90% on db-1 for 5 minutes\\nReply ACK to acknowledge"}]'
    ) in out
    assert "bot (post under post #10001)> paged alice on WhatsApp: queued" in out
    assert "bot (post under post #10001)> acknowledged by alice on WhatsApp after 0s" in out
    assert "— acknowledged by alice" in out.splitlines()[-1]


async def test_a_token_telegram_rejects_is_one_line_without_the_token(
    make_bot: BotUnderTest,
) -> None:
    telegram = make_bot.telegram
    telegram.fail("/getMe$", answer(401, {"ok": False, "error_code": 401,
                                         "description": "Unauthorized"}))  # fmt: skip
    path = make_bot.write_config()
    code, out, err = await run_cli("run", "--config", str(path), timeout=30)
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # log events
    assert lines == ["config error: telegram.token: Telegram rejected the bot token"]
    assert telegram.token not in err and telegram.token.split(":")[1] not in out + err
    assert "Traceback" not in err and "Unclosed" not in err


async def test_a_telegram_out_of_reach_at_start_is_one_error(
    make_bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram_app, "STARTUP_RETRY_S", 0.0)
    closed = f"http://127.0.0.1:{free_port()}/bot"
    path = make_bot.write_config(telegram={"base_url": closed})
    config = load_config(path, {"TEST_TG_TOKEN": make_bot.telegram.token})
    async with open_runtime(config, serving=True) as runtime:
        frontend = telegram_app.TelegramFrontend(runtime)
        with pytest.raises(TelegramUnavailable) as raised:
            await frontend.start()
    assert str(raised.value) == "cannot reach Telegram at telegram.base_url (NetworkError)"
