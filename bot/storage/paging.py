"""Incident paging's state: every query once, over the storage layer's ``Driver``.

Incidents (the state machine's ``Incident`` as JSON, with the columns queries need),
the sends a step or a resolution owes (pages and RESOLVED messages: claimed before they
are made, so each is made once across crashes and replicas), and the posts owed to the
chat (an outbox, like the bridge's). Every change to an incident runs in one
transaction under the incident's lock — across replicas on PostgreSQL — so two replicas
given the same notification open one incident, and a due step is claimed by one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bot.paging.incidents import (
    Ack,
    Decision,
    Incident,
    NotifyResolved,
    Page,
    Post,
    Refused,
    Reply,
    merged_line,
)
from bot.recipients import Recipient
from bot.storage.driver import Connection, Driver
from bot.vocabulary import Channel

_EVER = 1e300  # later than any lease


class SendKind(Enum):
    PAGE = "page"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class SendRow:
    """A page or RESOLVED message an incident owes one recipient."""

    id: int
    incident: int
    kind: SendKind
    step: int
    recipient: Recipient
    channel: Channel
    body: str


@dataclass(frozen=True)
class SendDone:
    """How a claimed send ended (``outcome``: an audit ``Outcome`` value)."""

    id: int
    outcome: str


@dataclass(frozen=True)
class PostRow:
    """A post the chat is owed: an incident's opening post or a reply under it."""

    id: int
    incident: int
    chat_id: int
    opening: bool
    body: str
    line: str  # the same, as one line of a merged post
    silence: bool  # an opening post with a Silence 1h button
    incident_post: int | None  # the incident post, once posted: where replies go
    maybe_sent: bool = False  # an earlier try's answer was lost: it may be in the chat
    orphan: bool = False  # a reply with no post to go under, nor one to come: on its own


Opener = Callable[[Incident | None, int], Decision | None]
Change = Callable[[Incident], Decision | Refused]


@dataclass(frozen=True)
class Arriving:
    """A notification to apply to its group's open incident (``decide``: the rules)."""

    group: str
    opens: bool  # it has firing alerts: with no open incident, it opens one
    decide: Opener


@dataclass(frozen=True)
class NewReply:
    incident: int
    text: str


def incident_to_json(incident: Incident) -> str:
    ack = incident.ack
    return json.dumps(
        {
            "number": incident.number,
            "group": incident.group,
            "alertname": incident.alertname,
            "summary": incident.summary,
            "labels": dict(incident.labels),
            "opened_at": incident.opened_at,
            "firing": dict(incident.firing),
            "escalation": incident.escalation,
            "step": incident.step,
            "due": incident.due,
            "ack": {"by": ack.by, "via": ack.via.value, "at": ack.at} if ack else None,
            "silenced_until": incident.silenced_until,
            "silence_id": incident.silence_id,
            "exhausted": incident.exhausted,
            "resolved_at": incident.resolved_at,
        },
        ensure_ascii=False,
    )


def incident_from_json(text: str) -> Incident:
    data: dict[str, Any] = json.loads(text)
    ack = data.pop("ack")
    return Incident(
        **data,
        ack=Ack(ack["by"], Channel(ack["via"]), ack["at"]) if ack else None,
    )


class PagingStore:
    """Incidents, their sends and their posts, in the bot's database."""

    def __init__(self, driver: Driver) -> None:
        self._db = driver

    # -- incidents ------------------------------------------------------------------------

    async def notifications(
        self, arriving: Sequence[Arriving], chat_id: int, now: float
    ) -> list[Decision | None]:
        """Apply notifications to their groups' open incidents, in one transaction (one
        commit for a burst, a handful of statements whatever its size); one result each,
        in order (None: nothing to change).

        The groups' rows are locked in one order (their keys), so replicas applying
        overlapping bursts never wait on each other in a circle; notifications of one
        group are applied in the order they came, each to what the one before made.
        """
        groups = sorted({a.group for a in arriving})
        async with self._db.transaction(durable=True) as tx:  # 200 means on disk
            current = await self._open_of(tx, groups)
            new = [g for g in groups if g not in current and any(
                a.opens for a in arriving if a.group == g)]  # fmt: skip
            numbers = await self._draw_numbers(tx, new, chat_id, now) if new else {}
            missing = [g for g in new if g not in numbers]  # opened meanwhile elsewhere
            if missing:
                current |= await self._open_of(tx, missing)
            results: list[Decision | None] = []
            effects: list[tuple[Decision, int]] = []
            for item in arriving:
                found = current.get(item.group)
                number = numbers.pop(item.group, 0) if found is None and item.opens else 0
                if found is None and not number:
                    results.append(None)  # resolved, or nothing firing: nothing to change
                    continue
                decision = item.decide(found, number)
                results.append(decision)
                if decision is not None and (found is None or decision.effects):
                    current[item.group] = decision.incident
                    effects.append((decision, chat_id))
            await self._save(tx, effects, now)
        return results

    async def _open_of(self, tx: Connection, groups: Sequence[str]) -> dict[str, Incident]:
        """The open incidents of ``groups``, their rows held until the commit."""
        marks = ", ".join("?" * len(groups))
        rows = await tx.fetch(
            f"SELECT grp, state FROM incidents WHERE is_open AND grp IN ({marks})"
            f" ORDER BY grp{self._for_update}",
            *groups,
        )
        return {grp: incident_from_json(state) for grp, state in rows}

    async def _draw_numbers(
        self, tx: Connection, groups: Sequence[str], chat_id: int, now: float
    ) -> dict[str, int]:
        """A new incident's number for each group; the group's partial unique index makes
        a replica that opened one meanwhile win (that group is left out: updated instead)."""
        values = ", ".join("(?, TRUE, ?, ?, '{}')" for _ in groups)
        rows = await tx.fetch(
            f"INSERT INTO incidents (grp, is_open, opened_at, chat_id, state) VALUES {values}"
            " ON CONFLICT (grp) WHERE is_open DO NOTHING RETURNING grp, number",
            *(value for group in groups for value in (group, now, chat_id)),
        )
        return {grp: int(number) for grp, number in rows}

    async def change(self, number: int, now: float, decide: Change) -> Decision | Refused | None:
        """Apply one event to incident ``number``; None when there is no such incident."""
        async with self._db.transaction() as tx:
            found = await tx.fetchone(
                f"SELECT state, chat_id FROM incidents WHERE number = ?{self._for_update}", number
            )
            if found is None:
                return None
            decision = decide(incident_from_json(found[0]))
            if isinstance(decision, Decision):
                await self._save(tx, [(decision, int(found[1]))], now)
            return decision

    async def run_due(
        self, now: float, limit: int, decide: Change, owner: str, lease_s: float
    ) -> tuple[list[Decision], list[SendRow]]:
        """One transaction: apply ``decide`` to every incident whose next step is due,
        then take every send no one has taken (those steps' pages among them). A due
        step, and a send, is taken by one caller on any replica (rows another replica
        holds are skipped: they are its to run); a send taken is never made again."""
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT state, chat_id FROM incidents WHERE due IS NOT NULL AND due <= ?"
                f" ORDER BY due LIMIT ?{self._skip_locked}",
                now,
                limit,
            )
            decided = [(decide(incident_from_json(state)), int(chat)) for state, chat in rows]
            decisions = [(d, chat) for d, chat in decided if isinstance(d, Decision)]
            await self._save(tx, decisions, now)
            sends = await tx.fetch(
                f"SELECT {_SEND_COLUMNS} FROM incident_sends WHERE state = 'waiting'"
                f" ORDER BY id LIMIT 1000{self._skip_locked}"
            )
            await tx.executemany(
                "UPDATE incident_sends SET state = 'sending', owner = ?, lease_until = ?"
                " WHERE id = ?",
                [(owner, now + lease_s, row[0]) for row in sends],
            )
        return [d for d, _ in decisions], [_send(row) for row in sends]

    @property
    def _for_update(self) -> str:
        return self._db.dialect.for_update

    @property
    def _skip_locked(self) -> str:
        return self._db.dialect.skip_locked

    async def _save(
        self, tx: Connection, decisions: Sequence[tuple[Decision, int]], now: float
    ) -> None:
        """Store decisions (and the chat of each) with their effects: a few statements
        for any number of them."""
        if not decisions:
            return
        await tx.executemany(
            "UPDATE incidents SET is_open = ?, due = ?, state = ? WHERE number = ?",
            [
                (d.incident.open, d.incident.due, incident_to_json(d.incident), d.incident.number)
                for d, _ in decisions
            ],
        )
        posts, pages, resolved = [], [], []
        for decision, chat_id in decisions:
            incident = decision.incident
            for effect in decision.effects:
                if isinstance(effect, Post | Reply):
                    opening = isinstance(effect, Post)
                    silence = isinstance(effect, Post) and effect.silence
                    line = merged_line(effect, incident)
                    posts.append((incident.number, chat_id, opening, effect.text, line, silence))
                elif isinstance(effect, Page):
                    pages += [
                        (incident.number, effect.step, r.written, r.number, r.group,
                         effect.channel.value, effect.text, now)
                        for r in effect.recipients
                    ]  # fmt: skip
                elif isinstance(effect, NotifyResolved):
                    resolved.append((effect.text, now, incident.number))
        if posts:
            await tx.executemany(
                "INSERT INTO incident_posts (incident, chat_id, opening, body, line, silence)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                posts,
            )
        if pages:
            await tx.executemany(
                "INSERT INTO incident_sends (incident, kind, step, written, number,"
                " gateway_group, channel, body, state, created)"
                " VALUES (?, 'page', ?, ?, ?, ?, ?, ?, 'waiting', ?)",
                pages,
            )
        if resolved:  # everyone paged (who may have got it) is told, once each
            await tx.executemany(
                "INSERT INTO incident_sends (incident, kind, step, written, number,"
                " gateway_group, channel, body, state, created)"
                " SELECT incident, 'resolved', -1, MIN(written), number, gateway_group,"
                " channel, CAST(? AS TEXT), 'waiting', CAST(? AS DOUBLE PRECISION)"
                " FROM incident_sends"
                " WHERE incident = ? AND kind = 'page'"
                " AND (outcome IS NULL OR outcome IN ('ok', 'unknown', 'dry-run'))"
                " GROUP BY incident, number, gateway_group, channel",
                resolved,
            )

    async def get(self, number: int) -> Incident | None:
        row = await self._db.fetchone("SELECT state FROM incidents WHERE number = ?", number)
        return incident_from_json(row[0]) if row else None

    async def open_incidents(self) -> list[Incident]:
        rows = await self._db.fetch("SELECT state FROM incidents WHERE is_open ORDER BY number")
        return [incident_from_json(row[0]) for row in rows]

    async def count_open(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM incidents WHERE is_open")
        return int(row[0]) if row else 0

    async def next_due(self) -> float | None:
        row = await self._db.fetchone("SELECT MIN(due) FROM incidents WHERE due IS NOT NULL")
        return float(row[0]) if row and row[0] is not None else None

    async def paged(self, number: str, incident: int | None) -> int | None:
        """The open incident that paged ``number`` (the latest; or ``incident``, if it did)."""
        sql = (
            "SELECT s.incident FROM incident_sends s JOIN incidents i ON i.number = s.incident"
            " WHERE s.number = ? AND s.kind = 'page' AND i.is_open"
        )
        args: tuple[object, ...] = (number,)
        if incident is not None:
            sql += " AND s.incident = ?"
            args = (number, incident)
        row = await self._db.fetchone(sql + " ORDER BY s.id DESC LIMIT 1", *args)
        return int(row[0]) if row else None

    # -- sends ---------------------------------------------------------------------------

    async def finish_sends(
        self, done: Sequence[SendDone], replies: Sequence[NewReply], now: float
    ) -> None:
        """Outcomes in, bodies dropped, replies owed; answers from those reached land
        under the incident post (the bridge's threads)."""
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE incident_sends SET state = 'done', outcome = ?, body = NULL,"
                " lease_until = NULL WHERE id = ? AND state = 'sending'",
                [(d.outcome, d.id) for d in done],
            )
            await self._add_replies(tx, replies)
            await self._thread(tx, sorted({r.incident for r in replies}), now)

    async def interrupted_sends(self, now: float, *, starting: bool) -> list[SendRow]:
        """Sends taken by a replica that died before it knew how they ended: answered
        ``unknown``, never made again. On SQLite one process owns the file, so at start
        everything still taken was taken by a process that is gone — and later, nothing
        is (what is taken is this live process's own, however slow); on PostgreSQL, a
        send whose lease ran out (its sender renews it while it runs, ``renew_sends``)."""
        if self._db.dialect.one_process and not starting:
            return []
        cutoff = _EVER if self._db.dialect.one_process else now
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {_SEND_COLUMNS} FROM incident_sends"
                f" WHERE state = 'sending' AND lease_until < ? ORDER BY id{self._skip_locked}",
                cutoff,
            )
            await tx.executemany(
                "UPDATE incident_sends SET state = 'done', outcome = 'unknown', body = NULL"
                " WHERE id = ?",
                [(row[0],) for row in rows],
            )
        return [_send(row) for row in rows]

    async def renew_sends(self, ids: Sequence[int], owner: str, until: float) -> None:
        """The sender of these sends is alive and still sending: their lease runs to
        ``until``, so no other replica calls them interrupted."""
        await self._db.executemany(
            "UPDATE incident_sends SET lease_until = ? WHERE id = ? AND state = 'sending'"
            " AND owner = ?",
            [(until, i, owner) for i in ids],
        )

    async def add_replies(self, replies: Sequence[NewReply]) -> None:
        async with self._db.transaction() as tx:
            await self._add_replies(tx, replies)

    async def _add_replies(self, tx: Connection, replies: Sequence[NewReply]) -> None:
        await tx.executemany(
            "INSERT INTO incident_posts (incident, chat_id, opening, body, line, silence)"
            " SELECT number, chat_id, FALSE, CAST(? AS TEXT), CAST(? AS TEXT), FALSE"
            " FROM incidents WHERE number = ?",
            [(r.text, merged_line(Reply(r.text), r.incident), r.incident) for r in replies],
        )

    async def _thread(self, tx: Connection, numbers: Sequence[int], now: float) -> None:
        """Answers from the numbers these incidents reached land under their posts."""
        await tx.executemany(
            "INSERT INTO threads (number, chat_id, message_id, at)"
            " SELECT s.number, MIN(i.chat_id), MIN(i.post_id), CAST(? AS DOUBLE PRECISION)"
            " FROM incident_sends s"
            " JOIN incidents i ON i.number = s.incident"
            " WHERE s.incident = ? AND i.post_id IS NOT NULL AND s.gateway_group IS NULL"
            " AND s.outcome IN ('ok', 'unknown', 'dry-run') GROUP BY s.number"
            " ON CONFLICT (number) DO UPDATE SET chat_id = excluded.chat_id,"
            " message_id = excluded.message_id, at = excluded.at",
            [(now, number) for number in numbers],
        )

    # -- posts ---------------------------------------------------------------------------

    async def waiting_posts(self, now: float) -> list[PostRow]:
        """The posts waiting (and not taken by a live replica), oldest first. A reply
        whose incident has no post and no opening waiting (given up: its chat refused
        the bot) is an orphan: it goes on its own."""
        rows = await self._db.fetch(
            "SELECT p.id, p.incident, p.chat_id, p.opening, p.body, p.line, p.silence,"
            " i.post_id, p.maybe_sent, NOT p.opening AND i.post_id IS NULL AND NOT EXISTS"
            " (SELECT 1 FROM incident_posts o WHERE o.incident = p.incident AND o.opening"
            " AND o.posted IS NULL) FROM incident_posts p"
            " JOIN incidents i ON i.number = p.incident"
            " WHERE p.posted IS NULL AND (p.claimed_until IS NULL OR p.claimed_until < ?)"
            " ORDER BY p.id LIMIT 1000",
            now,
        )
        return [
            PostRow(
                int(r[0]), int(r[1]), int(r[2]), bool(r[3]), r[4], r[5], bool(r[6]),
                None if r[7] is None else int(r[7]), bool(r[8]), bool(r[9]),
            )
            for r in rows
        ]  # fmt: skip

    async def claim_posts(self, ids: Sequence[int], now: float, lease_s: float) -> bool:
        """Take these posts for ``lease_s``: True when this caller got every one of them
        (none was taken meanwhile by another replica); else it holds none."""
        marks = ", ".join("?" * len(ids))
        try:
            async with self._db.transaction() as tx:
                taken = await tx.execute(
                    f"UPDATE incident_posts SET claimed_until = ? WHERE id IN ({marks})"
                    " AND posted IS NULL AND (claimed_until IS NULL OR claimed_until < ?)",
                    now + lease_s,
                    *ids,
                    now,
                )
                if taken != len(ids):
                    raise _Taken  # rolled back: this caller holds none of them
        except _Taken:
            return False
        return True

    async def renew_posts(self, ids: Sequence[int], held: float, until: float) -> bool:
        """Hold the claim on these posts until ``until``: True while this caller still
        holds every one of them (each is still claimed until ``held``, the end of this
        caller's claim — a replica that took them since set an end of its own)."""
        marks = ", ".join("?" * len(ids))
        renewed = await self._db.execute(
            f"UPDATE incident_posts SET claimed_until = ? WHERE id IN ({marks})"
            " AND posted IS NULL AND claimed_until = ?",
            until,
            *ids,
            held,
        )
        return renewed == len(ids)

    async def recover_posts(self) -> None:
        """At start: on SQLite one process owns the file, so posts an earlier process
        had taken and not finished (it died) are free to post again now."""
        if self._db.dialect.one_process:
            await self._db.execute(
                "UPDATE incident_posts SET claimed_until = NULL WHERE posted IS NULL"
            )

    async def maybe_posted(self, ids: Sequence[int]) -> None:
        """Telegram's answer to these posts was lost: given back, to go again marked as a
        possible repeat (never silently doubled)."""
        await self._db.executemany(
            "UPDATE incident_posts SET claimed_until = NULL, maybe_sent = TRUE WHERE id = ?",
            [(i,) for i in ids],
        )

    async def move_posts(self, chat_id: int, to_chat: int) -> None:
        """The chat refuses the bot for good (it moved, or the bot was removed): what
        waits for it goes to ``to_chat``, and so do its incidents' later posts. A post
        already in the old chat cannot be replied to from the new one: those incidents'
        replies go on their own."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE incident_posts SET chat_id = ?, claimed_until = NULL"
                " WHERE chat_id = ? AND posted IS NULL",
                to_chat,
                chat_id,
            )
            await tx.execute(
                "UPDATE incidents SET chat_id = ?, post_id = NULL WHERE chat_id = ?",
                to_chat,
                chat_id,
            )

    async def give_up_posts(self, chat_id: int, now: float) -> None:
        """Every chat refuses the bot: what waits for ``chat_id`` is given up (its
        incidents' later replies are orphans, tried once each and given up too)."""
        await self._db.execute(
            "UPDATE incident_posts SET posted = ?, claimed_until = NULL"
            " WHERE chat_id = ? AND posted IS NULL",
            now,
            chat_id,
        )

    async def release_posts(self, ids: Sequence[int]) -> None:
        await self._db.executemany(
            "UPDATE incident_posts SET claimed_until = NULL WHERE id = ?", [(i,) for i in ids]
        )

    async def mark_posted(self, rows: Sequence[PostRow], post_id: int | None, now: float) -> None:
        """Posted as message ``post_id`` (None: given up, the chat refuses the bot): an
        opening post becomes its incident's post."""
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE incident_posts SET posted = ?, post_id = ?, claimed_until = NULL"
                " WHERE id = ?",
                [(now, post_id, row.id) for row in rows],
            )
            opened = [row.incident for row in rows if row.opening]
            await tx.executemany(
                "UPDATE incidents SET post_id = ? WHERE number = ? AND post_id IS NULL",
                [(post_id, number) for number in opened],
            )
            await self._thread(tx, opened, now)


class _Taken(Exception):
    """Another replica took one of the posts: the claim is rolled back."""


_SEND_COLUMNS = "id, incident, kind, step, written, number, gateway_group, channel, body"


def _send(row: Sequence[Any]) -> SendRow:
    id_, incident, kind, step, written, number, group, channel, body = row
    return SendRow(
        int(id_),
        int(incident),
        SendKind(kind),
        int(step),
        Recipient(written, number, group),
        Channel(channel),
        body or "",
    )
