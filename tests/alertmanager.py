"""A real Prometheus Alertmanager for the tests, started and stopped by the suite itself.

Debian's ``prometheus-alertmanager`` (``make alertmanager`` installs it where it is
missing), on loopback only: no cluster (``--cluster.listen-address=`` empty), a
throw-away ``--storage.path``, a free port, ``group_wait``/``group_interval`` of one
second, and one ``webhook_configs`` receiver pointing at the bot's ``/alerts/<secret>``.
Alerts are pushed through its API v2 (``POST /api/v2/alerts``) and resolved by pushing
them again with ``endsAt``; silences are read back with ``GET /api/v2/silences``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port

NAMES = ("prometheus-alertmanager", "alertmanager")


def binary() -> str | None:
    """The Alertmanager executable, or None when it is not installed."""
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "bot",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "bot", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Alertmanager:
    process: asyncio.subprocess.Process
    folder: Path
    port: int
    log: list[bytes] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, webhook_url: str) -> Alertmanager:
        executable = binary()
        if executable is None:
            raise RuntimeError("prometheus-alertmanager not found (make alertmanager installs it)")
        folder = Path(tempfile.mkdtemp(prefix="whatsmate-am-"))
        (folder / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            executable,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        manager = cls(process, folder, port)
        await manager._wait_listening()
        return manager

    async def _wait_listening(self) -> None:
        """Until Alertmanager logs that its web server listens; then keep reading its log."""
        stderr = self.process.stderr
        assert stderr is not None
        async with asyncio.timeout(20):
            while b"Listening on" not in (line := await stderr.readline()):
                self.log.append(line)
                if not line:
                    raise RuntimeError(b"alertmanager exited: " + b"".join(self.log[-5:]))

        async def drain() -> None:
            while line := await stderr.readline():
                self.log.append(line)

        self._drain = asyncio.create_task(drain())

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        await self.process.wait()
        if self._drain is not None:
            await self._drain
        shutil.rmtree(self.folder, ignore_errors=True)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            return response.json() if response.content else None

    async def push(self, *alerts: dict[str, Any]) -> None:
        """``POST /api/v2/alerts``: each alert is {labels, annotations[, endsAt]}."""
        await self._call("POST", "/api/v2/alerts", list(alerts))

    async def resolve(self, *alerts: dict[str, Any]) -> None:
        """Push the alerts again, ending now: Alertmanager sends them as resolved."""
        await self.push(*({**alert, "endsAt": now_iso()} for alert in alerts))

    async def silences(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._call("GET", "/api/v2/silences")
        return found


def webhook_alert(
    instance: str,
    summary: str | None = None,
    *,
    status: str = "firing",
    alertname: str = "HighCPU",
    **labels: str,
) -> dict[str, Any]:
    """One alert of a webhook body, as Alertmanager 0.25 writes it."""
    all_labels = {"alertname": alertname, "instance": instance, "severity": "critical", **labels}
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": summary} if summary else {},
        "startsAt": "2026-12-02T04:49:43.982Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-02T05:01:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": f"fp-{alertname}-{instance}",
    }


def webhook_body(*alerts: dict[str, Any], group: str = "HighCPU", **extra: Any) -> dict[str, Any]:
    """A webhook body for the group ``{alertname=group}`` with ``alerts``."""
    firing = any(a["status"] == "firing" for a in alerts)
    labels = [a["labels"] for a in alerts]
    common = (
        {k: v for k, v in labels[0].items() if all(x.get(k) == v for x in labels)} if labels else {}
    )
    annotations = [a["annotations"] for a in alerts]
    common_annotations = (
        {k: v for k, v in annotations[0].items() if all(x.get(k) == v for x in annotations)}
        if annotations
        else {}
    )
    return {
        "receiver": "bot",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": group},
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}',
        "truncatedAlerts": 0,
        **extra,
    }
