"""What ``/healthz`` answers: the database reachable, updates taken in, WhatsMate not down.

``GatewayHealth`` is the gateways' state as ``/status`` last found it (the service
records it; a bot that never asked counts as healthy). ``Health`` is the check itself,
over the parts that know each fact, so none of them reaches into another.
"""

from __future__ import annotations

from typing import Protocol

from bot.storage import Storage
from bot.vocabulary import Role


class GatewayHealth:
    """The last ``/status`` verdict on both gateways; unknown until someone asks."""

    def __init__(self) -> None:
        self._up: bool | None = None

    def record(self, up: bool) -> None:
        self._up = up

    @property
    def down(self) -> bool:
        """True when the last ``/status`` found a gateway down or unreachable."""
        return self._up is False


class Intake(Protocol):
    """Where updates come from (the poller election, or the webhook)."""

    @property
    def role(self) -> Role: ...

    @property
    def taking(self) -> bool:
        """False while this replica should be taking updates in and is not."""
        ...


class Health:
    """``/healthz``: (healthy, details)."""

    def __init__(self, storage: Storage, intake: Intake, gateways: GatewayHealth) -> None:
        self._storage = storage
        self._intake = intake
        self._gateways = gateways

    async def __call__(self) -> tuple[bool, dict[str, str]]:
        role = self._intake.role
        try:
            await self._storage.ping()
        except Exception:
            return False, {"role": role.value, "storage": "unreachable"}
        return self._intake.taking and not self._gateways.down, {"role": role.value}
