"""The WhatsMate REST client: one async method per endpoint of the v1 API reference.

Why it is shaped this way:

* Every endpoint is first described as a ``Call`` value (method, path, JSON payload,
  optional media file). Dry-run mode shows exactly that value instead of sending it.
* The ``httpx.AsyncClient`` is injected (one shared pool; tests and the demo inject a
  transport), so this module never creates connections of its own.
* Faults map onto the tree in ``bot.errors`` by what they mean for a *send*:
  a request that surely never left (``NotSent``) is retried with backoff; a POST that
  may have reached WhatsMate (``OutcomeUnknown``) is never retried; reads (GET) are
  retried on any transport fault or 5xx. Retrying is tenacity's job, not a loop here.
* Media is never held in memory whole: the JSON body is streamed from the file on disk,
  base64-encoded chunk by chunk, with an exact ``Content-Length``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    NotSent,
    OutcomeUnknown,
    QuotaError,
    SendRejected,
    ServerError,
)

QUOTA_STATUSES = frozenset({402, 429, 444, 469})
AUTH_STATUSES = frozenset({401, 403})
_CHUNK = 3 * 64 * 1024  # a multiple of 3, so chunks base64-encode without padding


@dataclass(frozen=True)
class MediaFile:
    """A file on disk to send; ``filename`` is what the recipient sees."""

    path: Path
    filename: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class Call:
    """One request to WhatsMate, before it is sent."""

    method: str
    path: str
    payload: dict[str, Any] = field(default_factory=dict)
    media_field: str | None = None
    media: MediaFile | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    def describe(self) -> str:
        """The request as a person would check it: endpoint and JSON, media summarised."""
        shown = dict(self.payload)
        if self.media_field and self.media:
            shown[self.media_field] = f"<base64 of {self.media.filename}, {self.media.size} bytes>"
        return f"{self.endpoint} {json.dumps(shown, ensure_ascii=False)}"


@dataclass(frozen=True)
class GatewayStatus:
    status: str
    instance: int | None = None

    @property
    def up(self) -> bool:
        return self.status == "up"


@dataclass(frozen=True)
class SendResult:
    """What WhatsMate said about an accepted send (``queued``, or its status text)."""

    status: str
    preview: str | None = None  # set in dry-run mode: the call that was not sent


Observer = Callable[[str, float, str], None]
"""Called after every call with (endpoint path template, seconds, outcome)."""


def _no_observer(endpoint: str, seconds: float, outcome: str) -> None:
    return None


class WhatsMate:
    """Client for https://api.whatsmate.net — see whatsmate-api-reference.md."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
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
        self._attempts = retries + 1
        self._backoff = backoff or wait_exponential(multiplier=0.25, max=2)
        self._dry_run = dry_run
        self._observe = observer

    # -- WhatsApp gateway ---------------------------------------------------------

    async def gateway_status(self) -> GatewayStatus:
        """``GET /v1/gateway/status``: is the WhatsApp gateway up?"""
        data = await self._read_json(Call("GET", "/v1/gateway/status"))
        return GatewayStatus(_field(data, "status", "/v1/gateway/status"))

    async def whatsapp_queue_message(self, number: str, message: str) -> SendResult:
        """``POST /v1/whatsapp/queue/message`` (deprecated by WhatsMate, still supported)."""
        return await self._send(
            Call("POST", "/v1/whatsapp/queue/message", {"number": number, "message": message})
        )

    async def whatsapp_message(self, instance: int, number: str, message: str) -> SendResult:
        """``POST /v1/whatsapp/single/message/{instance}`` with instance 0 or 1."""
        path = f"/v1/whatsapp/single/message/{instance}"
        return await self._send(Call("POST", path, {"number": number, "message": message}))

    # -- Telegram gateway ---------------------------------------------------------

    async def telegram_status(self, instance: int) -> GatewayStatus:
        """``GET /v1/telegram/status/{instance}``."""
        path = f"/v1/telegram/status/{instance}"
        data = await self._read_json(Call("GET", path))
        reported = data.get("instance") if isinstance(data, dict) else None
        return GatewayStatus(
            _field(data, "status", path), reported if isinstance(reported, int) else instance
        )

    async def telegram_message(self, instance: int, number: str, message: str) -> SendResult:
        """``POST /v1/telegram/single/message/{instance}``."""
        return await self._telegram(
            f"/v1/telegram/single/message/{instance}", {"number": number, "message": message}
        )

    async def telegram_batch_message(
        self, instance: int, numbers: Sequence[str], message: str
    ) -> SendResult:
        """``POST /v1/telegram/batch/message/{instance}`` (premium)."""
        return await self._telegram(
            f"/v1/telegram/batch/message/{instance}", {"numbers": list(numbers), "message": message}
        )

    async def telegram_location(
        self, instance: int, number: str, latitude: float, longitude: float
    ) -> SendResult:
        """``POST /v1/telegram/single/location/{instance}``."""
        payload = {"number": number, "latitude": latitude, "longitude": longitude}
        return await self._telegram(f"/v1/telegram/single/location/{instance}", payload)

    async def telegram_batch_location(
        self, instance: int, numbers: Sequence[str], latitude: float, longitude: float
    ) -> SendResult:
        """``POST /v1/telegram/batch/location/{instance}`` (premium)."""
        payload = {"numbers": list(numbers), "latitude": latitude, "longitude": longitude}
        return await self._telegram(f"/v1/telegram/batch/location/{instance}", payload)

    async def telegram_photo(
        self, instance: int, number: str, image: MediaFile, caption: str | None = None
    ) -> SendResult:
        """``POST /v1/telegram/single/photo/binary/{instance}`` (premium)."""
        payload = {"number": number, **({"caption": caption} if caption else {})}
        return await self._telegram(
            f"/v1/telegram/single/photo/binary/{instance}", payload, "image", image
        )

    async def telegram_batch_photo(
        self, instance: int, numbers: Sequence[str], image: MediaFile, caption: str | None = None
    ) -> SendResult:
        """``POST /v1/telegram/batch/photo/binary/{instance}`` (premium)."""
        payload = {"numbers": list(numbers), **({"caption": caption} if caption else {})}
        return await self._telegram(
            f"/v1/telegram/batch/photo/binary/{instance}", payload, "image", image
        )

    async def telegram_audio(self, instance: int, number: str, audio: MediaFile) -> SendResult:
        """``POST /v1/telegram/single/audio/binary/{instance}`` (premium)."""
        payload = {"number": number, "filename": audio.filename}
        return await self._telegram(
            f"/v1/telegram/single/audio/binary/{instance}", payload, "audio", audio
        )

    async def telegram_batch_audio(
        self, instance: int, numbers: Sequence[str], audio: MediaFile
    ) -> SendResult:
        """``POST /v1/telegram/batch/audio/binary/{instance}`` (premium)."""
        payload = {"numbers": list(numbers), "filename": audio.filename}
        return await self._telegram(
            f"/v1/telegram/batch/audio/binary/{instance}", payload, "audio", audio
        )

    async def telegram_document(
        self, instance: int, number: str, document: MediaFile
    ) -> SendResult:
        """``POST /v1/telegram/single/document/binary/{instance}`` (premium)."""
        payload = {"number": number, "filename": document.filename}
        return await self._telegram(
            f"/v1/telegram/single/document/binary/{instance}", payload, "document", document
        )

    async def telegram_batch_document(
        self, instance: int, numbers: Sequence[str], document: MediaFile
    ) -> SendResult:
        """``POST /v1/telegram/batch/document/binary/{instance}`` (premium)."""
        payload = {"numbers": list(numbers), "filename": document.filename}
        return await self._telegram(
            f"/v1/telegram/batch/document/binary/{instance}", payload, "document", document
        )

    # -- Translation --------------------------------------------------------------

    async def translate(self, source: str, target: str, text: str) -> str:
        """``POST /v1/translation/translate``; the answer is the translated text (not JSON).

        Translating changes nothing anywhere, so it is retried like a read.
        """
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

    async def _telegram(
        self,
        path: str,
        payload: dict[str, Any],
        media_field: str | None = None,
        media: MediaFile | None = None,
    ) -> SendResult:
        return await self._send(Call("POST", path, payload, media_field, media))

    async def _send(self, call: Call) -> SendResult:
        """A send: POSTed once; retried only while it surely never left."""
        if self._dry_run:
            return SendResult("not sent (dry run)", preview=call.describe())
        data = _json(await self._request(call, idempotent=False), call.endpoint)
        if isinstance(data, dict) and data.get("success") is False:
            raise SendRejected(call.endpoint, self._redact(str(data.get("status") or "no reason")))
        return SendResult(self._redact(_field(data, "status", call.endpoint)))

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
            response = await self._client.request(
                call.method, self._base_url + call.path, **self._body(call)
            )
            outcome = str(response.status_code)
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
            self._observe(_template(call.path), time.perf_counter() - started, outcome)
        if response.is_success:
            return response
        raise self._http_error(call, response, idempotent=idempotent)

    def _body(self, call: Call) -> dict[str, Any]:
        if call.method == "GET":
            return {"headers": self._headers}
        if call.media is None or call.media_field is None:
            return {"headers": self._headers, "content": _dumps(call.payload)}
        prefix, suffix = _media_envelope(call.payload, call.media_field)
        size = call.media.size
        length = len(prefix) + 4 * ((size + 2) // 3) + len(suffix)
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
        for key in ("message", "error", "status", "detail", "description"):
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


def _template(path: str) -> str:
    """``/v1/telegram/status/0`` -> ``/v1/telegram/status/{instance}`` for metric labels."""
    return re.sub(r"/[0-9]+$", "/{instance}", path)
