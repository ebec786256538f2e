"""Structured logging, configured once: structlog for our events, stdlib for libraries.

Why a module of its own: the secrets must never reach a log line, whoever writes it.
httpx logs request URLs (a Telegram URL contains the bot token) and python-telegram-bot
logs its own events, so both structlog's and the standard library's output pass through
the same ``redact_secrets`` processor. Library loggers that would print request bodies
(message text) at debug level are held at INFO/WARNING whatever ``log.level`` says.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
MIN_SECRET = 4
_QUIET_LIBRARIES = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "telegram": logging.INFO,
    "apscheduler": logging.WARNING,
    "tornado.access": logging.WARNING,
}


class _MalformedRequests(logging.Filter):
    """aiohttp's server logs a request a client framed wrongly (a bad chunk size, a bad
    header) as an error with a traceback, though it answered 400 and the fault is the
    client's: one warning line instead, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"malformed_request: {type(error).__name__}", ()
            record.exc_info, record.exc_text = None, None
        return True


# A password in any URL (``scheme://user:PASSWORD@``, the user possibly empty, an
# unencoded @ inside) or any ``password=`` setting (URL query, libpq keywords), whatever
# its value: the known secrets below cover values, these cover forms.
_PASSWORD_FORMS = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/]*@", re.IGNORECASE), rf"\1{REDACTED}@"),
    (re.compile(r"(\b\w*password=)[^&\s'\"]+", re.IGNORECASE), rf"\1{REDACTED}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets (of 4 characters or more: shorter ones would
    blank out ordinary words) and without any password written in a URL."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PASSWORD_FORMS:
        text = pattern.sub(replacement, text)
    return text


class SecretRedactor:
    """A structlog processor that replaces every known secret in every string value, and
    every password written in a URL."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(s for s in secrets if len(s) >= MIN_SECRET)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key, value in event.items():
            event[key] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return self._clean(str(value)) if isinstance(value, Exception) else value


def configure_logging(
    *,
    fmt: str = "json",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and the stdlib root logger. Safe to call again (tests do)."""
    out = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    redact = SecretRedactor(secrets)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name, floor in _QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [_MalformedRequests()]


def get_logger(name: str) -> Any:
    """A structlog logger; ``log.info("event", key=value)``."""
    return structlog.get_logger(name)
