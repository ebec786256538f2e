"""The config contract: exact keys, ${VAR} interpolation, secrets from env, errors name the key."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import load_config, parse_config
from bot.errors import ConfigError, RecipientError
from bot.logs import configure_logging, get_logger
from bot.vocabulary import Channel, Notify

ENV = {
    "TELEGRAM_BOT_TOKEN": "111:tok",
    "WHATSMATE_CLIENT_ID": "me@example.com",
    "WHATSMATE_CLIENT_SECRET": "sec",
}


def minimal(**extra: Any) -> dict[str, Any]:
    return {"access": {"admins": [1]}, **extra}


def error_key(raw: object, env: dict[str, str] = ENV) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env)
    assert "\n" not in str(caught.value)
    return caught.value.key


def test_spec_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(Path("config.example.yaml").read_text())
    config = load_config(path, ENV)
    assert config.telegram.token == "111:tok"
    assert config.whatsmate.client_secret == "sec"
    assert config.access.admins == {1001} and config.access.first_admin == 1001
    assert config.address_book.resolve("oncall")[1].number == "4411112222"
    assert config.schedules[0].every_s == 900 and config.schedules[0].notify is Notify.CHANGE
    assert "sec" in config.secrets and "111:tok" in config.secrets


def test_secrets_from_environment_and_interpolation() -> None:
    raw = minimal(telegram={"base_url": "http://127.0.0.1:${PORT}/bot"})
    config = parse_config(raw, {**ENV, "PORT": "8081"})
    assert config.telegram.base_url == "http://127.0.0.1:8081/bot"
    assert config.whatsmate.client_id == "me@example.com"


def test_secret_written_in_file_wins_over_environment() -> None:
    config = parse_config(minimal(telegram={"token": "999:file"}), ENV)
    assert config.telegram.token == "999:file"


def test_repr_hides_secrets() -> None:
    config = parse_config(minimal(), ENV)
    assert "sec" not in repr(config.whatsmate) and "111:tok" not in repr(config.telegram)


@pytest.mark.parametrize(
    ("raw", "env", "key"),
    [
        (minimal(), {}, "telegram.token"),
        (minimal(), {"TELEGRAM_BOT_TOKEN": "1:t"}, "whatsmate.client_id"),
        (minimal(whatsmate={"client_secret": "${NOPE}"}), ENV, "whatsmate.client_secret"),
        (minimal(acess={}), ENV, "acess"),
        (minimal(access={"admins": [1], "chat": [5]}), ENV, "access.chat"),
        (minimal(whatsmate={"timeout": 3}), ENV, "whatsmate.timeout"),
        (minimal(whatsmate={"timeout_s": "soon"}), ENV, "whatsmate.timeout_s"),
        (minimal(whatsmate={"timeout_s": -1}), ENV, "whatsmate.timeout_s"),
        (minimal(whatsmate={"whatsapp_instance": 2}), ENV, "whatsmate.whatsapp_instance"),
        (minimal(whatsmate={"whatsapp_endpoint": "bulk"}), ENV, "whatsmate.whatsapp_endpoint"),
        (minimal(whatsmate={"max_connections": 0}), ENV, "whatsmate.max_connections"),
        (minimal(whatsmate={"base_url": "api.whatsmate.net"}), ENV, "whatsmate.base_url"),
        ({"access": {"admins": ["root"]}}, ENV, "access.admins[0]"),
        ({"access": {"admins": 5}}, ENV, "access.admins"),
        (minimal(dry_run="yes"), ENV, "dry_run"),
        (minimal(confirm_over=True), ENV, "confirm_over"),
        (minimal(contacts={"alice": "12"}), ENV, "contacts.alice"),
        (minimal(contacts={"12345": "4412345678"}), ENV, "contacts.12345"),
        (minimal(groups={"oncall": ["nobody"]}), ENV, "groups.oncall"),
        (minimal(groups={"oncall": []}), ENV, "groups.oncall"),
        (minimal(log={"format": "xml"}), ENV, "log.format"),
        (minimal(metrics={"port": 70000}), ENV, "metrics.port"),
        (
            minimal(telegram={"webhook_url": "https://bot.example.com/hook"}),
            ENV,
            "telegram.secret_token",
        ),
        (minimal(schedules=[{"chat": 1, "command": "/status"}]), ENV, "schedules[0]"),
        (
            minimal(schedules=[{"every": "5x", "chat": 1, "command": "/status"}]),
            ENV,
            "schedules[0].every",
        ),
        (
            minimal(schedules=[{"cron": "61 * * * *", "chat": 1, "command": "/status"}]),
            ENV,
            "schedules[0].cron",
        ),
        (minimal(schedules=[{"every": "1m", "command": "/status"}]), ENV, "schedules[0].chat"),
        (
            minimal(schedules=[{"every": "1m", "chat": 1, "command": "status"}]),
            ENV,
            "schedules[0].command",
        ),
        (
            minimal(schedules=[{"every": "1m", "chat": 1, "command": "/status", "notfy": "x"}]),
            ENV,
            "schedules[0].notfy",
        ),
        (["not", "a", "mapping"], ENV, "(top level)"),
    ],
)
def test_every_problem_names_its_key(raw: object, env: dict[str, str], key: str) -> None:
    assert error_key(raw, env) == key


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", ENV)
    bad = tmp_path / "bad.yaml"
    bad.write_text("telegram: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad, ENV)


V3_GROUP = {"ops": {"name": "Ops Room", "admin": "+44 1234-5678"}}


def test_v3_config_with_gateway_groups() -> None:
    raw = minimal(
        whatsmate={"api_version": 3, "whatsapp_instance": 7, "telegram_instance": "12"},
        whatsapp_groups=V3_GROUP,
        telegram_groups={"ops-tg": {"name": "Ops", "admin": "4412345678"}},
    )
    config = parse_config(raw, ENV)
    assert (config.whatsmate.api_version, config.whatsmate.whatsapp_instance) == (3, 7)
    assert config.whatsmate.telegram_instance == 12
    (room,) = config.address_book.resolve("OPS", Channel.WHATSAPP)
    assert (room.group, room.number, room.written) == ("Ops Room", "4412345678", "OPS")


def v3(whatsmate: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return minimal(whatsmate={"api_version": 3, **(whatsmate or {})}, **extra)


def wa_group(**fields: Any) -> dict[str, Any]:
    return {"whatsapp_groups": {"g": {"name": "G", "admin": "12345", **fields}}}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(whatsapp_groups=V3_GROUP), "whatsapp_groups"),
        (minimal(telegram_groups=V3_GROUP), "telegram_groups"),
        (minimal(whatsmate={"api_version": 2}), "whatsmate.api_version"),
        (v3({"whatsapp_instance": 0}), "whatsmate.whatsapp_instance"),
        (v3({"telegram_instance": -1}), "whatsmate.telegram_instance"),
        (v3({"whatsapp_endpoint": "queue"}), "whatsmate.whatsapp_endpoint"),
        (v3(**wa_group(name="x" * 151)), "whatsapp_groups.g.name"),
        (v3(**wa_group(admin="12")), "whatsapp_groups.g.admin"),
        (v3(**wa_group(x=1)), "whatsapp_groups.g.x"),
        (v3(contacts={"g": "12345"}, **wa_group()), "whatsapp_groups.g"),
    ],
)
def test_v3_config_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    assert error_key(raw) == key


def test_a_whatsapp_group_with_tg_says_which_command() -> None:
    book = parse_config(v3(whatsapp_groups=V3_GROUP), ENV).address_book
    with pytest.raises(RecipientError, match="'ops' is a WhatsApp group: use /wa"):
        book.resolve("ops", Channel.TELEGRAM)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(metrics={"port": 9090}), "metrics.port"),
        (minimal(telegram={"port": 8443}), "telegram.port"),
        (minimal(telegram={"listen": "0.0.0.0"}), "telegram.listen"),
    ],
)
def test_keys_of_the_old_servers_name_http_port(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, ENV)
    assert caught.value.key == key and "http.port" in str(caught.value)


INBOUND = {"secret": "${WHATSMATE_INBOUND_SECRET}", "chat": -100500}


def test_inbound_and_webhook_secrets_from_the_environment() -> None:
    env = {**ENV, "WHATSMATE_INBOUND_SECRET": "a" * 16, "TELEGRAM_WEBHOOK_SECRET": "hook"}
    raw = minimal(
        http={"port": 8080},
        inbound={"chat": -100500},
        telegram={"webhook_url": "https://bot.example.com/telegram"},
    )
    config = parse_config(raw, env)
    assert config.inbound is not None and config.inbound.secret == "a" * 16
    assert config.telegram.secret_token == "hook"
    assert {"a" * 16, "hook"} <= set(config.secrets)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(inbound=INBOUND), "http.port"),
        (
            minimal(telegram={"webhook_url": "https://b.example/t", "secret_token": "x"}),
            "http.port",
        ),
        (minimal(http={"port": 1}, inbound={"secret": "short", "chat": 1}), "inbound.secret"),
        (
            minimal(http={"port": 1}, inbound={"secret": "x" * 15 + "/", "chat": 1}),
            "inbound.secret",
        ),
        (minimal(http={"port": 1}, inbound={"secret": "x" * 16}), "inbound.chat"),
        (minimal(http={"port": 70000}), "http.port"),
    ],
)
def test_http_and_inbound_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    assert error_key(raw, {**ENV, "WHATSMATE_INBOUND_SECRET": "s" * 16}) == key


def test_inbound_without_a_secret_names_it() -> None:
    assert error_key(minimal(http={"port": 1}, inbound={"chat": 1})) == "inbound.secret"


def test_database_url_and_its_password_is_a_secret() -> None:
    raw = minimal(database={"url": "postgresql://bot:pa55word@db.internal:5432/whatsmate"})
    config = parse_config(raw, ENV)
    assert config.database_url == "postgresql://bot:pa55word@db.internal:5432/whatsmate"
    assert "pa55word" in config.secrets
    assert error_key(minimal(database={"url": "mysql://db/x"})) == "database.url"
    assert error_key(minimal(database={"uri": "postgresql://db/x"})) == "database.uri"


def test_the_compose_file_runs_two_replicas_on_one_database() -> None:
    compose = yaml.safe_load(Path("deploy/compose.yaml").read_text())
    bots = {name: s for name, s in compose["services"].items() if name.startswith("bot-")}
    assert len(bots) == 2 and "db" in compose["services"]
    for service in bots.values():
        assert service["environment"]["DATABASE_URL"].endswith("@db:5432/whatsmate")
        assert service["volumes"] == ["./replicas.yaml:/app/config.yaml:ro"]
    env = {
        **ENV,
        "DATABASE_URL": "postgresql://whatsmate:x@db:5432/whatsmate",
        "WHATSMATE_ALERTS_SECRET": "a" * 20,
    }
    config = load_config(Path("deploy/replicas.yaml"), env)
    assert config.database_url == env["DATABASE_URL"] and config.http.port == 8080
    assert config.alerts is not None
    assert config.alerts.alertmanager_url == "http://alertmanager:9093"
    manager = compose["services"]["alertmanager"]
    assert manager["volumes"] == ["./alertmanager.yml:/etc/alertmanager/template.yml:ro"]
    routed = yaml.safe_load(Path("deploy/alertmanager.yml").read_text())
    urls = [hook["url"] for hook in routed["receivers"][0]["webhook_configs"]]
    assert urls == [f"http://{bot}:8080/alerts/__ALERTS_SECRET__" for bot in sorted(bots)]


# -- secrets: never shown, whitespace stripped; database URLs checked and redacted -------

WEBHOOK = {"webhook_url": "https://bot.example.com/telegram"}
SECRET_PLACES = [
    ("telegram.token", {"telegram": {"token": 1234567890123}}),
    ("telegram.secret_token", {"telegram": {**WEBHOOK, "secret_token": 1234567890123}}),
    ("whatsmate.client_id", {"whatsmate": {"client_id": 1234567890123}}),
    ("whatsmate.client_secret", {"whatsmate": {"client_secret": 1234567890123}}),
    ("whatsmate.client_secret", {"whatsmate": {"client_secret": [1234567890123]}}),
    ("inbound.secret", {"inbound": {"secret": 1234567890123, "chat": 1}}),
    ("database.url", {"database": {"url": 1234567890123}}),
]


@pytest.mark.parametrize(("key", "raw"), SECRET_PLACES)
def test_a_config_error_never_shows_a_secrets_value(key: str, raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(http={"port": 8080}, **raw), ENV)
    assert caught.value.key == key
    assert "1234567890123" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_secret_with_a_line_break_inside_is_refused_unshown() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(whatsmate={"client_secret": "abc\ndef-SECRET"}), ENV)
    assert caught.value.key == "whatsmate.client_secret"
    assert "SECRET" not in str(caught.value)


def test_whitespace_around_every_secret_is_stripped() -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": "111:tok\n",
        "WHATSMATE_CLIENT_ID": " me@example.com\n",
        "WHATSMATE_CLIENT_SECRET": "sec\r\n",
        "WHATSMATE_INBOUND_SECRET": "a" * 16 + "\n",
        "TELEGRAM_WEBHOOK_SECRET": "hook\n",
        "DB": "postgresql://bot:pw@db/x\n",
    }
    raw = minimal(
        http={"port": 8080},
        inbound={"chat": 1},
        telegram=WEBHOOK,
        database={"url": "${DB}"},
    )
    config = parse_config(raw, env)
    assert config.telegram.token == "111:tok" and config.telegram.secret_token == "hook"
    assert config.whatsmate.client_id == "me@example.com"
    assert config.whatsmate.client_secret == "sec"
    assert config.inbound is not None and config.inbound.secret == "a" * 16
    assert config.database_url == "postgresql://bot:pw@db/x"
    in_file = parse_config(minimal(telegram={"token": "  999:file\n"}), ENV)
    assert in_file.telegram.token == "999:file"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bot:pa55word@db:54x2/whatsmate",
        "postgresql://bot:pa55word@db:99999/whatsmate",
        "postgresql://bot:pa55word@[::1/whatsmate",
        "postgresql://bot:pa55word@h1,,h2/whatsmate",
        "postgresql://bot:pa55@word@db/whatsmate",
        "postgresql://bot:pa55word@db/whatsmate?port=5x",
        "postgresql://bot:pa55word@db/whatsmate?sslmode=sometimes",
        "postgresql://bot:pa55word@db/whatsmate?a=1&&b",
        "postgresql://bot:pa55word@db/whatsmate?password",
        "garbage pa55word",
    ],
)
def test_a_malformed_database_url_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(database={"url": url}), ENV)
    assert caught.value.key == "database.url"
    assert "pa55" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h1:5432,h2:5433/whatsmate",
        "postgres://[::1]:5432/whatsmate",
        "postgresql:///whatsmate?host=/run/postgresql",
        "postgresql://db/whatsmate?sslmode=verify-full&port=5433",
    ],
)
def test_database_urls_postgresql_takes_are_accepted(url: str) -> None:
    assert parse_config(minimal(database={"url": url}), ENV).database_url == url


@pytest.mark.parametrize(
    ("url", "passwords"),
    [
        ("postgresql://:pw-only@db/x", {"pw-only"}),
        ("postgresql://bot@db/x?sslmode=require&password=in-query", {"in-query"}),
        ("postgresql://bot:p%40ss%2Fword@db/x", {"p%40ss%2Fword", "p@ss/word"}),
        ("postgresql://bot:pw1@db/x?password=pw%232", {"pw1", "pw%232", "pw#2"}),
    ],
)
def test_every_form_of_password_in_the_url_is_a_secret(url: str, passwords: set[str]) -> None:
    config = parse_config(minimal(database={"url": url}), ENV)
    assert passwords <= set(config.secrets)


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("connecting to postgresql://bot:pw@db:5432/x", "pw@"),
        ("dsn postgresql://:zz@db/x failed", ":zz@"),
        ("postgresql://bot:p@ss@db/x", "p@ss"),
        ("postgresql://bot@db/x?sslmode=require&password=qq", "qq"),
        ("host=db password=kw user=bot", "kw"),
    ],
)
def test_logs_redact_passwords_in_urls_whatever_their_length(line: str, hidden: str) -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    get_logger("test").error("database_problem", detail=line)
    logged = json.loads(stream.getvalue())["detail"]
    assert hidden not in logged and "[REDACTED]" in logged


ALERTS = {
    "secret": "alerts-secret-0123456789",
    "chat": -100500,
    "routes": [{"match": {"severity": "critical"}, "escalation": "primary"}],
    "escalations": {
        "primary": {
            "steps": [
                {"page": "alice"},
                {"wait": "5m"},
                {"page": "4477009001", "via": "telegram"},
                {"wait": "1s"},
                {"page": "oncall"},
            ],
            "repeat": 1,
        }
    },
}
BOOK = {"contacts": {"alice": "4412345678"}, "groups": {"oncall": ["alice", "4411112222"]}}


def alerts(**changes: Any) -> dict[str, Any]:
    return minimal(http={"port": 8080}, alerts={**ALERTS, **changes}, **BOOK)


def primary(**changes: Any) -> dict[str, Any]:
    return {"primary": {**ALERTS["escalations"]["primary"], **changes}}


def test_alerts_config_resolves_steps_and_routes() -> None:
    config = parse_config(alerts(alertmanager_url="http://alertmanager:9093/"), ENV)
    assert config.alerts is not None
    assert config.alerts.alertmanager_url == "http://alertmanager:9093"
    assert config.alerts.notify_resolved is True
    escalation = config.alerts.escalation_for({"severity": "critical", "job": "db"})
    assert escalation is not None and escalation.repeat == 1
    page, wait, tg, _, group = escalation.steps
    assert [r.number for r in page.recipients] == ["4412345678"]  # type: ignore[union-attr]
    assert wait.seconds == 300  # type: ignore[union-attr]
    assert tg.channel is Channel.TELEGRAM  # type: ignore[union-attr]
    assert [r.number for r in group.recipients] == ["4412345678", "4411112222"]  # type: ignore[union-attr]
    assert len(escalation.chain) == 10
    assert config.alerts.escalation_for({"severity": "warning"}) is None
    assert "alerts-secret-0123456789" in config.secrets
    assert "alerts-secret" not in repr(config.alerts)


def test_alerts_secret_from_the_environment_stripped() -> None:
    raw = alerts()
    del raw["alerts"]["secret"]
    config = parse_config(raw, {**ENV, "WHATSMATE_ALERTS_SECRET": "s" * 20 + "\n"})
    assert config.alerts is not None and config.alerts.secret == "s" * 20


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(alerts=ALERTS, **BOOK), "http.port"),
        (alerts(secret="short-secret"), "alerts.secret"),
        (alerts(secret="x" * 15 + "/"), "alerts.secret"),
        (alerts(secret=12345678901234567890), "alerts.secret"),
        (alerts(secret=""), "alerts.secret"),
        (alerts(chat=None), "alerts.chat"),
        (alerts(chats=[1]), "alerts.chats"),
        (alerts(notify_resolved="yes"), "alerts.notify_resolved"),
        (alerts(alertmanager_url="alertmanager:9093"), "alerts.alertmanager_url"),
        (
            alerts(routes=[{"match": {}, "escalation": "secondary"}]),
            "alerts.routes[0].escalation",
        ),
        (alerts(routes={"match": {}}), "alerts.routes"),
        (
            alerts(routes=[{"match": {"x": [1]}, "escalation": "primary"}]),
            "alerts.routes[0].match.x",
        ),
        (alerts(routes=[{"escalation": "primary", "when": 1}]), "alerts.routes[0].when"),
        (alerts(escalations=primary(repeat=6)), "alerts.escalations.primary.repeat"),
        (alerts(escalations=primary(repeat=-1)), "alerts.escalations.primary.repeat"),
        (alerts(escalations=primary(steps=[])), "alerts.escalations.primary.steps"),
        (
            alerts(escalations=primary(steps=[{"wait": "0s"}])),
            "alerts.escalations.primary.steps[0].wait",
        ),
        (
            alerts(escalations=primary(steps=[{"wait": "2d"}])),
            "alerts.escalations.primary.steps[0].wait",
        ),
        (
            alerts(escalations=primary(steps=[{"wait": "soon"}])),
            "alerts.escalations.primary.steps[0].wait",
        ),
        (
            alerts(escalations=primary(steps=[{"page": "nobody"}])),
            "alerts.escalations.primary.steps[0].page",
        ),
        (
            alerts(escalations=primary(steps=[{"page": "12"}])),
            "alerts.escalations.primary.steps[0].page",
        ),
        (
            alerts(escalations=primary(steps=[{"page": "alice", "via": "sms"}])),
            "alerts.escalations.primary.steps[0].via",
        ),
        (
            alerts(escalations=primary(steps=[{"page": "alice", "wait": "1m"}])),
            "alerts.escalations.primary.steps[0]",
        ),
        (
            alerts(escalations=primary(steps=[{"wait": "1m", "via": "telegram"}])),
            "alerts.escalations.primary.steps[0].via",
        ),
        (alerts(escalations=primary(retry=1)), "alerts.escalations.primary.retry"),
    ],
)
def test_alerts_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, ENV)
    assert caught.value.key == key
    assert "\n" not in str(caught.value)
    secret = raw["alerts"].get("secret")
    if secret:
        assert str(secret) not in str(caught.value)


def test_alerts_without_a_secret_names_the_variable() -> None:
    raw = alerts()
    del raw["alerts"]["secret"]
    with pytest.raises(ConfigError, match="WHATSMATE_ALERTS_SECRET"):
        parse_config(raw, ENV)


def test_the_example_alerts_section_loads(tmp_path: Path) -> None:
    lines = Path("config.example.yaml").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("# alerts:")))
    section = "\n".join(line[2:] for line in lines[start:])
    raw = {**yaml.safe_load(Path("config.example.yaml").read_text()), **yaml.safe_load(section)}
    config = parse_config(raw, {**ENV, "WHATSMATE_ALERTS_SECRET": "a" * 16})
    assert config.alerts is not None and set(config.alerts.escalations) == {"primary", "team"}
