"""The incident state machine. Pure: ``(incident, event) -> Decision(incident, effects)``.

An incident is one alert group from its first firing notification until one in which
every alert is resolved. Each function below takes the current ``Incident`` and one
event — a notification, a step that fell due, an acknowledgement, a silence — and returns
the new ``Incident`` and the effects to perform: the opening post, replies under it,
pages, RESOLVED messages. Nothing here does I/O or reads a clock: the runner
(``escalation``) stores the new state and claims each effect before performing it, which
is what makes "once, across crashes and replicas" checkable, and the rules testable
without a server.

The escalation's position is a cursor into its chain of steps (repeats spelled out):
``step`` is the next page to run (or the end, ``len(chain)``) and ``due`` when. Waits
are folded into ``due`` as the cursor moves past them, so a wait is a stored time, never
a sleep a crash forgets; ``due`` is None whenever nothing is left to run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from bot.config import Escalation, EscalationStep, PageStep, WaitStep
from bot.paging.intake import Alert, Notification
from bot.recipients import Recipient
from bot.vocabulary import Channel

LISTED_ALERTS = 10  # the opening post names this many alerts, then "and N more"
ACK_HINT = "Reply ACK to acknowledge"
ANSWER_WINDOW_S = 300.0  # a chain with no wait gives its last page this long to be answered


@dataclass(frozen=True)
class Ack:
    by: str  # alice, or the Telegram user's name
    via: Channel
    at: float


@dataclass(frozen=True)
class Incident:
    number: int
    group: str  # the digest of Alertmanager's groupKey
    alertname: str
    summary: str
    labels: Mapping[str, str]  # commonLabels: what a silence matches
    opened_at: float
    firing: Mapping[str, str]  # fingerprint -> how the alert is named in posts
    escalation: str | None  # None: no route matched, nobody is paged
    step: int = 0
    due: float | None = None
    ack: Ack | None = None
    silenced_until: float | None = None
    silence_id: str | None = None
    exhausted: bool = False  # every step ran and nobody acknowledged
    resolved_at: float | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class Post:
    """The opening post in the incident chat: Acknowledge (and Silence 1h) buttons."""

    text: str
    silence: bool


@dataclass(frozen=True)
class Reply:
    """A reply under the incident post."""

    text: str


@dataclass(frozen=True)
class Page:
    """One ``page`` step: the same message to every recipient, on one channel."""

    step: int
    recipients: tuple[Recipient, ...]
    channel: Channel
    text: str


@dataclass(frozen=True)
class NotifyResolved:
    """A RESOLVED message to everyone paged for the incident, on the channel they were."""

    text: str


Effect = Post | Reply | Page | NotifyResolved


@dataclass(frozen=True)
class Decision:
    incident: Incident
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class Refused:
    """An event that changes nothing, and the one line that says why."""

    text: str


# -- events -----------------------------------------------------------------------------


def open_incident(
    number: int,
    notification: Notification,
    escalation: Escalation | None,
    now: float,
    *,
    can_silence: bool,
) -> Decision:
    """A firing notification for a group with no open incident."""
    firing = _names(notification.firing, notification.common_labels)
    incident = Incident(
        number=number,
        group=notification.group,
        alertname=notification.alertname,
        summary=notification.summary,
        labels=dict(notification.common_labels),
        opened_at=now,
        firing=firing,
        escalation=escalation.name if escalation else None,
    )
    if escalation is not None:
        step, due = _cursor(escalation.chain, 0, now)
        incident = replace(incident, step=step, due=due)
    return Decision(incident, (Post(_opening(incident, notification, escalation), can_silence),))


def on_notification(
    incident: Incident,
    notification: Notification,
    now: float,
    *,
    notify_resolved: bool,
    text_limit: int | None = None,
) -> Decision:
    """A later notification for an open incident: nothing, a change, or resolved (the
    RESOLVED message cut to ``text_limit``, as pages are)."""
    if not notification.fingerprints:
        return _resolve(incident, now, notify_resolved, text_limit)
    firing = _names(notification.firing, notification.common_labels)
    if set(firing) == set(incident.firing):
        return Decision(incident)  # Alertmanager's repeat, or the HA twin's copy
    started = [name for key, name in firing.items() if key not in incident.firing]
    stopped = [name for key, name in incident.firing.items() if key not in firing]
    lines = [f"#{incident.number} {incident.alertname} changed"]
    lines += [f"started firing: {name}" for name in started]
    lines += [f"stopped firing: {name}" for name in stopped]
    changed = replace(incident, firing=firing, labels=dict(notification.common_labels))
    return Decision(changed, (Reply("\n".join(lines)),))


def _resolve(
    incident: Incident, now: float, notify_resolved: bool, text_limit: int | None
) -> Decision:
    resolved = replace(incident, resolved_at=now, due=None)
    effects: list[Effect] = [
        Reply(
            f"RESOLVED #{incident.number} {incident.alertname}: resolved after "
            f"{duration_text(now - incident.opened_at)}"
        )
    ]
    if notify_resolved:
        head = f"RESOLVED #{incident.number} {incident.alertname}"
        effects.append(NotifyResolved(_cut(head, incident.summary, "", text_limit)))
    return Decision(resolved, tuple(effects))


def run_step(
    incident: Incident,
    chain: Sequence[EscalationStep],
    now: float,
    *,
    text_limit: int | None,
) -> Decision:
    """The step at the cursor fell due: page (and move on), or say nobody acknowledged."""
    if incident.due is None or not incident.open:
        return Decision(incident)
    at = next((i for i in range(incident.step, len(chain)) if isinstance(chain[i], PageStep)), None)
    if at is None:  # past the end — or, after a config edit, only waits are left
        done = replace(incident, due=None, exhausted=True)
        steps = len(chain)
        text = (
            f"#{incident.number} {incident.alertname}: nobody acknowledged "
            f"(all {steps} step{'s' if steps != 1 else ''} of {incident.escalation} ran)"
        )
        return Decision(done, (Reply(text),))
    page = chain[at]  # the cursor rests on a page, unless the escalation was edited since
    assert isinstance(page, PageStep)
    step, due = _cursor(chain, at + 1, now)
    effect = Page(at, page.recipients, page.channel, page_text(incident, text_limit))
    return Decision(replace(incident, step=step, due=due), (effect,))


def postpone(incident: Incident, until: float) -> Decision:
    """A step that could not be run (a bug): looked at again at ``until``, not at once."""
    return Decision(replace(incident, due=until))


def acknowledge(incident: Incident, by: str, via: Channel, now: float) -> Decision | Refused:
    """Someone took the incident: the rest of the escalation stops. Once."""
    if not incident.open:
        return Refused(f"#{incident.number} is already resolved.")
    if incident.ack is not None:
        return Refused(f"#{incident.number} was already {ack_text(incident.ack, incident)}.")
    ack = Ack(by, via, now)
    taken = replace(incident, ack=ack, due=None)
    return Decision(taken, (Reply(ack_text(ack, incident)),))


def silence(
    incident: Incident, silence_id: str, until: float, by: str, now: float
) -> Decision | Refused:
    """Alertmanager made a silence for the incident: the escalation stops too."""
    if not incident.open:
        return Refused(f"#{incident.number} is already resolved.")
    silenced = replace(incident, silenced_until=until, silence_id=silence_id, due=None)
    text = f"silenced by {by} until {clock_text(until)} (silence {silence_id})"
    return Decision(silenced, (Reply(text),))


# -- what people read ---------------------------------------------------------------------


def page_text(incident: Incident, limit: int | None) -> str:
    """FIRING, the number, the alert name and summary (cut to ``limit``), and the ACK hint."""
    head = f"FIRING #{incident.number} {incident.alertname}"
    return _cut(head, incident.summary, f"\n{ACK_HINT}", limit)


def _cut(head: str, summary: str, tail: str, limit: int | None) -> str:
    """``head: summary`` then ``tail``, within ``limit``: the summary gives way first."""
    colon = f": {summary}" if summary else ""
    if limit is not None and len(head) + len(colon) + len(tail) > limit:
        room = max(0, limit - len(head) - len(tail) - 1)
        colon = colon[:room] + "…" if room else ""
        head = head[: limit - len(tail) - len(colon)]
    return f"{head}{colon}{tail}"


def ack_text(ack: Ack, incident: Incident) -> str:
    after = duration_text(ack.at - incident.opened_at)
    return f"acknowledged by {ack.by} on {ack.via.label} after {after}"


def state_text(incident: Incident, escalation: Escalation | None, now: float) -> str:
    """What ``/incidents`` says the escalation is doing: the step among the configured
    ones and, when it repeats, the round (``paging, step 2 of 5, round 2 of 2``)."""
    if incident.ack is not None:
        return f"acknowledged by {incident.ack.by}"
    if incident.silenced_until is not None:
        return f"silenced until {clock_text(incident.silenced_until)}"
    if incident.exhausted:
        return "nobody acknowledged"
    if incident.escalation is None or incident.due is None:
        return "nobody paged (no route matched)"
    if escalation is None or not escalation.steps:  # taken out of the config since
        return "paging"
    steps, rounds = len(escalation.steps), escalation.repeat + 1
    running = incident.step + 1 if incident.due <= now else incident.step
    at = max(1, min(running, steps * rounds)) - 1  # where in the chain, repeats spelled out
    text = f"paging, step {at % steps + 1} of {steps}"
    return f"{text}, round {at // steps + 1} of {rounds}" if rounds > 1 else text


def incident_line(incident: Incident, escalation: Escalation | None, now: float) -> str:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(incident.opened_at))
    state = state_text(incident, escalation, now)
    return f"#{incident.number} {incident.alertname} — firing since {since} — {state}"


def duration_text(seconds: float) -> str:
    """``190`` -> ``3m 10s``: the largest unit and the next one (when not zero)."""
    total = max(0, round(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    first = next((i for i, (_, size) in enumerate(units) if total >= size), len(units) - 1)
    name, size = units[first]
    parts = [f"{total // size}{name}"]
    if first + 1 < len(units):
        next_name, next_size = units[first + 1]
        if rest := total % size // next_size:
            parts.append(f"{rest}{next_name}")
    return " ".join(parts)


def clock_text(at: float) -> str:
    """A time of day as the team reads it (the server's timezone): ``14:05``."""
    return time.strftime("%H:%M", time.localtime(at))


def _opening(incident: Incident, notification: Notification, escalation: Escalation | None) -> str:
    lines = [f"FIRING #{incident.number} {incident.alertname}"]
    names = list(incident.firing.values())
    lines += [f"• {name}" for name in names[:LISTED_ALERTS]]
    more = len(names) - LISTED_ALERTS + notification.truncated
    if more > 0:
        lines.append(f"and {more} more")
    if escalation is None:
        lines.append("No route matched: nobody is paged.")
    else:
        lines.append(
            f"Paging: {escalation.name}. Acknowledge below, /ack {incident.number}, or ACK."
        )
    return "\n".join(lines)


def _names(alerts: Sequence[Alert], common: Mapping[str, str]) -> dict[str, str]:
    """fingerprint -> the alert as posts name it: its summary, else what sets it apart."""
    names = {}
    for alert in alerts:
        own = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if common.get(k) != v)
        names[alert.fingerprint] = alert.summary or own or alert.labels.get("alertname", "alert")
    return names


def _cursor(chain: Sequence[EscalationStep], start: int, now: float) -> tuple[int, float]:
    """The next page at or after ``start`` and when it is due: the waits before it added.

    Past the last step, the due time is when "nobody acknowledged" is said: a chain that
    ends on a page still gives its last recipient time to answer — as long as the chain's
    last wait, or ``ANSWER_WINDOW_S`` when it has none — rather than giving up the instant
    the page leaves.
    """
    due, step = now, start
    while step < len(chain) and isinstance(chain[step], WaitStep):
        wait = chain[step]
        assert isinstance(wait, WaitStep)
        due += wait.seconds
        step += 1
    if step == len(chain) and start > 0 and due == now:
        waits = [s.seconds for s in chain if isinstance(s, WaitStep)]
        due += waits[-1] if waits else ANSWER_WINDOW_S
    return step, due


def merged_line(effect: Post | Reply, incident: Incident | int) -> str:
    """The effect as one line of a merged post (a storm: one post lists many); a reply
    needs only the incident's number."""
    if isinstance(effect, Post):
        assert isinstance(incident, Incident)
        number = incident.number
        summary = f": {incident.summary}" if incident.summary else ""
        return f"FIRING #{number} {incident.alertname}{summary} — /ack {number}"
    number = incident if isinstance(incident, int) else incident.number
    text = " / ".join(line for line in effect.text.splitlines() if line.strip())
    return text if f"#{number} " in f"{text} " else f"#{number}: {text}"
