"""Alertmanager's webhook body (``"version": "4"``) -> ``Notification``. Pure: no I/O.

The refusals are part of the contract, because Alertmanager drops a notification
answered 4xx and retries one answered 5xx: only a body that is not JSON, or lacks
``groupKey``, a ``status`` of ``firing``/``resolved`` or an ``alerts`` list, is a 400
(and one over ``MAX_BODY_BYTES`` a 413). Everything else in a body is read leniently —
a missing annotation or fingerprint never costs the team its page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bot.errors import InboundRejected
from bot.untrusted import decode_json_object

MAX_BODY_BYTES = 1_000_000  # 1 MB, as SPEC counts it


class AlertStatus(Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    fingerprint: str
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = ""

    @property
    def summary(self) -> str:
        """Its ``summary`` annotation, else its ``description`` ("" when neither)."""
        return _summary_of(self.annotations)


@dataclass(frozen=True)
class Notification:
    """One webhook call: the state of one alert group."""

    status: AlertStatus
    group_key: str
    alerts: tuple[Alert, ...]
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str = ""
    truncated: int = 0

    @property
    def group(self) -> str:
        """The group key as storage keeps it: fixed length, whatever Alertmanager's is."""
        return hashlib.sha256(self.group_key.encode()).hexdigest()

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status is AlertStatus.FIRING)

    @property
    def fingerprints(self) -> frozenset[str]:
        """The set of firing alerts: a repeat or an HA twin has the same one."""
        return frozenset(a.fingerprint for a in self.firing)

    @property
    def alertname(self) -> str:
        for labels in (self.common_labels, self.group_labels, *(a.labels for a in self.alerts)):
            if labels.get("alertname"):
                return labels["alertname"]
        return "alert"

    @property
    def summary(self) -> str:
        """The group's summary, else the first firing alert's ("" when none has one)."""
        found = _summary_of(self.common_annotations)
        return found or next((a.summary for a in self.firing if a.summary), "")


def parse_notification(raw: bytes) -> Notification:
    """The notification in ``raw``, or ``InboundRejected`` (400, 413) saying why not."""
    if len(raw) > MAX_BODY_BYTES:
        raise InboundRejected(413, f"body over {MAX_BODY_BYTES} bytes")
    data = decode_json_object(raw)  # odd JSON is a 400, judged as on every route
    group_key = data.get("groupKey")
    if not isinstance(group_key, str) or not group_key:
        raise InboundRejected(400, "groupKey must be a non-empty text")
    status = _status(data.get("status"))
    if status is None:
        raise InboundRejected(400, "status must be firing or resolved")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise InboundRejected(400, "alerts must be a list")
    truncated = data.get("truncatedAlerts")
    return Notification(
        status=status,
        group_key=group_key,
        alerts=tuple(_alert(item, status) for item in alerts if isinstance(item, dict)),
        group_labels=_texts(data.get("groupLabels")),
        common_labels=_texts(data.get("commonLabels")),
        common_annotations=_texts(data.get("commonAnnotations")),
        external_url=_text(data.get("externalURL")),
        truncated=truncated if isinstance(truncated, int) and truncated > 0 else 0,
    )


def _alert(item: dict[str, Any], default: AlertStatus) -> Alert:
    labels = _texts(item.get("labels"))
    fingerprint = _text(item.get("fingerprint")) or label_fingerprint(labels)
    return Alert(
        status=_status(item.get("status")) or default,
        labels=labels,
        annotations=_texts(item.get("annotations")),
        fingerprint=fingerprint,
        starts_at=_text(item.get("startsAt")),
        ends_at=_text(item.get("endsAt")),
        generator_url=_text(item.get("generatorURL")),
    )


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """For senders that give no fingerprint: the same labels, the same alert."""
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _status(value: object) -> AlertStatus | None:
    return next((s for s in AlertStatus if s.value == value), None)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _texts(value: object) -> dict[str, str]:
    """A label or annotation set: text values kept, numbers written out, the rest dropped."""
    if not isinstance(value, dict):
        return {}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v)
        for k, v in value.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    }


def _summary_of(annotations: Mapping[str, str]) -> str:
    return (annotations.get("summary") or annotations.get("description") or "").strip()
