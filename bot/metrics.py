"""Prometheus metrics and a health check, served on ``metrics.port`` when it is > 0.

Kept out of the hot path: the service and gateway only call the small observer
functions below; prometheus-client is imported only when metrics are switched on.
``/healthz`` answers 200 while polling (or the webhook) runs and the last gateway
status seen was not "down", 503 otherwise — what a load balancer or an uptime check
needs to know.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def serve_metrics(
    metrics: Metrics, healthy: Callable[[], bool], port: int, host: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on a daemon thread; ``shutdown()`` the result to stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics.render(), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                ok = healthy()
                self._answer(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
