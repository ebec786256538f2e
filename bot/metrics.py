"""Prometheus metrics, served at ``/metrics`` by the bot's web server (``http.port``).

Kept out of the hot path: the service, gateway and bridge only call the small observer
functions below; prometheus-client is imported only when the web server is on.
"""

from __future__ import annotations


class Metrics:
    """The bot's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

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
        self.schedule_runs = Counter(
            "whatsmate_bot_schedule_runs",
            "Scheduled command runs",
            ["schedule"],
            registry=self.registry,
        )

    def observe_command(self, command: str, outcome: str, seconds: float) -> None:
        if "(schedule " in command:
            self.schedule_runs.labels(command.split("(schedule ")[1].rstrip(")")).inc()
            command = command.split(" ")[0]
        self.commands.labels(command, outcome).inc()

    def observe_gateway(self, endpoint: str, seconds: float, outcome: str) -> None:
        self.gateway_latency.labels(endpoint).observe(seconds)
        if not outcome.startswith("2"):
            self.gateway_errors.labels(endpoint, outcome).inc()

    def observe_inbound(self, channel: str, result: str) -> None:
        self.inbound.labels(channel, result).inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
