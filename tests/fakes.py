"""Loopback fakes of the Telegram Bot API and of WhatsMate: real HTTP servers on 127.0.0.1.

They answer like the real services, record every request they get, and can be told to
misbehave per endpoint and per call (status, garbage body, delay, hang, dropped
connection). Tests assert on what reached them; the bot under test is the real one.
The HTTP/1.1 server underneath is deliberately tiny (keep-alive, Content-Length and
chunked bodies) so that a fault can be injected at any point of an exchange.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.parser
import email.policy
import itertools
import json
import re
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# -- a minimal HTTP/1.1 server ---------------------------------------------------------


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    tag: str = ""  # FakeTelegram: which replica asked (a /r<name> prefix of the path)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunked: bool = False  # sent in chunks, with no Content-Length: the size is unknown

    @classmethod
    def of_json(cls, data: Any, status: int = 200) -> HttpResponse:
        return cls(status, json.dumps(data).encode())

    @classmethod
    def of_text(
        cls, text: str, status: int = 200, content_type: str = "text/plain"
    ) -> HttpResponse:
        return cls(status, text.encode(), content_type)


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour: ``hang`` never answers, ``drop`` closes after the request,
    ``hold`` answers normally once the test calls ``release()``; ``taken-drop`` and
    ``taken-hang`` do what was asked (a sendMessage is posted) and then close without an
    answer, or never answer: the answer is lost, not the request."""

    kind: str  # "response" | "hang" | "drop" | "delay" | "hold" | "taken-drop" | "taken-hang"
    response: HttpResponse | None = None
    delay_s: float = 0.0


def answer(status: int, body: Any = None, content_type: str = "application/json") -> Fault:
    data = (
        body
        if isinstance(body, bytes)
        else (
            json.dumps(body).encode() if content_type == "application/json" else str(body).encode()
        )
    )
    return Fault("response", HttpResponse(status, data, content_type))


HANG = Fault("hang")
DROP = Fault("drop")
HOLD = Fault("hold")
TAKEN_THEN_DROP = Fault("taken-drop")
TAKEN_THEN_HANG = Fault("taken-hang")


def delay(seconds: float) -> Fault:
    return Fault("delay", delay_s=seconds)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class HttpServer:
    """Serves ``handle`` on 127.0.0.1; faults scripted by path regex, consumed in order."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.latency_s = 0.0
        self.changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._released = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    def fail(self, path_pattern: str, *faults: Fault) -> None:
        """The next requests whose path matches ``path_pattern`` get ``faults``, in order."""
        self._faults[path_pattern].extend(faults)

    def clear_faults(self) -> None:
        """Forget every scripted fault not yet consumed."""
        self._faults.clear()

    def release(self) -> None:
        """Let every ``HOLD``-faulted request (held now or later) be answered."""
        self._released.set()

    def calls(self, path_pattern: str = "") -> list[HttpRequest]:
        return [r for r in self.requests if re.search(path_pattern, r.path)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked on every recorded request)."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def prepare(self, request: HttpRequest) -> None:
        """Read what the request says about itself before it is recorded (a waiter may
        look at it before it is handled)."""

    async def handle(self, request: HttpRequest) -> HttpResponse:  # pragma: no cover
        raise NotImplementedError

    def _next_fault(self, path: str) -> Fault | None:
        for pattern, queue in self._faults.items():
            if queue and re.search(pattern, path):
                return queue.popleft()
        return None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.prepare(request)
                # the fault is taken as the request is recorded: a test that sees the
                # request and then clears or adds faults cannot change what it gets
                fault = self._next_fault(request.path)
                self.requests.append(request)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await self.notify()
                    answering = self._respond(request, fault)
                    response = await self._unless_client_leaves(reader, answering)
                finally:
                    self.in_flight -= 1
                if response is None:
                    return
                framing = (
                    "Transfer-Encoding: chunked"
                    if response.chunked
                    else f"Content-Length: {len(response.body)}"
                )
                head = (
                    f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
                    f"Content-Type: {response.content_type}\r\n{framing}\r\n\r\n"
                )
                writer.write(head.encode())
                await _write_body(writer, response)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _unless_client_leaves(
        reader: asyncio.StreamReader, answer: Awaitable[HttpResponse | None]
    ) -> HttpResponse | None:
        """Like a real server: a client that hangs up (or is killed) ends its request.

        Clients here never pipeline, so any byte before the answer means "gone" too.
        """
        responding = asyncio.ensure_future(answer)
        leaving = asyncio.ensure_future(reader.read(1))
        await asyncio.wait({responding, leaving}, return_when=asyncio.FIRST_COMPLETED)
        if responding.done():
            leaving.cancel()
            await asyncio.gather(leaving, return_exceptions=True)  # the reader is free again
            return responding.result()
        responding.cancel()
        await asyncio.gather(responding, return_exceptions=True)
        return None

    async def _respond(self, request: HttpRequest, fault: Fault | None) -> HttpResponse | None:
        """The answer to ``request`` after its scripted fault, if any; None: close, no answer."""
        if fault is not None and fault.kind == "drop":
            return None
        if fault is not None and fault.kind in ("taken-drop", "taken-hang"):
            await self.handle(request)  # done, but the answer never reaches the client
            if fault.kind == "taken-hang":
                await self._closing.wait()
            return None
        if fault is not None and fault.kind == "hang":
            await self._closing.wait()
            return None
        if fault is not None and fault.kind == "hold":
            await self._released.wait()
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault is not None and fault.response:
            return fault.response
        return await self.handle(request)


async def _write_body(writer: asyncio.StreamWriter, response: HttpResponse) -> None:
    if not response.chunked:
        writer.write(response.body)
        await writer.drain()
        return
    for start in range(0, len(response.body), 256 * 1024):
        piece = response.body[start : start + 256 * 1024]
        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return HttpRequest(method, urllib.parse.unquote(target), headers, body)


# -- WhatsMate ------------------------------------------------------------------------

LANGUAGES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish"}


# What WhatsMate's v3 reference documents, written out independently of the bot's table:
# the content fields of each endpoint (+: required, ?: optional) and the limits.
V3_CONTENT = {
    ("whatsapp", "text"): {"message": "+"},
    ("whatsapp", "url"): {"url": "+"},
    ("whatsapp", "image"): {"image": "+", "caption": "?"},
    ("whatsapp", "document"): {"document": "+", "filename": "+", "caption": "?"},
    ("telegram", "text"): {"message": "+"},
    ("telegram", "image"): {"image": "+", "caption": "?"},
    ("telegram", "document"): {"document": "+", "filename": "+", "caption": "?"},
    ("telegram", "audio"): {"audio": "+", "filename": "+", "caption": "?"},
    ("telegram", "voice_note"): {"voice_note": "+", "filename": "+", "caption": "?"},
}
V3_TEXT_LIMITS = {"message": 900, "url": 900, "caption": 250, "group_name": 150}
V3_MEDIA_LIMITS = {"image": 6_000_000, "document": 9_000_000, "audio": 3_000_000}
V3_MEDIA_LIMITS["voice_note"] = 3_000_000
_V3_PATH = re.compile(
    r"/v3/(whatsapp|telegram)/(single|group)/(text|url|image|document|audio|voice_note)"
    r"/message/([0-9]+)"
)


def v3_problem(channel: str, target: str, kind: str, body: Any) -> str | None:
    """Why WhatsMate v3 would refuse this body (None: it would take it)."""
    fields = V3_CONTENT.get((channel, kind))
    if fields is None:
        return f"no {kind} endpoint for {channel}"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    wanted = dict(fields)
    if target == "single":
        wanted["number"] = "+"
    else:
        wanted["group_name"] = "+"
        if kind in ("text", "url") or channel == "telegram":
            wanted["group_admin"] = "+"
    for name, need in wanted.items():
        if need == "+" and name not in body:
            return f"{name} is required"
    for name, value in body.items():
        if name not in wanted:
            return f"unknown field {name}"
        if not isinstance(value, str):
            return f"{name} must be a string"
        if name in ("number", "group_admin") and not re.fullmatch(r"[0-9]{5,15}", value):
            return f"{name} must be digits only"
        if name in V3_TEXT_LIMITS and not 0 < len(value) <= V3_TEXT_LIMITS[name]:
            return f"{name} must have 1-{V3_TEXT_LIMITS[name]} characters"
        if name == "url" and not re.fullmatch(r"https?://\S+", value):
            return "url must be an http(s) URL"
        if name in V3_MEDIA_LIMITS:
            if not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", value) or len(value) % 4:
                return f"{name} is not base64"
            if len(value) > V3_MEDIA_LIMITS[name]:
                return f"{name} is too large"
        if name == "filename" and not re.fullmatch(r"[A-Za-z0-9 _.-]{1,80}", value):
            return "filename has characters that are not allowed"
    return None


class FakeWhatsMate(HttpServer):
    """Answers like api.whatsmate.net: statuses, sends (v1 and v3), translation, language
    codes, PDF jobs. v3 bodies are checked against the documented field rules."""

    def __init__(
        self, client_id: str = "ops@example.com", client_secret: str = "s3cr3t-wm"
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.whatsapp_status = "up"
        self.telegram_status = "up"
        self.codes: dict[str, str] = dict(LANGUAGES)
        self.job_ids: list[str] = []
        self.pdf_statuses: deque[str] = deque()  # answers of the check endpoint, then Completed
        self.pdf_text = "Page 1: all systems nominal."
        self.status_offered = True  # False: the status endpoints answer 404, as under v3
        self._jobs = itertools.count(1)

    def sends(self) -> list[HttpRequest]:
        return [r for r in self.requests if r.method == "POST" and "/translation/" not in r.path]

    def _job(self, prefix: str) -> str:
        job = f"{prefix}{next(self._jobs):04d}-7f3a9c1e-{len(self.job_ids)}"
        self.job_ids.append(job)
        return job

    def _v3(self, match: re.Match[str], request: HttpRequest) -> HttpResponse:
        channel, target, kind, instance = match.groups()
        try:
            body = request.json()
        except ValueError:
            body = None
        problem = v3_problem(channel, target, kind, body)
        if int(instance) < 1:
            problem = "instance numbers start at 1"
        if problem:
            return HttpResponse.of_json({"error_message": problem}, 400)
        return HttpResponse.of_json({"status": "queued", "id": self._job("")})

    def _pdf(self, path: str) -> HttpResponse:
        route, _, query = path.partition("?")
        if route == "/v1/pdf/job/submit":
            url = urllib.parse.parse_qs(query).get("url", [""])[0]
            if not re.fullmatch(r"https?://\S+", url):
                return HttpResponse.of_json({"error_message": "url is required"}, 400)
            return HttpResponse.of_json({"status": "submitted", "id": self._job("pdf-")})
        job = route.rsplit("/", 1)[1]
        if job not in self.job_ids:
            return HttpResponse.of_json({"error_message": f"no job {job}"}, 400)
        if route.startswith("/v1/pdf/job/check/"):
            status = self.pdf_statuses.popleft() if self.pdf_statuses else "Completed"
            return HttpResponse.of_json({"id": job, "status": status})
        return HttpResponse.of_text(self.pdf_text)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if (
            request.headers.get("x-wm-client-id") != self.client_id
            or request.headers.get("x-wm-client-secret") != self.client_secret
        ):
            return HttpResponse.of_json({"message": "Invalid client id or secret"}, 401)
        path = request.path
        if "/status" in path and not self.status_offered:
            return HttpResponse.of_text("<html><body>Not Found</body></html>", 404, "text/html")
        if path == "/v1/gateway/status":
            return HttpResponse.of_json({"status": self.whatsapp_status})
        if match := re.fullmatch(r"/v1/telegram/status/(\d+)", path):
            return HttpResponse.of_json({"status": self.telegram_status, "instance": int(match[1])})
        if path == "/v1/translation/supported-codes":
            return HttpResponse.of_json(self.codes)
        if path == "/v1/translation/translate":
            body = request.json()
            return HttpResponse.of_text(f"[{body['toLang']}] {body['text']}")
        if match := _V3_PATH.fullmatch(path):
            return self._v3(match, request)
        if path.startswith(("/v1/pdf/job/submit?", "/v1/pdf/job/check/", "/v1/pdf/job/retrieve")):
            return self._pdf(path)
        if re.fullmatch(r"/v1/whatsapp/(single/message/[01]|queue/message)", path):
            return HttpResponse.of_json({"status": "queued"})
        if re.fullmatch(
            r"/v1/telegram/(single|batch)/(message|location|(photo|audio|document)/binary)/0", path
        ):
            return HttpResponse.of_json({"success": True, "status": "Message sent"})
        return HttpResponse.of_text("<html><body>Not Found</body></html>", 404, "text/html")


# -- Telegram Bot API -------------------------------------------------------------------


def telegram_error(status: int, description: str, **parameters: Any) -> Fault:
    """An error answer as the Bot API gives it (``parameters`` as ResponseParameters)."""
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return answer(status, body)


TEXT_MAX = 4096  # characters in one message; longer: 400 "message is too long"
TOO_LONG = telegram_error(400, "Bad Request: message is too long")
KICKED = telegram_error(403, "Forbidden: bot was kicked from the supergroup chat")


def migrated(to_chat: int) -> Fault:
    """What the Bot API answers for a group that became the supergroup ``to_chat``."""
    return telegram_error(
        400, "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=to_chat
    )


BOT_ID = 4242
BOT_USERNAME = "whatsmate_test_bot"


@dataclass
class Sent:
    """A message the bot posted (or edited), as the fake recorded it."""

    method: str
    chat_id: int
    text: str
    message_id: int
    params: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.perf_counter)

    def as_message(self) -> dict[str, Any]:
        """The bot's message as Telegram shows it inside an update (e.g. replied to)."""
        return {
            "message_id": self.message_id,
            "date": int(time.time()),
            "chat": {"id": self.chat_id, "type": "supergroup", "title": "Team"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Bot"},
            "text": self.text,
        }

    @property
    def reply_to(self) -> int | None:
        """The message this one was posted under, if any."""
        parameters = self.params.get("reply_parameters") or {}
        return int(parameters["message_id"]) if "message_id" in parameters else None

    @property
    def buttons(self) -> list[tuple[str, str]]:
        markup = self.params.get("reply_markup") or {}
        return [
            (b["text"], b["callback_data"])
            for row in markup.get("inline_keyboard", [])
            for b in row
        ]


class FakeTelegram(HttpServer):
    """Answers like api.telegram.org for the methods the bot uses; users are simulated."""

    def __init__(self, token: str = "123456:TEST-telegram-token") -> None:
        super().__init__()
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.sent: list[Sent] = []
        self.files: dict[str, bytes] = {}
        self.unsized: set[str] = set()  # files whose size Telegram does not tell
        self.commands: list[dict[str, Any]] = []
        self.callback_answers: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._new_update = asyncio.Event()
        self._confirmed = 0
        self._polling: dict[str, int] = {}  # replica tag -> getUpdates in progress
        self._refusing: dict[int, Fault] = {}  # chat id -> how Telegram refuses it, for good
        self.conflicts = 0  # getUpdates while another replica's was in progress (409)

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    def replica_urls(self, name: str) -> dict[str, str]:
        """``telegram.base_url``/``base_file_url`` that tag requests as replica ``name``."""
        return {
            "base_url": f"{self.url}/r{name}/bot",
            "base_file_url": f"{self.url}/r{name}/file/bot",
        }

    def refuse(self, chat_id: int, fault: Fault) -> None:
        """From now on every call naming ``chat_id`` gets ``fault``'s answer (``KICKED``,
        ``migrated(...)``), as Telegram answers for a chat the bot can no longer use."""
        self._refusing[chat_id] = fault

    def pollers(self) -> set[str]:
        """The replicas that have called getUpdates."""
        return {r.tag for r in self.calls("/getUpdates$")}

    # simulated users

    def message(
        self,
        text: str,
        *,
        user: int,
        chat: int | None = None,
        caption: bool = False,
        reply_to: dict[str, Any] | None = None,
        **media: Any,
    ) -> dict[str, Any]:
        """Queue a message from ``user`` in ``chat`` (default: their private chat)."""
        message = self._message(text, user, chat, caption, **media)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self._push({"message": message})
        return message

    def _message(
        self, text: str, user: int, chat: int | None, caption: bool = False, **media: Any
    ) -> dict[str, Any]:
        chat_id = user if chat is None else chat
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {
                "id": chat_id,
                "type": "private" if chat_id > 0 else "supergroup",
                **({"first_name": "U"} if chat_id > 0 else {"title": "Team"}),
            },
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
            ("caption" if caption else "text"): text,
            **_command_entities(text, caption),
            **media,
        }

    def undelivered(self, text: str, *, user: int, chat: int | None = None) -> dict[str, Any]:
        """An update with a message, as a dead poller may have journaled it: never queued."""
        return {"update_id": next(self._update_ids), "message": self._message(text, user, chat)}

    def press(self, sent: Sent, label: str, *, user: int) -> None:
        """``user`` presses the inline button ``label`` on the bot's message ``sent``."""
        data = dict(sent.buttons)[label]
        self._push(
            {
                "callback_query": {
                    "id": str(next(self._update_ids)),
                    "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
                    "chat_instance": "1",
                    "data": data,
                    "message": sent.as_message(),
                }
            }
        )

    def add_file(self, file_id: str, content: bytes, *, sized: bool = True) -> None:
        """A file the bot may download; ``sized=False``: getFile omits its size and the
        download comes chunked, so only counting what arrives tells how big it is."""
        self.files[file_id] = content
        if not sized:
            self.unsized.add(file_id)

    def _push(self, update: dict[str, Any]) -> None:
        self.updates.append({"update_id": next(self._update_ids), **update})
        self._new_update.set()

    def replies(self, chat: int | None = None) -> list[Sent]:
        return [
            s
            for s in self.sent
            if s.method == "sendMessage" and (chat is None or s.chat_id == chat)
        ]

    def attempts(self, method: str, chat: int) -> int:
        """Calls of ``method`` into ``chat``, answered or not (refused, dropped, held)."""
        return sum(
            1 for r in self.calls(f"/{method}$") if str(_form(r).get("chat_id")) == str(chat)
        )

    async def wait_replies(
        self, count: int, chat: int | None = None, timeout: float = 10.0
    ) -> list[Sent]:
        await self.wait_for(lambda: len(self.replies(chat)) >= count, timeout)
        return self.replies(chat)

    async def wait_polling(self) -> None:
        await self.wait_for(lambda: bool(self.calls("/getUpdates$")))

    # the Bot API

    def prepare(self, request: HttpRequest) -> None:
        """Which replica asked: tagged as it is recorded, so ``pollers()`` never sees an
        untagged getUpdates that is recorded but not yet handled."""
        if tagged := re.match(r"/r(\w+)(/(?:file/)?bot.*)", request.path):
            request.tag, request.path = tagged[1], tagged[2]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(f"/file/bot{self.token}/"):
            name = request.path.rsplit("/", 1)[1]
            if name in self.files:
                chunked = name in self.unsized
                return HttpResponse(200, self.files[name], "application/octet-stream", chunked)
            return HttpResponse.of_text("not found", 404)
        match = re.fullmatch(rf"/bot{re.escape(self.token)}/(\w+)", request.path)
        if not match:
            return HttpResponse.of_json(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, 401
            )
        method, params = match[1], _form(request)
        if method == "getUpdates":
            return await self._poll(request.tag, params)
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            return HttpResponse.of_json({"ok": True, "result": True})
        refusal = self._refusing.get(int(params.get("chat_id") or 0))
        if method == "sendMessage" and len(str(params.get("text", ""))) > TEXT_MAX:
            refusal = TOO_LONG
        if refusal is not None and refusal.response is not None:
            return refusal.response
        result = await handler(params)
        await self.notify()
        return HttpResponse.of_json({"ok": True, "result": result})

    async def api_getMe(self, params: dict[str, Any]) -> Any:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "WhatsMate",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _poll(self, tag: str, params: dict[str, Any]) -> HttpResponse:
        """Like Telegram: one getUpdates consumer per bot; a second one gets 409."""
        if any(n for other, n in self._polling.items() if other != tag):
            self.conflicts += 1
            conflict = "Conflict: terminated by other getUpdates request"
            return HttpResponse.of_json(
                {"ok": False, "error_code": 409, "description": conflict}, 409
            )
        self._polling[tag] = self._polling.get(tag, 0) + 1
        try:
            result = await self.api_getUpdates(params)
        finally:
            self._polling[tag] -= 1
        await self.notify()
        return HttpResponse.of_json({"ok": True, "result": result})

    async def api_getUpdates(self, params: dict[str, Any]) -> Any:
        # Like Telegram: asking with offset N confirms (forgets) every update before N.
        self._confirmed = max(self._confirmed, int(params.get("offset") or 0))
        offset = self._confirmed
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while True:
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return pending[:100]
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())

    async def api_sendMessage(self, params: dict[str, Any]) -> Any:
        return self._record("sendMessage", params)

    async def api_sendDocument(self, params: dict[str, Any]) -> Any:
        return self._record("sendDocument", {**params, "text": params.get("caption", "")})

    async def api_editMessageText(self, params: dict[str, Any]) -> Any:
        return self._record("editMessageText", params)

    async def api_setMyCommands(self, params: dict[str, Any]) -> Any:
        self.commands.append(params)
        return True

    async def api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        self.callback_answers.append(params)
        return True

    async def api_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params["file_id"])
        size = {} if file_id in self.unsized else {"file_size": len(self.files[file_id])}
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            **size,
            "file_path": f"documents/{file_id}",
        }

    def _record(self, method: str, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        message_id = int(params.get("message_id") or next(self._message_ids))
        self.sent.append(Sent(method, chat_id, str(params["text"]), message_id, params))
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "text": params["text"],
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "WhatsMate"},
        }


_JSON_FIELDS = {
    "reply_markup",
    "reply_parameters",
    "commands",
    "scope",
    "allowed_updates",
    "entities",
}


def _form(request: HttpRequest) -> dict[str, Any]:
    """python-telegram-bot posts form fields whose non-string values are JSON-encoded;
    a file upload comes as multipart/form-data (the file's bytes under its field name)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return dict(request.json() or {})
    if kind.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {kind}\r\n\r\n".encode() + request.body
        )
        parts: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if part.get_filename():
                parts[str(name)] = payload
                parts[f"{name}_filename"] = part.get_filename()
            else:
                value = payload.decode() if isinstance(payload, bytes) else str(payload)
                parts[str(name)] = json.loads(value) if name in _JSON_FIELDS else value
        return parts
    fields = urllib.parse.parse_qs(request.body.decode(), keep_blank_values=True)
    params: dict[str, Any] = {}
    for key, values in fields.items():
        value = values[0]
        params[key] = json.loads(value) if key in _JSON_FIELDS else value
    return params


def _command_entities(text: str, caption: bool) -> dict[str, Any]:
    """Like Telegram: a leading ``/command`` (or ``/command@bot``) is a bot_command entity."""
    match = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
    if not match:
        return {}
    entity = {"type": "bot_command", "offset": 0, "length": len(match[0].encode("utf-16-le")) // 2}
    return {("caption_entities" if caption else "entities"): [entity]}


def photo_sizes(file_id: str, content: bytes) -> list[dict[str, Any]]:
    """A ``photo`` field: a small thumbnail and the full-size photo (the one to send)."""
    return [
        {"file_id": "thumb", "file_unique_id": "t", "width": 90, "height": 90, "file_size": 10},
        {
            "file_id": file_id,
            "file_unique_id": file_id,
            "width": 1280,
            "height": 960,
            "file_size": len(content),
        },
    ]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
