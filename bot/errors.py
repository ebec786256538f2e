"""Every exception the bot raises on purpose, in one tree.

Callers catch by meaning, never by message text::

    BotError                      anything the bot raises on purpose
    ├── ConfigError               the config file is wrong; .key names the offending key
    ├── UsageError                a command is malformed; .usage is the line to show
    │   └── UnknownCommand        /something the bot does not know
    ├── RecipientError            a <to> word names no number, contact or group
    ├── AttachmentError           the file of a media command could not be fetched
    ├── InboundRejected           a request the web server refuses (inbound, webhook,
    │                             alerts); .status is the HTTP status (400, 403, 408, 413)
    ├── PostFailed                Telegram surely did not take a bridge post (it said no,
    │   │                         or the request never left): tried again later
    │   └── PostMaybeSent         the answer to a post was lost after the request left
    │                             (timeout, dropped connection): it may be in the chat;
    │                             tried again, the copy marked as a possible repeat
    ├── ChatRefused               Telegram refuses a chat for good (bot removed, group
    │                             migrated: .moved_to): the post goes elsewhere
    ├── StorageUnavailable        the database did not take or answer a statement or
    │                             transaction (down, cut off, disk full, timeout), or
    │                             cannot be reached at start; raised by the drivers only
    ├── TelegramUnavailable       Telegram could not be reached at start (after retries):
    │                             the bot stops with one line, never a traceback
    ├── AlertmanagerError         Alertmanager did not make a silence; one line with its
    │                             HTTP status and words (or why it could not be reached)
    ├── LostPollerRole            the poller lease ran out while an update was handled:
    │                             nothing more is said, the new poller answers it
    ├── LimitExceeded             a send breaks a documented WhatsMate limit (length,
    │                             size, a field the endpoint lacks): refused before
    │                             any call, the reply starts "Not sent:"
    └── GatewayError              a WhatsMate call failed; .endpoint names it
        ├── NotSent               the request surely never left (connection refused,
        │                         DNS, pool exhausted): safe to retry, nothing was sent
        ├── OutcomeUnknown        a POST may have reached WhatsMate but no usable answer
        │                         came (read timeout, dropped connection, 5xx): never
        │                         retried, the user is told to check
        ├── GatewayTimeout        a read (GET) timed out on every attempt
        ├── ConnectionLost        a read (GET) lost its connection on every attempt
        ├── GatewayHTTPError      WhatsMate answered an error status; .status, .message
        │   ├── AuthError         401/403: bad client id or secret
        │   ├── QuotaError        402/429/444/469: plan or quota refusal
        │   └── ServerError       5xx to a read, after its retries
        ├── SendRejected          2xx with {"success": false, "status": ...}
        └── BadResponse           2xx whose body is not what the API reference promises

No message in this tree ever contains the bot token or the client secret: the gateway
builds messages from the HTTP status and the gateway's own text, after redaction.
"""

from __future__ import annotations


class BotError(Exception):
    """Base of everything the bot raises deliberately."""


class ConfigError(BotError):
    """The configuration is invalid. ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class UsageError(BotError):
    """A command could not be parsed. ``usage`` is the ``Usage: ...`` line to reply with."""

    def __init__(self, usage: str, problem: str = "") -> None:
        super().__init__(f"{usage}\n{problem}" if problem else usage)
        self.usage = usage
        self.problem = problem


class UnknownCommand(UsageError):
    """The text starts with a slash but names no command the bot knows."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Usage: /help lists the commands you may use (unknown command {name}).")
        self.name = name


class RecipientError(BotError):
    """A recipient word is neither a valid number nor a known contact or group."""


class AttachmentError(BotError):
    """The photo, audio or document of a media command could not be downloaded."""


class InboundRejected(BotError):
    """A request the web server refuses (its body or its secret); ``status`` is the HTTP
    status to answer. Raised by a route, answered by ``bot.web``'s one middleware."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class PostFailed(BotError):
    """Telegram surely did not take a bridge post (it answered an error, or the request
    never left: connection refused, no free connection): it is tried again later."""


class PostMaybeSent(PostFailed):
    """The request of a bridge post left, but its answer was lost (read timeout, dropped
    connection): Telegram may have posted it. Tried again, marked as a possible repeat."""


class ChatRefused(BotError):
    """Telegram refuses a chat for good: the bot was removed (403) or the group became a
    supergroup (``moved_to``, Telegram's ``migrate_to_chat_id``). Never retried there."""

    def __init__(self, reason: str, moved_to: int | None = None) -> None:
        super().__init__(reason)
        self.moved_to = moved_to


class StorageUnavailable(BotError):
    """The database did not answer or take a statement or transaction (PostgreSQL down or
    cut off, SQLite's disk full or locked, a timeout), or could not be reached at start.
    Raised by the storage drivers, once, for every such failure: callers decide by
    meaning (the web server answers 503, a command "the bot's database is unreachable")."""


class TelegramUnavailable(BotError):
    """Telegram could not be reached when the bot started (after its retries)."""


class AlertmanagerError(BotError):
    """Alertmanager (``alerts.alertmanager_url``) refused or did not answer a call."""


class LostPollerRole(BotError):
    """This replica's poller lease ran out while it handled an update: it says nothing
    more about it (the poller that took over answers or reruns it from the journal)."""


class LimitExceeded(BotError):
    """The send breaks one of WhatsMate's documented limits; nothing was called."""


class GatewayError(BotError):
    """A WhatsMate call failed. ``endpoint`` is e.g. ``POST /v1/gateway/status``."""

    def __init__(self, endpoint: str, detail: str) -> None:
        super().__init__(f"{endpoint}: {detail}")
        self.endpoint = endpoint
        self.detail = detail


class NotSent(GatewayError):
    """The request never left this machine; nothing reached WhatsMate."""


class OutcomeUnknown(GatewayError):
    """A send may have reached WhatsMate, but no usable answer came back."""


class GatewayTimeout(GatewayError):
    """A read-only call timed out on every attempt."""


class ConnectionLost(GatewayError):
    """A read-only call lost its connection on every attempt."""


class GatewayHTTPError(GatewayError):
    """WhatsMate answered with an HTTP error status."""

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(endpoint, f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class AuthError(GatewayHTTPError):
    """WhatsMate refused the client id / secret (401 or 403)."""


class QuotaError(GatewayHTTPError):
    """WhatsMate refused because of the plan or a quota (402, 429, 444, 469)."""


class ServerError(GatewayHTTPError):
    """WhatsMate answered 5xx to a read-only call, on every attempt."""


class SendRejected(GatewayError):
    """WhatsMate answered ``{"success": false, "status": ...}``."""

    def __init__(self, endpoint: str, status: str) -> None:
        super().__init__(endpoint, f"rejected: {status}")
        self.status = status


class BadResponse(GatewayError):
    """WhatsMate answered 2xx with a body the API reference does not describe."""
