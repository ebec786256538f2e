"""The WhatsMate REST client: every endpoint of API v1 and v3 described as data.

Why it is shaped this way:

* The send endpoints are one table per API version (``API_V1``, ``API_V3``): for each
  (channel, single/batch/group, content) the path and its JSON fields, plus the
  version's documented limits. ``WhatsMate.send`` builds a ``Call`` from the table; a
  third API version is one more table, not more branches. Dry-run mode shows the
  ``Call`` instead of sending it.
* The ``httpx.AsyncClient`` is injected (one shared pool; tests and the demo inject a
  transport), so this module never creates connections of its own.
* Faults map onto the tree in ``bot.errors`` by what they mean for a *send*:
  a request that surely never left (``NotSent``) is retried with backoff; a request
  that may have reached WhatsMate and costs something (a send, a PDF job) is never
  retried (``OutcomeUnknown``); reads are retried on any transport fault or 5xx.
  Retrying is tenacity's job, not a loop here.
* Media is never held in memory whole: the JSON body is streamed from the file on disk,
  base64-encoded chunk by chunk, with an exact ``Content-Length``.
* No answer is read past ``ANSWER_MAX`` (a PDF's text included): a bigger 2xx answer is
  a ``BadResponse``; an error status is judged on its first ``ANSWER_MAX`` bytes.
"""

from __future__ import annotations

import base64
import json
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential

from bot.errors import (
    AuthError,
    BadResponse,
    ConnectionLost,
    GatewayError,
    GatewayHTTPError,
    GatewayTimeout,
    LimitExceeded,
    NotSent,
    OutcomeUnknown,
    QuotaError,
    SendRejected,
    ServerError,
)
from bot.recipients import Recipient
from bot.vocabulary import Channel

QUOTA_STATUSES = frozenset({402, 429, 444, 469})
AUTH_STATUSES = frozenset({401, 403})
TRANSLATION_MAX = 3500  # characters per translation, both API versions
_CHUNK = 3 * 64 * 1024  # a multiple of 3, so chunks base64-encode without padding
MEDIA_FIELDS = frozenset({"image", "document", "audio", "voice_note"})


class Content(Enum):
    """What a send carries; picks the endpoint together with channel and target."""

    TEXT = "text"
    URL = "link"
    IMAGE = "image"
    DOCUMENT = "document"
    AUDIO = "audio"
    VOICE = "voice note"
    LOCATION = "location"


class Target(Enum):
    SINGLE = "single"  # one number
    BATCH = "batch"  # several numbers in one call (v1 Telegram only)
    GROUP = "group"  # a WhatsApp or Telegram group the gateway takes part in (v3)


@dataclass(frozen=True)
class Route:
    """One send endpoint: ``path`` (``{i}`` is the instance) and its JSON fields in order.

    A field ending in ``?`` is optional (left out when there is no value).
    """

    path: str
    fields: tuple[str, ...]

    @property
    def media_field(self) -> str | None:
        return next((f for f in self.fields if f in MEDIA_FIELDS), None)

    def takes(self, name: str) -> bool:
        return name in self.fields or f"{name}?" in self.fields

    @property
    def channel(self) -> Channel:
        """Whose instance number ``{i}`` is: WhatsMate paths read /v<n>/<channel>/..."""
        return Channel.WHATSAPP if self.path.split("/")[2] == "whatsapp" else Channel.TELEGRAM


RouteKey = tuple[Channel, Target, Content]
WA, TG = Channel.WHATSAPP, Channel.TELEGRAM
SINGLE, BATCH, GROUP = Target.SINGLE, Target.BATCH, Target.GROUP


@dataclass(frozen=True)
class Api:
    """One WhatsMate API version: its send endpoints and its documented limits."""

    version: int
    routes: Mapping[RouteKey, Route]
    text_limits: Mapping[str, int] = field(default_factory=dict)  # field -> characters
    media_limits: Mapping[str, int] = field(default_factory=dict)  # field -> base64 bytes
    filename_max: int | None = None  # set: names are cleaned to WhatsMate's alphabet
    status_404_not_offered: bool = False  # a 404 status endpoint reads "not offered"

    def route(self, channel: Channel, target: Target, content: Content) -> Route | None:
        return self.routes.get((channel, target, content))

    @property
    def upgrade_hint(self) -> str:
        """Said when this version lacks an endpoint or field the current one has."""
        return "; that needs whatsmate.api_version: 3" if self.version < 3 else ""


def _v1_telegram() -> dict[RouteKey, Route]:
    routes: dict[RouteKey, Route] = {}
    kinds = {
        Content.TEXT: ("message", ("message",)),
        Content.LOCATION: ("location", ("latitude", "longitude")),
        Content.IMAGE: ("photo/binary", ("image", "caption?")),
        Content.AUDIO: ("audio/binary", ("audio", "filename")),
        Content.VOICE: ("audio/binary", ("audio", "filename")),
        Content.DOCUMENT: ("document/binary", ("document", "filename")),
    }
    for content, (tail, fields) in kinds.items():
        routes[TG, SINGLE, content] = Route(
            f"/v1/telegram/single/{tail}/{{i}}", ("number", *fields)
        )
        routes[TG, BATCH, content] = Route(f"/v1/telegram/batch/{tail}/{{i}}", ("numbers", *fields))
    return routes


def _v3() -> dict[RouteKey, Route]:
    routes: dict[RouteKey, Route] = {}
    kinds: dict[tuple[Channel, Content], tuple[str, tuple[str, ...], bool]] = {
        # (channel, content): (path segment, content fields, group calls name the admin)
        (WA, Content.TEXT): ("text", ("message",), True),
        (WA, Content.URL): ("url", ("url",), True),
        (WA, Content.IMAGE): ("image", ("image", "caption?"), False),
        (WA, Content.DOCUMENT): ("document", ("document", "filename", "caption?"), False),
        (WA, Content.AUDIO): ("document", ("document", "filename", "caption?"), False),
        (WA, Content.VOICE): ("document", ("document", "filename", "caption?"), False),
        (TG, Content.TEXT): ("text", ("message",), True),
        (TG, Content.IMAGE): ("image", ("image", "caption?"), True),
        (TG, Content.DOCUMENT): ("document", ("document", "filename", "caption?"), True),
        (TG, Content.AUDIO): ("audio", ("audio", "filename", "caption?"), True),
        (TG, Content.VOICE): ("voice_note", ("voice_note", "filename", "caption?"), True),
    }
    for (channel, content), (segment, fields, admin) in kinds.items():
        base = f"/v3/{channel.value}"
        routes[channel, SINGLE, content] = Route(
            f"{base}/single/{segment}/message/{{i}}", ("number", *fields)
        )
        group = ("group_name", "group_admin") if admin else ("group_name",)
        routes[channel, GROUP, content] = Route(
            f"{base}/group/{segment}/message/{{i}}", (*group, *fields)
        )
    return routes


API_V1 = Api(
    1,
    {
        (WA, SINGLE, Content.TEXT): Route("/v1/whatsapp/single/message/{i}", ("number", "message")),
        **_v1_telegram(),
    },
)
WHATSAPP_QUEUE = Route("/v1/whatsapp/queue/message", ("number", "message"))  # v1, deprecated
MB = 1_000_000
ANSWER_MAX = 10 * MB  # the most of an answer that is read (a PDF's text is far less)
API_V3 = Api(
    3,
    _v3(),
    text_limits={"message": 900, "url": 900, "caption": 250, "group_name": 150},
    media_limits={"image": 6 * MB, "document": 9 * MB, "audio": 3 * MB, "voice_note": 3 * MB},
    filename_max=80,
    status_404_not_offered=True,
)
APIS = {api.version: api for api in (API_V1, API_V3)}
FIELD_NAMES = {
    "message": "message",
    "url": "link",
    "caption": "caption",
    "group_name": "group name",
    "image": "image",
    "document": "document",
    "audio": "audio file",
    "voice_note": "voice note",
}


def base64_size(size: int) -> int:
    """Bytes of the base64 text of ``size`` bytes of file."""
    return 4 * ((size + 2) // 3)


def largest_file(media_field: str, limit: int) -> tuple[int, str]:
    """The most bytes of file whose base64 text fits in ``limit``, and the line that
    says a file is bigger (to stop a download whose size was not known before)."""
    most = limit // 4 * 3
    return most, (
        f"the {FIELD_NAMES[media_field]} is over {_megabytes(most)}; "
        f"WhatsMate takes at most {_megabytes(limit)} once base64-encoded"
    )


def clean_filename(name: str, limit: int) -> str:
    """``Läuft Bericht (v2).pdf`` -> ``Lauft Bericht _v2_.pdf``: WhatsMate's file-name rule.

    ASCII letters and digits, spaces, ``-``, ``_`` and ``.`` only, at most ``limit``
    characters, the extension kept.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9 ._-]", "_", ascii_name).strip(" .") or "file"
    suffix = PurePath(cleaned).suffix if len(PurePath(cleaned).suffix) <= 10 else ""
    stem = cleaned[: len(cleaned) - len(suffix)] if suffix else cleaned
    return stem[: limit - len(suffix)].rstrip(" ") + suffix


@dataclass(frozen=True)
class MediaFile:
    """A file on disk to send; ``filename`` is what the recipient sees."""

    path: Path
    filename: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class Outgoing:
    """What one send carries, whoever it goes to."""

    content: Content
    text: str = ""  # the message, or the URL
    caption: str | None = None
    media: MediaFile | None = None
    latitude: float = 0.0
    longitude: float = 0.0


@dataclass(frozen=True)
class Call:
    """One request to WhatsMate, before it is sent."""

    method: str
    path: str
    payload: dict[str, Any] = field(default_factory=dict)
    media_field: str | None = None
    media: MediaFile | None = None
    params: dict[str, str] = field(default_factory=dict)
    template: str = ""  # the path with placeholders, for metric labels

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    def describe(self) -> str:
        """The request as a person would check it: endpoint and JSON, media summarised."""
        shown = dict(self.payload)
        if self.media_field and self.media:
            shown[self.media_field] = f"<base64 of {self.media.filename}, {self.media.size} bytes>"
        query = f"?{httpx.QueryParams(self.params)}" if self.params else ""
        body = f" {json.dumps(shown, ensure_ascii=False)}" if shown else ""
        return f"{self.endpoint}{query}{body}"


NOT_OFFERED = "not offered"


@dataclass(frozen=True)
class GatewayStatus:
    status: str
    instance: int | None = None

    @property
    def ok(self) -> bool:
        """Up, or a status endpoint this API version does not offer (neither up nor down)."""
        return self.status in ("up", NOT_OFFERED)


@dataclass(frozen=True)
class SendResult:
    """What WhatsMate said about an accepted send (``queued``, or its status text)."""

    status: str
    job_id: str | None = None  # v3 sends and PDF jobs: the id WhatsMate gave the job
    preview: str | None = None  # set in dry-run mode: the call that was not sent


Observer = Callable[[str, float, str], None]
"""Called after every call with (endpoint path template, seconds, outcome)."""


def _no_observer(endpoint: str, seconds: float, outcome: str) -> None:
    return None


class WhatsMate:
    """Client for https://api.whatsmate.net — whatsmate-api-reference.md and SPEC.md (v3)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        api_version: int = 1,
        instances: Mapping[Channel, int] | None = None,
        whatsapp_queue: bool = False,
        retries: int = 3,
        backoff: wait_base | None = None,
        dry_run: bool = False,
        observer: Observer = _no_observer,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._secret = client_secret
        self._headers = {
            "X-WM-CLIENT-ID": client_id,
            "X-WM-CLIENT-SECRET": client_secret,
            "Content-Type": "application/json",
            "Accept": "application/json, text/plain, */*",
        }
        self.api = APIS[api_version]
        self._instances = dict(instances or {WA: 0, TG: 0})
        self._queue = whatsapp_queue
        self._attempts = retries + 1
        self._backoff = backoff or wait_exponential(multiplier=0.25, max=2)
        self._dry_run = dry_run
        self._observe = observer

    # -- sends ----------------------------------------------------------------------

    def route(self, channel: Channel, target: Target, content: Content) -> Route | None:
        """The endpoint for this send, or None when this API version has none."""
        if self._queue and (channel, target, content) == (WA, SINGLE, Content.TEXT):
            return WHATSAPP_QUEUE
        return self.api.route(channel, target, content)

    def instance(self, channel: Channel) -> int:
        return self._instances[channel]

    def check(self, route: Route, outgoing: Outgoing, recipient: Recipient | None) -> None:
        """Raise ``LimitExceeded`` for anything the endpoint would refuse; no call is made."""
        values = {"caption": outgoing.caption, "group_name": recipient and recipient.group}
        if route.takes("message") or route.takes("url"):
            values["url" if route.takes("url") else "message"] = outgoing.text
        for name, value in values.items():
            if not value:
                continue
            if not route.takes(name):
                raise LimitExceeded(
                    f"WhatsMate API v{self.api.version} takes no {FIELD_NAMES[name]} "
                    f"on {route.path.replace('{i}', '…')}" + self.api.upgrade_hint
                )
            limit = self.api.text_limits.get(name)
            if limit is not None and len(value) > limit:
                raise LimitExceeded(
                    f"the {FIELD_NAMES[name]} is {len(value)} characters; "
                    f"WhatsMate takes at most {limit}"
                )
        media = route.media_field
        if media and outgoing.media is not None:
            check_media_size(media, outgoing.media.size, self.api.media_limits.get(media))

    async def send(
        self, route: Route, outgoing: Outgoing, recipients: Sequence[Recipient]
    ) -> SendResult:
        """POST ``outgoing`` to ``recipients`` (one, or several on a batch route) once."""
        self.check(route, outgoing, recipients[0])
        return await self._send(self._call(route, outgoing, recipients))

    def _call(self, route: Route, outgoing: Outgoing, recipients: Sequence[Recipient]) -> Call:
        first = recipients[0]
        values: dict[str, Any] = {
            "number": first.number,
            "numbers": [r.number for r in recipients],
            "group_name": first.group,
            "group_admin": first.number,
            "message": outgoing.text,
            "url": outgoing.text,
            "caption": outgoing.caption,
            "filename": outgoing.media.filename if outgoing.media else None,
            "latitude": outgoing.latitude,
            "longitude": outgoing.longitude,
        }
        payload = {
            name.rstrip("?"): values[name.rstrip("?")]
            for name in route.fields
            if name not in MEDIA_FIELDS and (values[name.rstrip("?")] or not name.endswith("?"))
        }
        path = route.path.replace("{i}", str(self._instances[route.channel]))
        return Call("POST", path, payload, route.media_field, outgoing.media, template=route.path)

    # -- status ---------------------------------------------------------------------

    async def gateway_status(self) -> GatewayStatus:
        """``GET /v1/gateway/status``: is the WhatsApp gateway up?"""
        return await self._status(Call("GET", "/v1/gateway/status"), None)

    async def telegram_status(self, instance: int) -> GatewayStatus:
        """``GET /v1/telegram/status/{instance}`` (v3 documents none: the v1 one is asked)."""
        path = f"/v1/telegram/status/{instance}"
        return await self._status(Call("GET", path, template="/v1/telegram/status/{i}"), instance)

    async def _status(self, call: Call, instance: int | None) -> GatewayStatus:
        try:
            data = await self._read_json(call)
        except GatewayHTTPError as exc:
            if exc.status == 404 and self.api.status_404_not_offered:
                return GatewayStatus(NOT_OFFERED, instance)
            raise
        reported = data.get("instance") if isinstance(data, dict) else None
        return GatewayStatus(
            _field(data, "status", call.path), reported if isinstance(reported, int) else instance
        )

    # -- PDF to text ------------------------------------------------------------------

    async def pdf_submit(self, url: str) -> SendResult:
        """``GET /v1/pdf/job/submit?url=...``: costs quota, so never retried once it may
        have arrived. The result carries the job id."""
        call = Call("GET", "/v1/pdf/job/submit", params={"url": url})
        result = await self._send(call, status_if_missing="submitted")
        if result.preview is None and result.job_id is None:
            raise BadResponse(call.endpoint, "expected a job id in the answer")
        return result

    async def pdf_check(self, job_id: str) -> str:
        """``GET /v1/pdf/job/check/{id}``: ``Processing``, ``Completed``, ``Failed``..."""
        call = Call("GET", f"/v1/pdf/job/check/{job_id}", template="/v1/pdf/job/check/{id}")
        return _text_or_field(await self._request(call, idempotent=True), "status", call)

    async def pdf_text(self, job_id: str) -> str:
        """``GET /v1/pdf/job/retrieve_text/{id}``: the text of a completed job."""
        call = Call(
            "GET",
            f"/v1/pdf/job/retrieve_text/{job_id}",
            template="/v1/pdf/job/retrieve_text/{id}",
        )
        return _text_or_field(await self._request(call, idempotent=True), "text", call)

    # -- Translation ------------------------------------------------------------------

    async def translate(self, source: str, target: str, text: str) -> str:
        """``POST /v1/translation/translate``; the answer is the translated text (not JSON).

        Translating changes nothing anywhere, so it is retried like a read.
        """
        check_translation(text)
        call = Call(
            "POST",
            "/v1/translation/translate",
            {"fromLang": source, "toLang": target, "text": text},
        )
        response = await self._request(call, idempotent=True)
        body = response.text.strip()
        if body.startswith('"'):
            try:
                decoded = json.loads(body)
            except ValueError:
                decoded = None
            if isinstance(decoded, str):
                body = decoded
        if not body:
            raise BadResponse(call.endpoint, f"HTTP {response.status_code} with an empty body")
        return body

    async def supported_codes(self) -> dict[str, str]:
        """``GET /v1/translation/supported-codes`` as {code: language name}."""
        call = Call("GET", "/v1/translation/supported-codes")
        return _language_codes(await self._read_json(call), call.endpoint)

    # -- plumbing -----------------------------------------------------------------

    async def _send(self, call: Call, *, status_if_missing: str | None = None) -> SendResult:
        """A request that costs (a send, a PDF job): made once, retried only while it
        surely never left; shown instead of made in dry-run mode. The answer's
        ``status`` and job id (``id``, ``job_id``, or a bare id) are kept."""
        if self._dry_run:
            return SendResult("not sent (dry run)", preview=call.describe())
        data = _json(await self._request(call, idempotent=False), call.endpoint)
        fields = data if isinstance(data, dict) else {"id": data}
        if fields.get("success") is False:
            raise SendRejected(
                call.endpoint, self._redact(str(fields.get("status") or "no reason"))
            )
        status = fields.get("status") or status_if_missing
        if status_if_missing is None or not isinstance(status, str):
            status = _field(fields, "status", call.endpoint)
        job = fields.get("id", fields.get("job_id"))
        known = isinstance(job, str | int) and not isinstance(job, bool) and str(job).strip()
        return SendResult(self._redact(status), job_id=str(job).strip() if known else None)

    async def _read_json(self, call: Call) -> Any:
        return _json(await self._request(call, idempotent=True), call.endpoint)

    async def _request(self, call: Call, *, idempotent: bool) -> httpx.Response:
        retryable: tuple[type[GatewayError], ...] = (
            (NotSent, GatewayTimeout, ConnectionLost, ServerError) if idempotent else (NotSent,)
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(retryable),
            stop=stop_after_attempt(self._attempts),
            wait=self._backoff,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(call, idempotent=idempotent)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _once(self, call: Call, *, idempotent: bool) -> httpx.Response:
        started = time.perf_counter()
        outcome = "error"
        try:
            request = self._client.build_request(
                call.method, self._base_url + call.path, params=call.params, **self._body(call)
            )
            streamed = await self._client.send(request, stream=True)
            try:
                response, cut = await _read_capped(streamed, ANSWER_MAX)
            finally:
                await streamed.aclose()
            outcome = str(response.status_code)
        except httpx.DecodingError:
            raise BadResponse(call.endpoint, "an answer that cannot be decoded") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            outcome = "not_sent"
            raise NotSent(call.endpoint, _transport_detail(exc)) from None
        except httpx.TimeoutException as exc:
            outcome = "timeout"
            if idempotent:
                raise GatewayTimeout(call.endpoint, _transport_detail(exc)) from None
            raise OutcomeUnknown(call.endpoint, _transport_detail(exc)) from None
        except httpx.TransportError as exc:
            outcome = "dropped"
            if idempotent:
                raise ConnectionLost(call.endpoint, _transport_detail(exc)) from None
            raise OutcomeUnknown(call.endpoint, _transport_detail(exc)) from None
        finally:
            self._observe(call.template or call.path, time.perf_counter() - started, outcome)
        if response.is_success and cut:
            detail = f"HTTP {response.status_code}: an answer over {_megabytes(ANSWER_MAX)}"
            raise BadResponse(call.endpoint, detail)
        if response.is_success:
            return response
        raise self._http_error(call, response, idempotent=idempotent)

    def _body(self, call: Call) -> dict[str, Any]:
        if call.method == "GET":
            return {"headers": self._headers}
        if call.media is None or call.media_field is None:
            return {"headers": self._headers, "content": _dumps(call.payload)}
        prefix, suffix = _media_envelope(call.payload, call.media_field)
        length = len(prefix) + base64_size(call.media.size) + len(suffix)
        headers = {**self._headers, "Content-Length": str(length)}
        return {"headers": headers, "content": _stream_base64(prefix, call.media.path, suffix)}

    def _http_error(self, call: Call, response: httpx.Response, *, idempotent: bool) -> Exception:
        status, message = response.status_code, self._redact(_message_of(response))
        if status in AUTH_STATUSES:
            return AuthError(call.endpoint, status, message)
        if status in QUOTA_STATUSES:
            return QuotaError(call.endpoint, status, message)
        if status >= 500:
            if idempotent:
                return ServerError(call.endpoint, status, message)
            return OutcomeUnknown(call.endpoint, f"HTTP {status}: {message}")
        return GatewayHTTPError(call.endpoint, status, message)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text


def check_translation(text: str) -> None:
    """Raise ``LimitExceeded`` for a text longer than WhatsMate translates at once."""
    if len(text) > TRANSLATION_MAX:
        raise LimitExceeded(
            f"the text is {len(text)} characters; WhatsMate translates at most "
            f"{TRANSLATION_MAX} at once"
        )


def check_media_size(media_field: str, size: int, limit: int | None) -> None:
    """Raise ``LimitExceeded`` when ``size`` bytes of file exceed ``limit`` once encoded."""
    if limit is not None and base64_size(size) > limit:
        raise LimitExceeded(
            f"the {FIELD_NAMES[media_field]} is {_megabytes(base64_size(size))} once "
            f"base64-encoded; WhatsMate takes at most {_megabytes(limit)} "
            f"(about {_megabytes(limit * 3 // 4)} of file)"
        )


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size < 100 * MB else f"{size // MB} MB"


async def _read_capped(streamed: httpx.Response, cap: int) -> tuple[httpx.Response, bool]:
    """The answer with at most ``cap`` bytes of (decoded) body, and whether it had more."""
    body = bytearray()
    async for chunk in streamed.aiter_bytes():
        body += chunk
        if len(body) > cap:
            break
    framing = {"content-encoding", "content-length", "transfer-encoding"}
    headers = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in framing]
    response = httpx.Response(
        streamed.status_code,
        headers=headers,
        content=bytes(body[:cap]),
        request=streamed.request,
        extensions=streamed.extensions,
    )
    return response, len(body) > cap


def _text_or_field(response: httpx.Response, name: str, call: Call) -> str:
    """An answer that is plain text, a JSON string, or JSON with a ``name`` text."""
    try:
        data = response.json()
    except ValueError:
        data = response.text
    if isinstance(data, dict):
        return _field(data, name, call.endpoint)
    if isinstance(data, str) and data.strip():
        return data.strip() if name != "text" else data
    raise BadResponse(call.endpoint, f"expected a {name!r} text in the answer")


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _media_envelope(payload: dict[str, Any], media_field: str) -> tuple[bytes, bytes]:
    """The JSON body around the base64 string: ``{...,"image":"`` and ``"}``."""
    head = _dumps(payload)[:-1]
    separator = b"," if payload else b""
    return head + separator + json.dumps(media_field).encode() + b':"', b'"}'


async def _stream_base64(prefix: bytes, path: Path, suffix: bytes) -> AsyncIterator[bytes]:
    yield prefix
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            yield base64.b64encode(chunk)
    yield suffix


def _json(response: httpx.Response, endpoint: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        snippet = _message_of(response)
        raise BadResponse(
            endpoint, f"HTTP {response.status_code}, expected JSON but got {kind}: {snippet}"
        ) from None


def _field(data: Any, name: str, endpoint: str) -> str:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        shape = json.dumps(data)[:120]
        raise BadResponse(endpoint, f"expected a {name!r} text in the answer, got {shape}")
    return value


def _language_codes(data: Any, endpoint: str) -> dict[str, str]:
    """Accept the shapes seen in the wild: {code: name}, [code], [{code, name}], {"codes": ...}."""
    if isinstance(data, dict) and len(data) == 1:
        inner = next(iter(data.values()))
        if isinstance(inner, list | dict):
            data = inner
    codes: dict[str, str] = {}
    if isinstance(data, dict):
        codes = {str(k): str(v) for k, v in data.items()}
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, str):
                codes[item] = item
            elif isinstance(item, dict) and "code" in item:
                codes[str(item["code"])] = str(item.get("name") or item.get("language") or "")
    if not codes:
        raise BadResponse(endpoint, f"no language codes in {json.dumps(data)[:120]}")
    return codes


def _message_of(response: httpx.Response) -> str:
    """The gateway's own words about a response, short and on one line."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, str) and data.strip():
        return data.strip()[:200]
    if isinstance(data, dict):
        for key in ("error_message", "message", "error", "status", "detail", "description"):
            if isinstance(data.get(key), str) and data[key].strip():
                return str(data[key]).strip()[:200]
    text = re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", response.text)
    text = " ".join(text.split())
    return text[:200] or response.reason_phrase or "no message"


def _transport_detail(exc: httpx.TransportError) -> str:
    kind = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connect timed out",
        httpx.PoolTimeout: "no free connection",
        httpx.ReadTimeout: "no answer in time",
        httpx.WriteTimeout: "sending timed out",
        httpx.RemoteProtocolError: "connection dropped",
        httpx.ReadError: "connection dropped",
        httpx.WriteError: "connection dropped while sending",
    }.get(type(exc), "transport error")
    return f"{kind} ({type(exc).__name__})"
