"""What strangers send over HTTP, judged in one place: bodies and secrets.

Every POST route (the bridge's inbound URLs, the Telegram webhook, the alert intake)
decodes its body with ``decode_json_object`` and compares the secret it was given with
``same_secret``, so odd input is refused the same way everywhere — a 400 or a 404/403,
never a 500 from deep inside a handler or the database:

* not JSON (invalid UTF-8, ``NaN``, a number too large to be a number) or not an object;
* nested deeper than ``MAX_DEPTH`` (Python's parser would otherwise hit its recursion
  limit, and every later walk over the value would too);
* a lone surrogate escape (``"\\ud800"``): not text, it cannot even be encoded again;
* a NUL character: SQLite would store it and PostgreSQL refuse it, so both backends
  get neither — the body is refused before it reaches either.

No aiohttp here: the bridge (and the demo) decode what they are handed the same way.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import Any

from bot.errors import InboundRejected

MAX_DEPTH = 64  # a Telegram update is about 10 deep, an Alertmanager notification 4


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object, or ``InboundRejected(400)`` saying what is wrong with it."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise InboundRejected(400, "body is nested too deep") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise InboundRejected(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise InboundRejected(400, "body is not a JSON object")
    _check_text(data)
    return data


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison; anything that is not ASCII (an odd header, an odd URL
    escape) is simply not the secret, which is ASCII by construction."""
    return given.isascii() and hmac.compare_digest(given, expected)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number too large")
    return value


def _check_text(data: dict[str, Any]) -> None:
    """Walk every key and value (without recursion) for depth, NUL and lone surrogates."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InboundRejected(400, "body is nested too deep")
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise InboundRejected(400, "body contains a NUL character")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InboundRejected(400, "body contains a lone surrogate, not text") from None
