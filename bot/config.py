"""Load the YAML config into frozen dataclasses, or fail with one line naming the key.

Why a hand-written reader and not a schema library: the file is small, every key is
listed in SPEC.md, and every problem must become a ``ConfigError`` whose ``key`` is the
dotted path (``whatsmate.timeout_s``) — unknown keys included, because a typo must not
silently disable access control. ``${VAR}`` in any string is read from the environment;
the secrets fall back to their environment variables when the file leaves them out.

A secret key (``SECRET_KEYS``: every key of ``SECRET_ENV``, and ``database.url``, which
holds a password) is handled by one rule wherever it is read: its value never appears
in a config error, whatever its type, and surrounding whitespace — the trailing newline
of a mounted secret file — is stripped. A new secret joins by one line in ``SECRET_ENV``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bot.errors import ConfigError, RecipientError
from bot.recipients import (
    AddressBook,
    GatewayGroup,
    Recipient,
    clean_written_number,
    looks_like_number,
)
from bot.vocabulary import Channel, Notify, duration_s

T = TypeVar("T")

SECRET_ENV = {
    "telegram.token": "TELEGRAM_BOT_TOKEN",
    "telegram.secret_token": "TELEGRAM_WEBHOOK_SECRET",
    "whatsmate.client_id": "WHATSMATE_CLIENT_ID",
    "whatsmate.client_secret": "WHATSMATE_CLIENT_SECRET",
    "inbound.secret": "WHATSMATE_INBOUND_SECRET",
    "alerts.secret": "WHATSMATE_ALERTS_SECRET",
}
SECRET_KEYS = frozenset({*SECRET_ENV, "database.url"})
"""Keys whose values are never shown in an error and are stripped of whitespace."""
# Keys that are gone, and the one that replaced them: one line naming http.port.
_MOVED_TO_HTTP_PORT = {
    "metrics": "metrics.port",
    "telegram.listen": "telegram.listen",
    "telegram.port": "telegram.port",
}
URL_SECRET_MIN = 16  # inbound.secret, alerts.secret
WAIT_MIN_S, WAIT_MAX_S = 1, 86400  # an escalation's wait: 1s..1d
REPEAT_MAX = 5
# libyaml's safe loader where PyYAML was built with it: ten times faster than the pure one
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_URL_SECRET = re.compile(r"[A-Za-z0-9_\-]+")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class TelegramConfig:
    token: str = field(repr=False)
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    webhook_url: str | None = None
    secret_token: str | None = field(default=None, repr=False)
    messages_per_second: float = 30.0
    messages_per_minute_per_group: float = 20.0


@dataclass(frozen=True)
class WhatsMateConfig:
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    base_url: str = "https://api.whatsmate.net"
    timeout_s: float = 15.0
    whatsapp_instance: int = 0
    telegram_instance: int = 0
    whatsapp_endpoint: str = "single"
    api_version: int = 1
    max_concurrency: int = 20
    max_connections: int = 100
    retries: int = 3


@dataclass(frozen=True)
class AccessConfig:
    admins: frozenset[int] = frozenset()
    users: frozenset[int] = frozenset()
    chats: frozenset[int] = frozenset()
    first_admin: int | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    name: str
    chat: int
    command: str
    every_s: int | None = None
    cron: str | None = None
    notify: Notify = Notify.ALWAYS


@dataclass(frozen=True)
class HttpConfig:
    """The bot's one web server: /metrics, /healthz, the webhook, the inbound URLs."""

    listen: str = "0.0.0.0"
    port: int = 0  # 0: no web server


@dataclass(frozen=True)
class InboundConfig:
    """The two-way bridge: WhatsMate POSTs answers to /inbound/<channel>/<secret>."""

    secret: str = field(repr=False)
    chat: int


@dataclass(frozen=True)
class PageStep:
    """Page everyone ``to`` names (as in /wa) on ``channel``."""

    to: str
    recipients: tuple[Recipient, ...]
    channel: Channel = Channel.WHATSAPP


@dataclass(frozen=True)
class WaitStep:
    seconds: int


EscalationStep = PageStep | WaitStep


@dataclass(frozen=True)
class Escalation:
    """Steps run in order from the moment an incident opens, then ``repeat`` more times."""

    name: str
    steps: tuple[EscalationStep, ...]
    repeat: int = 0

    @property
    def chain(self) -> tuple[EscalationStep, ...]:
        """Every step as it runs, repeats included."""
        return self.steps * (self.repeat + 1)


@dataclass(frozen=True)
class AlertRoute:
    """Incidents whose commonLabels carry every ``match`` pair get ``escalation``."""

    match: tuple[tuple[str, str], ...]
    escalation: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name) == value for name, value in self.match)


@dataclass(frozen=True)
class AlertsConfig:
    """Incident paging: Alertmanager POSTs to /alerts/<secret>; incidents go to ``chat``."""

    secret: str = field(repr=False)
    chat: int
    alertmanager_url: str | None = None
    notify_resolved: bool = True
    routes: tuple[AlertRoute, ...] = ()
    escalations: Mapping[str, Escalation] = field(default_factory=dict)

    def escalation_for(self, labels: Mapping[str, str]) -> Escalation | None:
        """The first matching route's escalation; None: posted, nobody paged."""
        route = next((r for r in self.routes if r.matches(labels)), None)
        return self.escalations[route.escalation] if route else None


@dataclass(frozen=True)
class LogConfig:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True)
class Config:
    telegram: TelegramConfig
    whatsmate: WhatsMateConfig
    access: AccessConfig = AccessConfig()
    address_book: AddressBook = field(default_factory=lambda: AddressBook({}, {}))
    audit_path: Path = Path("whatsmate-bot.sqlite3")
    confirm_over: int = 5
    dry_run: bool = False
    schedules: tuple[ScheduleConfig, ...] = ()
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    inbound: InboundConfig | None = None
    alerts: AlertsConfig | None = None
    database_url: str | None = field(default=None, repr=False)  # PostgreSQL: replicas

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs, replies, exceptions or the audit."""
        found = (
            self.telegram.token,
            self.whatsmate.client_secret,
            self.telegram.secret_token,
            self.inbound.secret if self.inbound else None,
            self.alerts.secret if self.alerts else None,
            *url_passwords(self.database_url or ""),
            *url_passwords((self.alerts and self.alerts.alertmanager_url) or ""),
        )
        return tuple(s for s in found if s)


def url_passwords(url: str) -> tuple[str, ...]:
    """Every password a database URL holds — after the user (``:pw@``, the user may be
    empty) and in the query (``?password=``) — as written and percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")  # an unencoded @ stays in the password
    written = [userinfo.partition(":")[2]] if at else []
    written += re.findall(r"(?:^|&)password=([^&]*)", parts.query)
    return tuple(dict.fromkeys(f for w in written if w for f in (w, urllib.parse.unquote(w))))


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``path``; raises ConfigError naming the key on any problem."""
    env = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config file ({exc.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(str(path), f"not valid YAML{where}") from None
    return parse_config({} if raw is None else raw, env)


def parse_config(raw: object, env: Mapping[str, str]) -> Config:
    """Validate an already-loaded YAML document."""
    root = _Section("", _mapping("(top level)", raw), env)
    telegram = root.section("telegram")
    whatsmate = root.section("whatsmate")
    access = root.section("access")
    audit = root.section("audit")
    log = root.section("log")
    _reject_moved(root.raw)
    http = root.section("http")
    database = root.section("database")
    api_version = whatsmate.choice("api_version", 1, (1, 3))
    book = _address_book(root, api_version)
    config = Config(
        telegram=TelegramConfig(
            token=telegram.secret("token"),
            base_url=telegram.url("base_url", TelegramConfig.base_url),
            base_file_url=telegram.url("base_file_url", TelegramConfig.base_file_url),
            webhook_url=telegram.optional_url("webhook_url"),
            secret_token=(
                telegram.secret("secret_token")
                if telegram.raw.get("webhook_url")
                else telegram.optional_string("secret_token")
            ),
            messages_per_second=telegram.number(
                "messages_per_second", TelegramConfig.messages_per_second
            ),
            messages_per_minute_per_group=telegram.number(
                "messages_per_minute_per_group", TelegramConfig.messages_per_minute_per_group
            ),
        ),
        whatsmate=WhatsMateConfig(
            base_url=whatsmate.url("base_url", WhatsMateConfig.base_url),
            client_id=whatsmate.secret("client_id"),
            client_secret=whatsmate.secret("client_secret"),
            timeout_s=whatsmate.number("timeout_s", WhatsMateConfig.timeout_s),
            **_instances(whatsmate, api_version),
            max_concurrency=whatsmate.integer("max_concurrency", 20, low=1, high=500),
            max_connections=whatsmate.integer("max_connections", 100, low=1, high=1000),
            retries=whatsmate.integer("retries", 3, low=0, high=10),
        ),
        access=_access(access),
        address_book=book,
        audit_path=Path(audit.string("path", "whatsmate-bot.sqlite3")),
        confirm_over=root.integer("confirm_over", 5, low=0, high=100_000),
        dry_run=root.boolean("dry_run", False),
        schedules=_schedules(root),
        log=LogConfig(
            format=log.choice("format", "json", ("json", "console")),
            level=log.choice("level", "info", ("debug", "info", "warning", "error")),
        ),
        http=HttpConfig(
            listen=http.string("listen", HttpConfig.listen),
            port=http.integer("port", 0, low=0, high=65535),
        ),
        inbound=_inbound(root),
        alerts=_alerts(root, book),
        database_url=_database_url(database),
    )
    for section in (root, telegram, whatsmate, access, audit, log, http, database):
        section.reject_unknown()
    served = {
        "telegram.webhook_url": config.telegram.webhook_url,
        "inbound": config.inbound,
        "alerts": config.alerts,
    }
    needing = next((what for what, wanted in served.items() if wanted), None)
    if needing and not config.http.port:
        raise ConfigError("http.port", f"a port is needed to serve {needing}")
    return config


def _database_url(database: _Section) -> str | None:
    url = database.optional_string("url")
    if url is not None:
        problem = postgres_url_problem(url)
        if problem is not None:
            raise ConfigError(
                "database.url", f"{problem} (the URL is not shown: it holds a password)"
            )
    return url


_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_ENCODE_HINT = "; write @ / ? # : in the user or password percent-encoded (@ is %40)"


def postgres_url_problem(url: str) -> str | None:
    """Why asyncpg could not even parse ``url`` (its rules, checked before connecting,
    so a typo is one line and exit 2, not a traceback); None when it can."""
    if not re.match(r"postgres(ql)?://", url):
        return "expected a postgresql:// URL"
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query, strict_parsing=True) if parts.query else {}
    except ValueError:
        return "not a valid URL" + _ENCODE_HINT
    hosts = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
    if "@" in hosts:
        return "more than one @ before the host" + _ENCODE_HINT
    ports = [p for values in query.get("port", []) for p in values.split(",")]
    for spec in hosts.split(",") if hosts else []:
        if not spec:
            return "an empty host in the host list"
        ipv6 = re.fullmatch(r"\[[^\]]+\](?::(.*))?", spec)
        if spec.startswith("[") and ipv6 is None:
            return "an IPv6 host must be written [address]:port"
        ports.append((ipv6[1] or "") if ipv6 else spec.partition(":")[2])
    for port in ports:
        port = urllib.parse.unquote(port)
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return "a port is not a number from 1 to 65535" + _ENCODE_HINT
    if not set(query.get("sslmode", ["prefer"])) <= _SSLMODES:
        return "sslmode is not one of " + ", ".join(sorted(_SSLMODES))
    return None


def _reject_moved(raw: dict[str, Any]) -> None:
    """The keys of the old second and third servers fail with one line naming http.port."""
    telegram = raw.get("telegram") if isinstance(raw.get("telegram"), dict) else {}
    for path, key in _MOVED_TO_HTTP_PORT.items():
        section, _, name = path.partition(".")
        present = section in raw if not name else name in (telegram or {})
        if present:
            raise ConfigError(key, "gone: the bot's one web server listens on http.port")


def _inbound(root: _Section) -> InboundConfig | None:
    if root.raw.get("inbound") is None:
        root.read.add("inbound")
        return None
    inbound = root.section("inbound")
    secret = _url_secret(inbound)
    if "chat" not in inbound.raw:
        raise ConfigError("inbound.chat", "missing: the chat where answers are posted")
    config = InboundConfig(secret, inbound.integer("chat", 0, low=-(2**62), high=2**62))
    inbound.reject_unknown()
    return config


def _url_secret(section: _Section) -> str:
    """A secret that is part of a URL (``inbound.secret``, ``alerts.secret``)."""
    secret = section.secret("secret")
    if len(secret) < URL_SECRET_MIN or not _URL_SECRET.fullmatch(secret):
        raise ConfigError(
            section.key("secret"),
            f"at least {URL_SECRET_MIN} characters of letters, digits, - and _ "
            "(it is part of a URL)",
        )
    return secret


def _alerts(root: _Section, book: AddressBook) -> AlertsConfig | None:
    if root.raw.get("alerts") is None:
        root.read.add("alerts")
        return None
    alerts = root.section("alerts")
    secret = _url_secret(alerts)
    if alerts.raw.get("chat") is None:
        raise ConfigError("alerts.chat", "missing: the chat where incidents are posted")
    chat = alerts.integer("chat", 0, low=-(2**62), high=2**62)
    url = None
    if alerts.raw.get("alertmanager_url") is not None:
        url = alerts.url("alertmanager_url", "").rstrip("/")
    notify_resolved = alerts.boolean("notify_resolved", True)
    escalations = _escalations(alerts, book)
    routes = _routes(alerts, escalations)
    alerts.reject_unknown()
    return AlertsConfig(secret, chat, url, notify_resolved, routes, escalations)


def _escalations(alerts: _Section, book: AddressBook) -> dict[str, Escalation]:
    result: dict[str, Escalation] = {}
    for name, value in alerts.mapping("escalations").items():
        entry = _Section(
            f"alerts.escalations.{name}", _mapping(f"alerts.escalations.{name}", value), alerts.env
        )
        entry.read.add("steps")
        raw_steps = entry.raw.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ConfigError(
                entry.key("steps"), "expected a non-empty list of page and wait steps"
            )
        steps = tuple(
            _step(
                _Section(
                    f"{entry.key('steps')}[{i}]",
                    _mapping(f"{entry.key('steps')}[{i}]", raw),
                    alerts.env,
                ),
                book,
            )
            for i, raw in enumerate(raw_steps)
        )
        repeat = entry.integer("repeat", 0, low=0, high=REPEAT_MAX)
        entry.reject_unknown()
        result[str(name)] = Escalation(str(name), steps, repeat)
    return result


_VIA = {"whatsapp": Channel.WHATSAPP, "telegram": Channel.TELEGRAM}


def _step(step: _Section, book: AddressBook) -> EscalationStep:
    if ("page" in step.raw) == ("wait" in step.raw):
        raise ConfigError(step.path, "give exactly one of 'page' or 'wait'")
    if "wait" in step.raw:
        text = step.string("wait", "")
        seconds = duration_s(text)
        if seconds is None or not WAIT_MIN_S <= seconds <= WAIT_MAX_S:
            raise ConfigError(
                step.key("wait"), "expected a duration from 1s to 1d, e.g. 30s, 5m, 1h"
            )
        step.reject_unknown()
        return WaitStep(seconds)
    to = step.string("page", "")
    channel = _VIA[step.choice("via", "whatsapp", tuple(_VIA))]
    if not to or any(c.isspace() for c in to):
        raise ConfigError(step.key("page"), "expected one <to> word, as with /wa")
    try:
        recipients = book.resolve(to, channel)
    except RecipientError as exc:
        raise ConfigError(step.key("page"), str(exc)) from None
    step.reject_unknown()
    return PageStep(to, recipients, channel)


def _routes(alerts: _Section, escalations: Mapping[str, Escalation]) -> tuple[AlertRoute, ...]:
    alerts.read.add("routes")
    raw = alerts.raw.get("routes") or []
    if not isinstance(raw, list):
        raise ConfigError("alerts.routes", "expected a list")
    routes = []
    for index, item in enumerate(raw):
        entry = _Section(
            f"alerts.routes[{index}]", _mapping(f"alerts.routes[{index}]", item), alerts.env
        )
        pairs = []
        for label, value in entry.mapping("match").items():
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ConfigError(f"{entry.key('match')}.{label}", "expected a label value (text)")
            pairs.append((str(label), str(value)))
        name = entry.string("escalation", "")
        if name not in escalations:
            known = ", ".join(sorted(escalations)) or "none defined"
            raise ConfigError(entry.key("escalation"), f"unknown escalation {name!r} ({known})")
        entry.reject_unknown()
        routes.append(AlertRoute(tuple(pairs), name))
    return tuple(routes)


def _access(section: _Section) -> AccessConfig:
    admins = section.id_list("admins")
    return AccessConfig(
        admins=frozenset(admins),
        users=frozenset(section.id_list("users")),
        chats=frozenset(section.id_list("chats")),
        first_admin=admins[0] if admins else None,
    )


def _instances(whatsmate: _Section, version: int) -> dict[str, Any]:
    """Instance numbers and endpoint flavour: v1 has instances 0/1, v3 any positive one."""
    if version == 1:
        return {
            "api_version": 1,
            "whatsapp_instance": whatsmate.choice("whatsapp_instance", 0, (0, 1)),
            "telegram_instance": whatsmate.integer("telegram_instance", 0, low=0, high=99),
            "whatsapp_endpoint": whatsmate.choice(
                "whatsapp_endpoint", "single", ("single", "queue")
            ),
        }
    high = 2**31 - 1
    return {
        "api_version": 3,
        "whatsapp_instance": whatsmate.integer("whatsapp_instance", 1, low=1, high=high),
        "telegram_instance": whatsmate.integer("telegram_instance", 1, low=1, high=high),
        "whatsapp_endpoint": whatsmate.choice("whatsapp_endpoint", "single", ("single",)),
    }


def _gateway_groups(root: _Section, key: str, api_version: int) -> dict[str, GatewayGroup]:
    groups: dict[str, GatewayGroup] = {}
    raw = root.mapping(key)
    if raw and api_version != 3:
        raise ConfigError(key, "gateway groups need whatsmate.api_version: 3")
    for alias, value in raw.items():
        entry = _Section(f"{key}.{alias}", _mapping(f"{key}.{alias}", value), root.env)
        if not isinstance(alias, str) or looks_like_number(alias) or "," in alias:
            raise ConfigError(entry.path, "an alias is one word that does not look like a number")
        name = entry.string("name", "")
        if not name or len(name) > 150:
            raise ConfigError(f"{entry.path}.name", "expected the group's name, 1-150 characters")
        admin = clean_written_number(entry.string("admin", ""))
        if admin is None:
            raise ConfigError(f"{entry.path}.admin", "the group creator's number (5-15 digits)")
        entry.reject_unknown()
        groups[alias.casefold()] = GatewayGroup(name, admin)
    return groups


def _address_book(root: _Section, api_version: int) -> AddressBook:
    contacts: dict[str, str] = {}
    for alias, value in root.mapping("contacts").items():
        key = f"contacts.{alias}"
        if not isinstance(alias, str) or not re.fullmatch(r"[^\s,@/]+", alias):
            raise ConfigError(key, "an alias is one word without commas")
        if looks_like_number(alias):
            raise ConfigError(key, "an alias must not look like a number")
        number = clean_written_number(str(root.interpolate(key, value)))
        if number is None:
            raise ConfigError(key, "not a phone number (5-15 digits)")
        contacts[alias.casefold()] = number
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in root.mapping("groups").items():
        key = f"groups.{name}"
        if not isinstance(name, str) or looks_like_number(name) or "," in name:
            raise ConfigError(key, "a group name is one word that does not look like a number")
        if name.casefold() in contacts:
            raise ConfigError(key, "a group must not share its name with a contact")
        if not isinstance(members, list) or not members:
            raise ConfigError(key, "expected a non-empty list of aliases or numbers")
        groups[name.casefold()] = tuple(str(m) for m in members)
    gateway_groups = {
        Channel.WHATSAPP: _gateway_groups(root, "whatsapp_groups", api_version),
        Channel.TELEGRAM: _gateway_groups(root, "telegram_groups", api_version),
    }
    for channel_groups, key in zip(
        gateway_groups.values(), ("whatsapp_groups", "telegram_groups"), strict=True
    ):
        for alias in channel_groups:
            if alias in contacts or alias in groups:
                raise ConfigError(f"{key}.{alias}", "already the name of a contact or group")
    book = AddressBook(contacts, groups, gateway_groups)
    for name in groups:
        try:
            book.resolve(name)
        except RecipientError as exc:
            raise ConfigError(f"groups.{name}", str(exc)) from None
    return book


def _schedules(root: _Section) -> tuple[ScheduleConfig, ...]:
    root.read.add("schedules")
    raw = root.raw.get("schedules") or []
    if not isinstance(raw, list):
        raise ConfigError("schedules", "expected a list")
    result: list[ScheduleConfig] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        entry = _Section(f"schedules[{index}]", _mapping(f"schedules[{index}]", item), root.env)
        name = entry.string("name", f"schedule-{index + 1}")
        if name in names:
            raise ConfigError(f"{entry.path}.name", f"duplicate schedule name {name!r}")
        names.add(name)
        every_text = entry.optional_string("every")
        cron = entry.optional_string("cron")
        if (every_text is None) == (cron is None):
            raise ConfigError(entry.path, "give exactly one of 'every' or 'cron'")
        every_s = None
        if every_text is not None:
            every_s = duration_s(every_text)
            if every_s is None:
                raise ConfigError(f"{entry.path}.every", "expected e.g. 30s, 15m, 1h or 1d")
        if cron is not None:
            check_cron(cron, f"{entry.path}.cron")
        command = entry.string("command", "")
        if not command.startswith("/"):
            raise ConfigError(f"{entry.path}.command", "expected a command such as /status")
        if "chat" not in entry.raw:
            raise ConfigError(f"{entry.path}.chat", "missing")
        result.append(
            ScheduleConfig(
                name=name,
                chat=entry.integer("chat", 0, low=-(2**62), high=2**62),
                command=command,
                every_s=every_s,
                cron=cron,
                notify=Notify(entry.choice("notify", "always", tuple(n.value for n in Notify))),
            )
        )
        entry.reject_unknown()
    return tuple(result)


def check_cron(expression: str, key: str) -> None:
    """Raise ConfigError unless ``expression`` is a five-field crontab line."""
    from apscheduler.triggers.cron import CronTrigger  # lazy: only configs with cron pay

    try:
        CronTrigger.from_crontab(expression)
    except ValueError as exc:
        raise ConfigError(key, f"not a valid crontab expression ({exc})") from None


def _mapping(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, "expected a mapping")
    return value


class _Section:
    """One mapping of the YAML tree, remembering which keys were read."""

    def __init__(self, path: str, raw: dict[str, Any], env: Mapping[str, str]) -> None:
        self.path, self.raw, self.env = path, raw, env
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def section(self, name: str) -> _Section:
        self.read.add(name)
        value = self.raw.get(name)
        key = self.key(name)
        return _Section(key, {} if value is None else _mapping(key, value), self.env)

    def mapping(self, name: str) -> dict[str, Any]:
        self.read.add(name)
        value = self.raw.get(name)
        return {} if value is None else _mapping(self.key(name), value)

    def reject_unknown(self) -> None:
        unknown = sorted(str(k) for k in self.raw if k not in self.read)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")

    def interpolate(self, key: str, value: object) -> object:
        if not isinstance(value, str):
            return value

        def substitute(match: re.Match[str]) -> str:
            if match[1] not in self.env:
                raise ConfigError(key, f"environment variable {match[1]} is not set")
            return self.env[match[1]]

        return _VAR.sub(substitute, value)

    def shown(self, key: str, value: object) -> str:
        """``value`` as a config error may show it: a secret key's only by its kind."""
        if key not in SECRET_KEYS:
            return repr(value)
        kind = {bool: "true/false", int: "a number", float: "a number", str: "a text"}
        kind |= {list: "a list", dict: "a mapping"}
        return f"{kind.get(type(value), 'a value')} (not shown: it is a secret)"

    def _get(self, name: str, default: T, convert: Callable[[object], T | None], want: str) -> T:
        self.read.add(name)
        key = self.key(name)
        if self.raw.get(name) is None:
            return default
        value = self.interpolate(key, self.raw[name])
        if key in SECRET_KEYS and isinstance(value, str):
            value = value.strip()
        converted = convert(value)
        if converted is None:
            hint = ", in quotes" if key in SECRET_KEYS and want == "a string" else ""
            raise ConfigError(key, f"expected {want}{hint}, got {self.shown(key, value)}")
        return converted

    def string(self, name: str, default: str) -> str:
        return self._get(name, default, lambda v: v if isinstance(v, str) else None, "a string")

    def optional_string(self, name: str) -> str | None:
        value = self._get(name, "", lambda v: v if isinstance(v, str) else None, "a string")
        return value or None

    def secret(self, name: str) -> str:
        key = self.key(name)
        value = self.optional_string(name) or self.env.get(SECRET_ENV[key], "").strip()
        if not value:
            raise ConfigError(key, f"missing (set it or {SECRET_ENV[key]} in the environment)")
        if not value.isprintable():
            raise ConfigError(key, "contains a line break or control character (not shown)")
        return value

    def url(self, name: str, default: str) -> str:
        value = self.string(name, default)
        if not re.match(r"https?://[^\s/]+", value):
            raise ConfigError(self.key(name), "expected an http:// or https:// URL")
        return value

    def optional_url(self, name: str) -> str | None:
        value = self.optional_string(name)
        if value is not None and not value.startswith("https://"):
            raise ConfigError(self.key(name), "expected an https:// URL")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self._get(name, default, _to_int, "an integer")
        if not low <= value <= high:
            raise ConfigError(
                self.key(name), f"expected {low}..{high}, got {self.shown(self.key(name), value)}"
            )
        return value

    def number(self, name: str, default: float) -> float:
        value = self._get(name, default, _to_float, "a number")
        if value <= 0:
            shown = self.shown(self.key(name), value)
            raise ConfigError(self.key(name), f"expected a positive number, got {shown}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return self._get(name, default, lambda v: v if isinstance(v, bool) else None, "true/false")

    def choice(self, name: str, default: T, allowed: tuple[T, ...]) -> T:
        self.read.add(name)
        value: object = self.interpolate(self.key(name), self.raw.get(name, default))
        if value is None:
            return default
        if isinstance(value, str) and all(isinstance(a, int) for a in allowed):
            value = _to_int(value)
        for option in allowed:
            if value == option and type(value) is type(option):
                return option
        options = " | ".join(str(a) for a in allowed)
        raise ConfigError(
            self.key(name), f"expected {options}, got {self.shown(self.key(name), value)}"
        )

    def id_list(self, name: str) -> list[int]:
        self.read.add(name)
        value = self.raw.get(name) or []
        if not isinstance(value, list):
            raise ConfigError(self.key(name), "expected a list of Telegram ids")
        ids = []
        for index, item in enumerate(value):
            number = _to_int(self.interpolate(f"{self.key(name)}[{index}]", item))
            if number is None:
                raise ConfigError(
                    f"{self.key(name)}[{index}]",
                    f"expected an integer id, got {self.shown(self.key(name), item)}",
                )
            ids.append(number)
        return ids


def _to_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return None


def _to_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
