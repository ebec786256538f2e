"""A WhatsMate look-alike inside the process, for ``python -m bot demo``.

It is an ``httpx.MockTransport`` handler, so the real gateway client, with its real
request building and error mapping, runs against it — no network, no credentials.
It answers as the API reference (v1) and SPEC.md (v3) describe — a v3 send gets a job
id, a PDF job completes on its second check — with a 400 for a malformed number, and
records every request it got, so the demo can show what would have been sent.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

LANGUAGES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ar": "Arabic",
    "ja": "Japanese",
    "zh-CN": "Chinese (Simplified)",
}
_WORDS = {
    "hello": {"fr": "bonjour", "de": "hallo", "es": "hola", "it": "ciao"},
    "server": {"fr": "serveur", "de": "Server", "es": "servidor"},
    "is": {"fr": "est", "de": "ist", "es": "está"},
    "down": {"fr": "en panne", "de": "ausgefallen", "es": "caído"},
}


@dataclass
class Sandbox:
    """Callable as an httpx transport handler; ``received`` lists (method, path, json)."""

    received: list[tuple[str, str, Any]] = field(default_factory=list)
    _jobs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _checks: dict[str, int] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        shown = f"{path}?{request.url.query.decode()}" if request.url.query else path
        self.received.append((request.method, shown, body))
        if not request.headers.get("X-WM-CLIENT-SECRET"):
            return httpx.Response(401, json={"message": "missing credentials"})
        if request.method == "GET" and path == "/v1/gateway/status":
            return httpx.Response(200, json={"status": "up"})
        if match := re.fullmatch(r"/v1/telegram/status/(\d+)", path):
            return httpx.Response(200, json={"status": "up", "instance": int(match[1])})
        if path == "/v1/translation/supported-codes":
            return httpx.Response(200, json=LANGUAGES)
        if path == "/v1/translation/translate" and isinstance(body, dict):
            target = str(body.get("toLang"))
            words = str(body.get("text", "")).split()
            return httpx.Response(
                200, text=" ".join(_WORDS.get(w.lower(), {}).get(target, w) for w in words)
            )
        if path == "/v1/pdf/job/submit":
            return httpx.Response(200, json={"status": "submitted", "id": self._job("pdf-")})
        if match := re.fullmatch(r"/v1/pdf/job/check/(.+)", path):
            self._checks[match[1]] = checks = self._checks.get(match[1], 0) + 1
            return httpx.Response(200, json={"status": "Completed" if checks > 1 else "Processing"})
        if path.startswith("/v1/pdf/job/retrieve_text/"):
            return httpx.Response(200, text="Sandbox PDF, page 1:\nAll systems nominal.")
        if request.method == "POST" and isinstance(body, dict) and "group_name" in body:
            return httpx.Response(200, json={"status": "queued", "id": self._job("")})
        if request.method == "POST" and isinstance(body, dict):
            numbers = body.get("numbers") or [body.get("number")]
            bad = [n for n in numbers if not re.fullmatch(r"\d{5,15}", str(n))]
            if bad:
                return httpx.Response(400, json={"message": f"invalid number {bad[0]}"})
            if path.startswith("/v3/"):
                return httpx.Response(200, json={"status": "queued", "id": self._job("")})
            if path.startswith("/v1/whatsapp/"):
                return httpx.Response(200, json={"status": "queued"})
            if path.startswith("/v1/telegram/"):
                return httpx.Response(200, json={"success": True, "status": "sent"})
        return httpx.Response(
            404,
            text="<html><body><h1>404 Not Found</h1></body></html>",
            headers={"content-type": "text/html"},
        )

    def _job(self, prefix: str) -> str:
        return f"{prefix}{next(self._jobs):04d}-5b1d-4c2a-9e7f-sandbox"
