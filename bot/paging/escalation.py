"""The paging engine: notifications in, steps run when due, pages sent, answers taken.

``Pager`` is the imperative shell around the pure ``incidents`` rules. It stores each
decision (``PagingStore``) before anything is performed, so:

* the intake returns as soon as the notification's effect on its incident is stored —
  it never waits for Telegram or WhatsMate (``accept``);
* a due step is taken from storage by one runner on one replica, and the sends it owes
  are taken again by one sender before they are made; a send taken by a process that
  died is answered ``outcome unknown`` and never made again, and the chain goes on
  (``run_due``);
* a wait is a due time in storage, so one that ended while the bot was down runs once
  at the next start.

Pages go through the same send path as ``/wa`` and ``/tg`` (``bot.sends``: the
configured API version's endpoints and limits). The engine knows nothing of Telegram:
what the chat must see is stored as posts, which ``IncidentPoster`` posts through the
front end's ``Post``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.audit import AuditLog
from bot.clock import Clock
from bot.commands import SendText
from bot.config import AlertsConfig, Escalation, EscalationStep
from bot.errors import AlertmanagerError, LimitExceeded
from bot.gateway import WhatsMate
from bot.logs import get_logger
from bot.paging import incidents as rules
from bot.paging.alertmanager import Alertmanager
from bot.paging.groupcommit import GroupCommit
from bot.paging.intake import parse_notification
from bot.paging.posts import IncidentPoster
from bot.recipients import AddressBook, Recipient, looks_like_number, mask
from bot.replies import SendLine
from bot.sends import plan_send, run_send
from bot.storage.paging import Arriving, NewReply, PagingStore, SendDone, SendKind, SendRow
from bot.vocabulary import AuditEntry, Channel, Outcome

SCAN_EVERY_S = 2.0  # look for steps due on incidents another replica opened this often
DUE_BATCH = 500
STEP_RETRY_S = 60.0  # a step that failed is tried again this much later
INTAKE_BATCH = 64  # notifications per transaction: short enough for the runner to get in
_ACK = re.compile(r"\s*ack\b(?:\s+#?(\d+)\b)?", re.IGNORECASE)
log = get_logger("bot.paging")


class PagingObserver(Protocol):
    """What ``/metrics`` counts (``bot.metrics.Metrics``)."""

    def observe_notification(self, status: str, result: str) -> None: ...

    def observe_page(self, outcome: str) -> None: ...

    def observe_ack(self, seconds: float) -> None: ...

    def observe_open_incidents(self, count: int) -> None: ...


@dataclass(frozen=True)
class Answer:
    """How an acknowledgement or silence went: the one line to answer, and whether it
    changed the incident."""

    text: str
    done: bool


@dataclass(frozen=True)
class _Batch:
    """Sends of one incident that go out together: the same step, channel and text."""

    incident: int
    kind: SendKind
    channel: Channel
    body: str


class Pager:
    """Incidents from Alertmanager, escalated until someone answers."""

    def __init__(
        self,
        alerts: AlertsConfig,
        store: PagingStore,
        gateway: WhatsMate,
        audit: AuditLog,
        *,
        address_book: AddressBook,
        clock: Clock,
        replica: str,
        send_lease_s: float,
        finish_s: float | None = None,
        max_concurrency: int = 20,
        alertmanager: Alertmanager | None = None,
        observer: PagingObserver | None = None,
        posts_per_minute: float = 20,
    ) -> None:
        self.alerts = alerts
        self._store = store
        self._gateway = gateway
        self._audit = audit
        self._book = address_book
        self._clock = clock
        self._replica = replica
        self._send_lease_s = send_lease_s
        self._finish_s = send_lease_s if finish_s is None else finish_s  # on stop, at most
        self._max_concurrency = max_concurrency
        self._alertmanager = alertmanager
        self._observer = observer
        self.poster = IncidentPoster(store, clock, posts_per_minute)
        self._notifications: GroupCommit[Arriving, rules.Decision | None] = GroupCommit(
            lambda batch: store.notifications(batch, alerts.chat, clock.now()), most=INTAKE_BATCH
        )
        self._finished: GroupCommit[tuple[list[SendDone], NewReply], None] = GroupCommit(
            self._finish_sends
        )
        self._last_scan = -SCAN_EVERY_S
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look at the steps and sends now (the clock moved, or something was stored)."""
        self._wake.set()

    # -- intake ---------------------------------------------------------------------------

    async def accept(self, raw: bytes) -> None:
        """Store what one notification does to its incident; raises ``InboundRejected``
        for a body to refuse, anything else when it could not be stored."""
        try:
            notification = parse_notification(raw)
        except Exception:
            self._count("unknown", "rejected")
            raise
        now = self._clock.now()
        alerts = self.alerts
        limit = self._gateway.api.text_limits.get("message")

        def decide(current: rules.Incident | None, number: int) -> rules.Decision | None:
            if current is None:
                escalation = alerts.escalation_for(notification.common_labels)
                can_silence = alerts.alertmanager_url is not None
                return rules.open_incident(
                    number, notification, escalation, now, can_silence=can_silence
                )
            return rules.on_notification(
                current, notification, now, notify_resolved=alerts.notify_resolved, text_limit=limit
            )

        status = notification.status.value
        arriving = Arriving(notification.group, bool(notification.fingerprints), decide)
        try:
            decision = await self._notifications(arriving)
        except Exception:
            self._count(status, "unavailable")
            raise
        result = _result(decision)
        self._count(status, result)
        if result in ("opened", "resolved"):
            self._last_scan = -SCAN_EVERY_S  # the open-incidents gauge, at the next pass
        if decision is not None and decision.effects:
            log.info("incident_" + result, incident=decision.incident.number)
            self.wake()
            self.poster.wake()

    def _count(self, status: str, result: str) -> None:
        if self._observer is not None:
            self._observer.observe_notification(status, result)

    # -- the runner -----------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: run due steps and make the sends they owe. Cancelled (the bot
        stops), it takes no new step but finishes the pass under way and lets the sends
        in flight end, so their outcomes are stored rather than left ``outcome unknown``."""
        starting = True
        passing: asyncio.Future[None] | None = None
        try:
            while True:
                try:  # a pass is never cut in two: what it claims, it starts
                    passing = asyncio.ensure_future(self.run_due(starting=starting))
                    await asyncio.shield(passing)
                    starting = False
                except Exception:  # the database is away: look again at the next scan
                    log.exception("paging_pass_failed")
                if self._wake.is_set():  # more came in during the pass: at once
                    self._wake.clear()
                    continue
                timeout = SCAN_EVERY_S
                with contextlib.suppress(Exception):
                    upcoming = await self._store.next_due()
                    if upcoming is not None:
                        timeout = min(timeout, max(0.0, upcoming - self._clock.now()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            await self._finish_in_flight(passing)

    async def _finish_in_flight(self, passing: asyncio.Future[None] | None) -> None:
        """Stopping: the pass under way and the sends in flight get as long as the gateway
        takes for every attempt of one send; whatever is still out then is cancelled (and
        answered ``outcome unknown`` at the next start)."""
        if passing is not None and not passing.done():
            await asyncio.wait([passing], timeout=self._finish_s)
        if self._sending:
            log.info("paging_finishing_sends", sends=len(self._sending))
            _, late = await asyncio.wait(set(self._sending), timeout=self._finish_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def run_due(self, *, starting: bool = False) -> None:
        """One pass: answer interrupted sends, take due steps, start the sends owed.

        The sends run in the background: a page held by a slow gateway never holds up
        another incident's.
        """
        now = self._clock.now()
        scanning = starting or self._clock.monotonic() - self._last_scan >= SCAN_EVERY_S
        if scanning:  # what a dead replica (or process) left, and the gauge
            self._last_scan = self._clock.monotonic()
            interrupted = await self._store.interrupted_sends(now, starting=starting)
            if interrupted:
                await self._interrupted(interrupted, now)
            if self._observer is not None:
                self._observer.observe_open_incidents(await self._store.count_open())
        limit = self._gateway.api.text_limits.get("message")

        def step(incident: rules.Incident) -> rules.Decision | rules.Refused:
            """One incident's step; one that fails is logged and looked at later, so it
            never holds up the others' (they are taken in the same transaction)."""
            try:
                return rules.run_step(incident, self._chain(incident), now, text_limit=limit)
            except Exception:
                log.exception("paging_step_failed", incident=incident.number)
                return rules.postpone(incident, now + STEP_RETRY_S)

        decided, sends = await self._store.run_due(
            now, DUE_BATCH, step, self._replica, self._send_lease_s
        )
        if any(isinstance(e, rules.Reply) for d in decided for e in d.effects):
            self.poster.wake()
        batches: dict[_Batch, list[SendRow]] = defaultdict(list)
        for row in sends:
            batches[_Batch(row.incident, row.kind, row.channel, row.body)].append(row)
        for batch, rows in batches.items():
            task = asyncio.create_task(self._send(batch, rows))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("page_failed", exc_info=task.exception())

    async def wait_sent(self) -> None:
        """Until every send started so far has ended (the demo, tests)."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    def _escalation(self, incident: rules.Incident) -> Escalation | None:
        return self.alerts.escalations.get(incident.escalation or "")

    def _chain(self, incident: rules.Incident) -> tuple[EscalationStep, ...]:
        escalation = self._escalation(incident)
        return escalation.chain if escalation else ()

    async def _send(self, batch: _Batch, rows: list[SendRow]) -> None:
        """Make one batch of sends through the /wa and /tg path, then store how they
        ended and the reply that says so under the incident post."""
        recipients = tuple(row.recipient for row in rows)
        renewing = asyncio.create_task(self._renew([row.id for row in rows]))
        try:
            plan = plan_send(
                SendText(batch.channel, "page", batch.body), recipients, self._gateway, None
            )
            lines = await run_send(plan, self._gateway, self._max_concurrency)
        except LimitExceeded as exc:
            lines = [SendLine(r, Outcome.ERROR, f"not sent — {exc}") for r in recipients]
        finally:
            renewing.cancel()
        verb = "paged" if batch.kind is SendKind.PAGE else "RESOLVED sent to"
        text = "\n".join(
            f"{verb} {self._name(line.recipient)} on {batch.channel.label}: "
            f"{line.text}{f' (job {line.job_id})' if line.job_id else ''}"
            for line in lines
        )
        done = [SendDone(row.id, line.outcome.value) for row, line in zip(rows, lines, strict=True)]
        await self._finished((done, NewReply(batch.incident, text)))
        self.poster.wake()
        for line in lines:
            self._record(
                batch.incident, batch.kind, line.recipient, line.outcome, line.text, line.job_id
            )

    async def _renew(self, ids: list[int]) -> None:
        """While the sends run: renew their lease, a third of it at a time, so a slow
        gateway never makes another replica call them interrupted."""
        while True:
            await asyncio.sleep(self._send_lease_s / 3)
            try:
                await self._store.renew_sends(
                    ids, self._replica, self._clock.now() + self._send_lease_s
                )
            except Exception:  # the database is away: the next renewal, or the lease runs out
                log.warning("send_lease_renewal_failed", exc_info=True)

    async def _finish_sends(self, batch: list[tuple[list[SendDone], NewReply]]) -> list[None]:
        """How sends ended, for every batch that finished meanwhile: one commit."""
        done = [d for finished, _ in batch for d in finished]
        await self._store.finish_sends(done, [reply for _, reply in batch], self._clock.now())
        return [None] * len(batch)

    async def _interrupted(self, rows: Sequence[SendRow], now: float) -> None:
        """Sends a dead process took: outcome unknown, said under the incident post."""
        replies = []
        for row in rows:
            verb = "paged" if row.kind is SendKind.PAGE else "RESOLVED sent to"
            text = (
                f"{verb} {self._name(row.recipient)} on {row.channel.label}: outcome unknown — "
                "the bot stopped while sending, so it may have been delivered. Not sent again."
            )
            replies.append(NewReply(row.incident, text))
            self._record(
                row.incident, row.kind, row.recipient, Outcome.UNKNOWN, "interrupted", None
            )
        await self._store.add_replies(replies)
        self.poster.wake()

    def _record(
        self,
        incident: int,
        kind: SendKind,
        recipient: Recipient,
        outcome: Outcome,
        detail: str,
        job_id: str | None,
    ) -> None:
        self._audit.record(
            AuditEntry(
                self.alerts.chat,
                0,
                kind.value,
                (recipient.audit_name,),
                outcome,
                f"#{incident} {detail}",
                job_ids=(job_id,) if job_id else (),
            )
        )
        if kind is SendKind.PAGE and self._observer is not None:
            self._observer.observe_page(outcome.value)

    def _name(self, recipient: Recipient) -> str:
        """How the chat names a recipient: as the config does, numbers masked."""
        if recipient.group is not None or not looks_like_number(recipient.written):
            return recipient.written
        return self._book.alias_of(recipient.number) or mask(recipient.number)

    # -- answers ------------------------------------------------------------------------

    async def inbound_ack(self, via: Channel, number: str, message: str) -> bool:
        """A message back from a paged number whose first word is ``ack``: True when it
        acknowledged (or was told who already had); False: an ordinary inbound message."""
        match = _ACK.match(message)
        if match is None:
            return False
        named = int(match[1]) if match[1] else None
        incident = await self._store.paged(number, named)
        if incident is None:
            return False
        who = self._book.alias_of(number) or mask(number)
        answer = await self.acknowledge(incident, who, via)
        if not answer.done:  # already taken: said under the post, where the team reads it
            await self.report_under(incident, f"{who} on {via.label}: ack — {answer.text}")
        return True

    async def acknowledge(self, number: int, by: str, via: Channel) -> Answer:
        """Acknowledge incident ``number``, once; a second one is told who took it."""
        now = self._clock.now()
        decision = await self._store.change(
            number, now, lambda incident: rules.acknowledge(incident, by, via, now)
        )
        if decision is None:
            return Answer(f"No incident #{number}.", False)
        if isinstance(decision, rules.Refused):
            return Answer(decision.text, False)
        self.poster.wake()
        incident = decision.incident
        self._audit.record(
            AuditEntry(
                self.alerts.chat, 0, "ack", (), Outcome.OK, f"#{number} by {by} on {via.label}"
            )
        )
        if self._observer is not None:
            self._observer.observe_ack(now - incident.opened_at)
        assert incident.ack is not None
        return Answer(f"#{number} {rules.ack_text(incident.ack, incident)}.", True)

    async def silence(self, number: int, seconds: float, by: str) -> Answer:
        """Silence incident ``number`` in Alertmanager for ``seconds``."""
        incident = await self._store.get(number)
        if incident is None:
            return Answer(f"No incident #{number}.", False)
        if not incident.open:
            return Answer(f"#{number} is already resolved.", False)
        if self._alertmanager is None:
            return Answer("Silencing needs alerts.alertmanager_url in the config.", False)
        now = self._clock.now()
        until = now + seconds
        try:
            silence_id = await self._alertmanager.create_silence(
                incident.labels,
                starts=now,
                ends=until,
                created_by=by,
                comment=f"whatsmate-bot incident #{number} {incident.alertname}",
            )
        except AlertmanagerError as exc:
            return Answer(f"Not silenced: {exc}. Paging goes on.", False)
        decision = await self._store.change(
            number, now, lambda current: rules.silence(current, silence_id, until, by, now)
        )
        self.poster.wake()
        self._audit.record(
            AuditEntry(
                self.alerts.chat, 0, "silence", (), Outcome.OK, f"#{number} {silence_id} by {by}"
            )
        )
        if not isinstance(decision, rules.Decision):
            return Answer(decision.text if decision else f"No incident #{number}.", False)
        return Answer(
            f"Silenced #{number} until {rules.clock_text(until)} (silence {silence_id}).", True
        )

    async def report_under(self, number: int, text: str) -> None:
        """Say ``text`` under the incident post (e.g. why a button press failed)."""
        await self._store.add_replies([NewReply(number, text)])
        self.poster.wake()

    async def incidents_text(self) -> str:
        """``/incidents``: the open ones, one line each."""
        now = self._clock.now()
        found = await self._store.open_incidents()
        if not found:
            return "No open incidents."
        return "\n".join(rules.incident_line(i, self._escalation(i), now) for i in found)


def _result(decision: rules.Decision | None) -> str:
    """What a notification did, as /metrics counts it."""
    if decision is None:
        return "ignored"
    if not decision.effects:
        return "unchanged"
    if not decision.incident.open:
        return "resolved"
    if any(isinstance(e, rules.Post) for e in decision.effects):
        return "opened"
    return "changed"
