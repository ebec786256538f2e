"""Alertmanager's API v2, as far as the bot needs it: creating a silence.

Over the bot's one ``httpx.AsyncClient`` (and so its one network stack). A request that
surely never left (connection refused) is tried again, by tenacity; anything else is
answered by one line naming Alertmanager's HTTP status and its own words, so the chat
says exactly why a silence was not made — and paging goes on.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from bot.errors import AlertmanagerError


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Alertmanager:
    """The client; credentials in ``base_url`` (``http://user:pw@am:9093``, an Alertmanager
    behind basic auth) are sent as an ``Authorization`` header, never as part of the URL."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, attempts: int = 3) -> None:
        self._client = client
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        userinfo, at, host = parts.netloc.rpartition("@")
        self._auth: httpx.BasicAuth | None = None
        if at:
            user, _, password = userinfo.partition(":")
            unquote = urllib.parse.unquote
            self._auth = httpx.BasicAuth(unquote(user), unquote(password))
        self._base_url = urllib.parse.urlunsplit(parts._replace(netloc=host))
        self._attempts = attempts

    async def create_silence(
        self,
        labels: Mapping[str, str],
        *,
        starts: float,
        ends: float,
        created_by: str,
        comment: str,
    ) -> str:
        """``POST /api/v2/silences``, one equality matcher per label; the silence id."""
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in sorted(labels.items())
            ],
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
            "createdBy": created_by,
            "comment": comment,
        }
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((httpx.ConnectError, httpx.ConnectTimeout)),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.2, max=2),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._client.post(
                        f"{self._base_url}/api/v2/silences",
                        json=body,
                        auth=self._auth if self._auth else httpx.USE_CLIENT_DEFAULT,
                    )
        except Exception as exc:  # whatever went wrong, one line (its type: no secret)
            raise AlertmanagerError(
                f"Alertmanager did not answer ({type(exc).__name__}); no silence was made"
            ) from None
        if not response.is_success:
            raise AlertmanagerError(
                f"Alertmanager refused the silence: HTTP {response.status_code}: {_words(response)}"
            )
        try:
            silence_id = response.json().get("silenceID")
        except (ValueError, AttributeError):
            silence_id = None
        if not isinstance(silence_id, str) or not silence_id:
            raise AlertmanagerError(
                f"Alertmanager answered HTTP {response.status_code} without a silence id"
            )
        return silence_id


def _words(response: httpx.Response) -> str:
    """Alertmanager's own words: ``{"message": ...}``, a JSON string, or the text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    elif isinstance(data, str):
        text = data
    else:
        text = response.text or response.reason_phrase
    return " ".join(text.split())[:200] or "no message"
