"""Prometheus metrics, served at ``/metrics`` by the bot's web server (``http.port``).

Kept out of the hot path: the service, gateway and bridge only call the small observer
functions below; prometheus-client is imported only when the web server is on.

Every label value is one of a known, small set — never words a stranger typed, or each
``/zz0``, ``/zz1``… would add a series for good: a command is labelled by its name in
the command table (``unknown`` otherwise), a schedule by the name the config or the bot
gave it (``/schedule add`` names them ``s1``, ``s2``…), outcomes by their enum.
"""

from __future__ import annotations

from bot.commands import SPECS

UNKNOWN = "unknown"
_SCHEDULED = " (schedule "


def command_label(command: str) -> str:
    """``/wa`` for a command of the table, ``unknown`` for anything else."""
    return command if command.startswith("/") and command[1:] in SPECS else UNKNOWN


class Metrics:
    """The bot's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.commands = Counter(
            "whatsmate_bot_commands",
            "Commands handled",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.gateway_latency = Histogram(
            "whatsmate_bot_gateway_latency_seconds",
            "WhatsMate call latency",
            ["endpoint"],
            registry=self.registry,
        )
        self.gateway_errors = Counter(
            "whatsmate_bot_gateway_errors",
            "WhatsMate calls that failed",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.inbound = Counter(
            "whatsmate_bot_inbound_messages",
            "Inbound messages by channel and result (stored, repeated, rejected)",
            ["channel", "result"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "whatsmate_bot_alert_notifications",
            "Alertmanager notifications by status and what they did",
            ["status", "result"],
            registry=self.registry,
        )
        self.open_incidents = Gauge(
            "whatsmate_bot_open_incidents", "Incidents not yet resolved", registry=self.registry
        )
        self.pages = Counter(
            "whatsmate_bot_pages", "Pages sent, by outcome", ["outcome"], registry=self.registry
        )
        self.time_to_ack = Histogram(
            "whatsmate_bot_time_to_acknowledge_seconds",
            "From an incident's opening to its acknowledgement",
            buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 86400),
            registry=self.registry,
        )
        self.schedule_runs = Counter(
            "whatsmate_bot_schedule_runs",
            "Scheduled command runs",
            ["schedule"],
            registry=self.registry,
        )

    def observe_command(self, command: str, outcome: str, seconds: float) -> None:
        """``command`` is ``/name``, or ``/name (schedule <schedule name>)`` for a run."""
        command, scheduled, schedule = command.partition(_SCHEDULED)
        if scheduled:
            self.schedule_runs.labels(schedule.removesuffix(")")).inc()
        self.commands.labels(command_label(command), outcome).inc()

    def observe_gateway(self, endpoint: str, seconds: float, outcome: str) -> None:
        self.gateway_latency.labels(endpoint).observe(seconds)
        if not outcome.startswith("2"):
            self.gateway_errors.labels(endpoint, outcome).inc()

    def observe_inbound(self, channel: str, result: str) -> None:
        self.inbound.labels(channel, result).inc()

    def observe_notification(self, status: str, result: str) -> None:
        self.notifications.labels(status, result).inc()

    def observe_page(self, outcome: str) -> None:
        self.pages.labels(outcome).inc()

    def observe_ack(self, seconds: float) -> None:
        self.time_to_ack.observe(seconds)

    def observe_open_incidents(self, count: int) -> None:
        self.open_incidents.set(count)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
