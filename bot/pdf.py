"""``/pdf``: WhatsMate's PDF-to-text service, the same in both API versions.

A job is submitted once (it costs quota, so a submit that may have arrived is never
retried), checked every few seconds until it is ``Completed`` — tenacity does the
waiting — and its text fetched. A text longer than three Telegram messages comes back
as a ``.txt`` file. Only an address the user typed is sent: a Telegram file address
carries the bot token and must never leave the bot.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_fixed

from bot.config import TelegramConfig
from bot.errors import GatewayError
from bot.gateway import WhatsMate
from bot.replies import Reply, ReplyFile, Result, describe_failure, split_text
from bot.vocabulary import Outcome

REPLY_MESSAGES = 3  # a longer text comes back as a .txt document


@dataclass(frozen=True)
class PdfPolling:
    """How ``/pdf`` waits for WhatsMate's job: a check every ``every_s``, for ``give_up_s``."""

    every_s: float = 3.0
    give_up_s: float = 120.0


DEFAULT_PDF_POLLING = PdfPolling()


def is_telegram_file(url: str, telegram: TelegramConfig) -> bool:
    """A Telegram file address (it carries the bot token): never to be sent anywhere."""
    return telegram.token in url or url.startswith(telegram.base_file_url)


def pending(status: str) -> bool:
    return status.casefold() not in {"completed", "failed", "error", "cancelled"}


async def pdf_to_text(gateway: WhatsMate, url: str, polling: PdfPolling) -> Result:
    """Submit once, check until done, then fetch the text; every failure names the job."""
    submitted = await gateway.pdf_submit(url)
    if submitted.preview is not None:
        text = f"Dry run — nothing was sent. Would call:\n{submitted.preview}"
        return Result(Reply(text, Outcome.DRY_RUN), "dry run")
    job = submitted.job_id or "?"
    jobs = (job,)
    try:
        status = await _wait(gateway, job, polling)
        if status.casefold() != "completed":
            waited = f"after {polling.give_up_s:g} s"
            why = f"is still {status} {waited}" if pending(status) else f"ended {status}"
            text = f"PDF job {job} {why}; no text to show. Ask WhatsMate about job {job}."
            return Result(Reply(text, Outcome.ERROR), f"pdf {status}", job_ids=jobs)
        content = await gateway.pdf_text(job)
    except GatewayError as exc:
        text = f"WhatsMate {describe_failure(exc)} (PDF job {job})"
        return Result(Reply(text, Outcome.ERROR), exc.detail, job_ids=jobs)
    detail = f"pdf {len(content)} characters"
    if len(split_text(content)) > REPLY_MESSAGES:
        summary = f"PDF job {job}: {len(content)} characters of text, attached as a file."
        file = ReplyFile(f"pdf-{job[:40]}.txt", content.encode())
        return Result(Reply(summary, Outcome.OK, file=file), detail, job_ids=jobs)
    return Result(Reply(content, Outcome.OK), detail, job_ids=jobs)


async def _wait(gateway: WhatsMate, job: str, polling: PdfPolling) -> str:
    """The job's status once it is done, or its last status when ``give_up_s`` ran out."""
    retrying = AsyncRetrying(
        retry=retry_if_result(pending),
        wait=wait_fixed(polling.every_s),
        stop=stop_after_delay(polling.give_up_s),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else "",
    )
    status: str = await retrying(gateway.pdf_check, job)
    return status
