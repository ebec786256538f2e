"""What ``/healthz`` knows of WhatsMate: the gateways' state as ``/status`` last found it.

The service records every ``/status`` answer here and the lifecycle's health check reads
it, so neither reaches into the other (a bot that never asked counts as healthy).
"""

from __future__ import annotations


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
