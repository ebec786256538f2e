"""The words the bot answers with: pure functions from results to text.

Kept apart from ``service`` so the wording of every reply — send results, gateway
failures, history lines, long texts split for Telegram — is in one place and can be
read (and tested) without the machinery that produces the results.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from bot.errors import (
    AuthError,
    BadResponse,
    GatewayError,
    GatewayHTTPError,
    NotSent,
    OutcomeUnknown,
    QuotaError,
    SendRejected,
)
from bot.recipients import Recipient, mask
from bot.vocabulary import AuditEntry, Outcome

TELEGRAM_MESSAGE_MAX = 4096  # characters in one Telegram message
NOT_ALLOWED = "Sorry, you are not allowed to use this bot here."
DATABASE_AWAY = "The bot's database is unreachable; nothing was sent — try again in a minute."
_DIGIT_RUN = re.compile(r"\d{5,}")


@dataclass(frozen=True)
class ReplyFile:
    """A file the reply carries instead of a long text (e.g. a PDF's text as ``.txt``)."""

    filename: str
    content: bytes


@dataclass(frozen=True)
class Confirm:
    """The Send / Cancel buttons under a prompt: its token, and the command it confirms."""

    token: str
    command: str


@dataclass(frozen=True)
class Reply:
    """What the user sees. ``confirm`` set: show Send / Cancel buttons under it."""

    text: str
    outcome: Outcome
    confirm: Confirm | None = None
    file: ReplyFile | None = None


@dataclass(frozen=True)
class Result:
    """A reply and what the audit keeps about it (never a message body)."""

    reply: Reply
    detail: str = ""
    recipients: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class SendLine:
    """How the send to one recipient ended."""

    recipient: Recipient
    outcome: Outcome
    text: str
    job_id: str | None = None


def split_text(text: str, limit: int = TELEGRAM_MESSAGE_MAX) -> list[str]:
    """Split into messages of at most ``limit`` characters, on line breaks where possible.

    Nothing is dropped: a single line longer than ``limit`` is cut into pieces.
    """
    chunks: list[str] = []
    current = ""
    for line in (text or " ").splitlines(keepends=True):
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            chunks.append(current)
            current = ""
        current += line
    if current or not chunks:
        chunks.append(current)
    return [chunk.rstrip("\n") or chunk for chunk in chunks]


def send_result(title: str, lines: list[SendLine], recipients: tuple[str, ...]) -> Result:
    """The reply to a send: a title, then one line per recipient with WhatsMate's status."""
    outcomes = {line.outcome for line in lines}
    outcome = next(
        o for o in (Outcome.UNKNOWN, Outcome.ERROR, Outcome.DRY_RUN, Outcome.OK) if o in outcomes
    )
    if outcome is Outcome.DRY_RUN:
        previews = list(dict.fromkeys(line.text for line in lines))
        text = "Dry run — nothing was sent. Would call:\n" + "\n".join(previews)
        return Result(Reply(text, outcome), "dry run", recipients)
    ok = sum(line.outcome is Outcome.OK for line in lines)
    header = f"{title}: sent to {ok} of {len(lines)}" if len(lines) > 1 else title
    body = [f"{line.recipient.written}: {_with_job(line)}" for line in lines]
    detail = "; ".join(dict.fromkeys(line.text for line in lines))
    jobs = tuple(dict.fromkeys(line.job_id for line in lines if line.job_id))
    return Result(Reply("\n".join([header, *body]), outcome), detail, recipients, jobs)


def _with_job(line: SendLine) -> str:
    return f"{line.text} (job {line.job_id})" if line.job_id else line.text


def describe_failure(exc: GatewayError) -> str:
    """One line a team member understands: what failed, the HTTP status, WhatsMate's words."""
    if isinstance(exc, OutcomeUnknown):
        return (
            f"outcome unknown — {exc.detail}; it may have been delivered. "
            "Not retried: check with the recipient before sending again."
        )
    if isinstance(exc, NotSent):
        return f"not sent — could not reach WhatsMate ({exc.detail}); nothing was delivered."
    if isinstance(exc, AuthError):
        return f"failed — credentials refused (HTTP {exc.status}: {exc.message})"
    if isinstance(exc, QuotaError):
        return f"failed — plan or quota limit (HTTP {exc.status}: {exc.message})"
    if isinstance(exc, GatewayHTTPError):
        return f"failed — HTTP {exc.status}: {exc.message}"
    if isinstance(exc, SendRejected):
        return f"failed — WhatsMate said: {exc.status}"
    if isinstance(exc, BadResponse):
        return f"failed — unexpected answer ({exc.detail})"
    return f"failed — {exc.detail}"


def summary_line(text: str, limit: int = 80) -> str:
    """The first line of ``text``, cut to ``limit`` characters with an ellipsis."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def history_line(entry: AuditEntry) -> str:
    """One audit entry for ``/history``: numbers masked, job ids kept for tracing."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.at))
    to = ", ".join(n if n.startswith("#") else mask(n) for n in entry.recipients[:5])
    if len(entry.recipients) > 5:
        to += f" +{len(entry.recipients) - 5}"
    detail = _DIGIT_RUN.sub(lambda m: mask(m[0]), entry.detail)[:80]
    parts = [when, f"user {entry.user_id}", entry.command]
    if to:
        parts.append(f"→ {to}")
    parts.append(entry.outcome.value)
    if detail:
        parts.append(detail)
    if entry.job_ids:
        jobs = ", ".join(job[:12] for job in entry.job_ids[:3])
        more = f" +{len(entry.job_ids) - 3}" if len(entry.job_ids) > 3 else ""
        parts.append(f"job {jobs}{more}")
    return " · ".join(parts)
