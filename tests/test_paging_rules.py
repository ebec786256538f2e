"""The paging rules without a server: the webhook body read, and the incident state
machine — (incident, event) -> (incident, effects) — with time as a plain number."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any

import pytest

from bot.config import Escalation, PageStep, WaitStep
from bot.errors import InboundRejected
from bot.paging import incidents as rules
from bot.paging.intake import AlertStatus, Notification, parse_notification
from bot.paging.posts import plan
from bot.recipients import Recipient
from bot.storage.paging import PostRow
from bot.vocabulary import Channel
from tests.alertmanager import webhook_alert, webhook_body

ALICE = Recipient("alice", "4412345678")
BOB = Recipient("bob", "447700900123")
PRIMARY = Escalation(
    "primary",
    (
        PageStep("alice", (ALICE,)),
        WaitStep(300),
        PageStep("bob", (BOB,), Channel.TELEGRAM),
    ),
    repeat=1,
)


def parse(body: Any) -> Notification:
    return parse_notification(json.dumps(body).encode())


def firing(*instances: str) -> Notification:
    return parse(webhook_body(*(webhook_alert(i, f"CPU above 90% on {i}") for i in instances)))


# -- intake -------------------------------------------------------------------------------


def test_a_webhook_body_is_read() -> None:
    note = firing("db-1", "db-2")
    assert note.status is AlertStatus.FIRING
    assert note.alertname == "HighCPU"
    assert note.common_labels == {"alertname": "HighCPU", "severity": "critical"}
    assert note.fingerprints == {"fp-HighCPU-db-1", "fp-HighCPU-db-2"}
    assert note.summary == "CPU above 90% on db-1"
    assert len(note.group) == 64


def test_a_body_without_fingerprints_or_annotations_is_still_an_alert() -> None:
    alert = {"labels": {"alertname": "Disk", "instance": "x"}}
    note = parse({"groupKey": "g", "status": "firing", "alerts": [alert, 7]})
    (only,) = note.alerts
    assert only.status is AlertStatus.FIRING and len(only.fingerprint) == 16
    assert note.summary == "" and note.alertname == "Disk"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b"null", 400),
        (b'{"status": "firing", "alerts": []}', 400),
        (b'{"groupKey": "", "status": "firing", "alerts": []}', 400),
        (b'{"groupKey": "g", "status": "pending", "alerts": []}', 400),
        (b'{"groupKey": "g", "status": "firing", "alerts": {}}', 400),
        (b'{"groupKey": "g", "status": "firing", "alerts": [], "x": "\\ud800"}', 400),
        (b'{"groupKey": "g\\u0000", "status": "firing", "alerts": []}', 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (
            json.dumps({"groupKey": "g", "status": "firing", "alerts": ["x" * 1_000_000]}).encode(),
            413,
        ),
    ],
)
def test_refused_bodies(raw: bytes, status: int) -> None:
    with pytest.raises(InboundRejected) as caught:
        parse_notification(raw)
    assert caught.value.status == status


# -- incidents ----------------------------------------------------------------------------


def opened(note: Notification | None = None, at: float = 1000.0) -> rules.Decision:
    return rules.open_incident(12, note or firing("db-1"), PRIMARY, at, can_silence=True)


def test_opening_post_names_each_alert_then_and_n_more() -> None:
    note = firing(*(f"db-{n}" for n in range(1, 13)))
    decision = opened(note)
    (post,) = decision.effects
    assert isinstance(post, rules.Post) and post.silence
    lines = post.text.splitlines()
    assert lines[0] == "FIRING #12 HighCPU"
    assert lines[1:11] == [f"• CPU above 90% on db-{n}" for n in range(1, 11)]
    assert lines[11:] == [
        "and 2 more",
        "Paging: primary. Acknowledge below, /ack 12, or ACK.",
    ]
    assert (decision.incident.step, decision.incident.due) == (0, 1000.0)


def test_no_route_posts_and_pages_nobody() -> None:
    decision = rules.open_incident(3, firing("db-1"), None, 5.0, can_silence=False)
    (post,) = decision.effects
    assert isinstance(post, rules.Post) and not post.silence
    assert post.text.endswith("No route matched: nobody is paged.")
    assert decision.incident.due is None
    assert rules.run_step(decision.incident, (), 10.0, text_limit=None).effects == ()


def run(incident: rules.Incident, now: float) -> rules.Decision:
    return rules.run_step(incident, PRIMARY.chain, now, text_limit=None)


def test_every_step_and_repeat_in_order_then_nobody_acknowledged() -> None:
    incident = opened().incident
    seen = []
    now = 1000.0
    while incident.due is not None:
        now = max(now, incident.due)
        decision = run(incident, now)
        incident = decision.incident
        seen.append((now, [type(e).__name__ for e in decision.effects]))
        for effect in decision.effects:
            if isinstance(effect, rules.Page):
                seen[-1] = (now, [r.written for r in effect.recipients] + [effect.channel.label])
    assert seen == [
        (1000.0, ["alice", "WhatsApp"]),
        (1300.0, ["bob", "Telegram"]),
        (1300.0, ["alice", "WhatsApp"]),  # the repeat starts at once: no wait between rounds
        (1600.0, ["bob", "Telegram"]),
        (1900.0, ["Reply"]),  # the last page gets the chain's last wait to be answered
    ]
    assert incident.exhausted
    assert rules.state_text(incident, PRIMARY, now) == "nobody acknowledged"


def test_a_chain_of_one_page_gives_it_time_to_be_answered() -> None:
    team = Escalation("team", (PageStep("alice", (ALICE,)),))
    incident = rules.open_incident(4, firing("db-1"), team, 1000.0, can_silence=False).incident
    paged = rules.run_step(incident, team.chain, 1000.0, text_limit=None)
    assert [type(e) for e in paged.effects] == [rules.Page]
    assert paged.incident.due == 1000.0 + rules.ANSWER_WINDOW_S  # not "nobody" at once
    (verdict,) = rules.run_step(paged.incident, team.chain, 1300.0, text_limit=None).effects
    assert isinstance(verdict, rules.Reply) and "nobody acknowledged" in verdict.text


def test_a_cursor_an_edited_chain_left_on_a_wait_moves_on_to_the_next_page() -> None:
    edited = (PageStep("alice", (ALICE,)), WaitStep(60), WaitStep(300), PageStep("bob", (BOB,)))
    incident = replace(opened().incident, step=2, due=1300.0)  # step 2 was a page before
    (page,) = rules.run_step(incident, edited, 1300.0, text_limit=None).effects
    assert isinstance(page, rules.Page) and page.recipients == (BOB,)


def test_a_cursor_past_an_edited_chain_is_its_end() -> None:
    incident = replace(opened().incident, step=5, due=1300.0)
    decision = rules.run_step(incident, (PageStep("alice", (ALICE,)),), 1300.0, text_limit=None)
    (verdict,) = decision.effects
    assert isinstance(verdict, rules.Reply) and "nobody acknowledged" in verdict.text
    assert decision.incident.exhausted and decision.incident.due is None


def test_page_text_is_cut_to_the_channel_limit() -> None:
    note = parse(webhook_body(webhook_alert("db-1", "x" * 2000)))
    incident = opened(note).incident
    (page,) = rules.run_step(incident, PRIMARY.chain, 1000.0, text_limit=900).effects
    assert isinstance(page, rules.Page)
    assert len(page.text) == 900
    assert page.text.startswith("FIRING #12 HighCPU: xxx") and page.text.endswith(
        "…\nReply ACK to acknowledge"
    )
    (short,) = run(incident, 1000.0).effects
    assert isinstance(short, rules.Page)


def test_a_repeat_changes_nothing_and_a_change_is_one_reply() -> None:
    incident = opened(firing("db-1", "db-2")).incident
    assert rules.on_notification(
        incident, firing("db-2", "db-1"), 1100.0, notify_resolved=True
    ) == (rules.Decision(incident))
    decision = rules.on_notification(incident, firing("db-2", "db-3"), 1100.0, notify_resolved=True)
    assert decision.effects == (
        rules.Reply(
            "#12 HighCPU changed\nstarted firing: CPU above 90% on db-3\n"
            "stopped firing: CPU above 90% on db-1"
        ),
    )
    assert decision.incident.due == incident.due  # the escalation goes on on its own clock


def test_all_resolved_stops_and_tells_those_paged() -> None:
    incident = run(opened().incident, 1000.0).incident
    body = webhook_body(webhook_alert("db-1", "CPU above 90% on db-1", status="resolved"))
    decision = rules.on_notification(incident, parse(body), 1190.0, notify_resolved=True)
    assert decision.incident.resolved_at == 1190.0 and decision.incident.due is None
    assert decision.effects == (
        rules.Reply("RESOLVED #12 HighCPU: resolved after 3m 10s"),
        rules.NotifyResolved("RESOLVED #12 HighCPU: CPU above 90% on db-1"),
    )
    quiet = rules.on_notification(incident, parse(body), 1190.0, notify_resolved=False)
    assert [type(e) for e in quiet.effects] == [rules.Reply]


def test_the_resolved_message_is_cut_to_the_channel_limit_like_the_page() -> None:
    incident = run(opened(parse(webhook_body(webhook_alert("db-1", "x" * 2000)))).incident, 1000.0)
    body = webhook_body(webhook_alert("db-1", "x" * 2000, status="resolved"))
    decision = rules.on_notification(
        incident.incident, parse(body), 1190.0, notify_resolved=True, text_limit=900
    )
    (told,) = [e for e in decision.effects if isinstance(e, rules.NotifyResolved)]
    assert len(told.text) == 900
    assert told.text.startswith("RESOLVED #12 HighCPU: xxx") and told.text.endswith("x…")


def test_acknowledged_once() -> None:
    incident = run(opened().incident, 1000.0).incident
    decision = rules.acknowledge(incident, "alice", Channel.WHATSAPP, 1190.0)
    assert isinstance(decision, rules.Decision)
    assert decision.effects == (rules.Reply("acknowledged by alice on WhatsApp after 3m 10s"),)
    assert decision.incident.due is None
    assert run(decision.incident, 5000.0).effects == ()
    again = rules.acknowledge(decision.incident, "bob", Channel.TELEGRAM, 1200.0)
    assert again == rules.Refused("#12 was already acknowledged by alice on WhatsApp after 3m 10s.")
    assert rules.state_text(decision.incident, PRIMARY, 1200.0) == "acknowledged by alice"


def test_incidents_counts_the_configured_steps_and_the_round() -> None:
    five = Escalation("team", (*PRIMARY.steps, WaitStep(300), PageStep("alice", (ALICE,))))
    incident = rules.open_incident(4, firing("db-1"), five, 1000.0, can_silence=False).incident
    assert rules.state_text(incident, five, 1000.0) == "paging, step 1 of 5"
    paged = rules.run_step(incident, five.chain, 1000.0, text_limit=None).incident
    assert rules.state_text(paged, five, 1100.0) == "paging, step 2 of 5"
    states = []
    incident, now = opened().incident, 1000.0
    while incident.due is not None:
        now = max(now, incident.due)
        states.append(rules.state_text(incident, PRIMARY, now))
        incident = run(incident, now).incident
        states.append(rules.state_text(incident, PRIMARY, now + 1))
    assert states == [
        "paging, step 1 of 3, round 1 of 2",
        "paging, step 2 of 3, round 1 of 2",
        "paging, step 3 of 3, round 1 of 2",
        "paging, step 1 of 3, round 2 of 2",  # bob paged; the repeat pages alice at once
        "paging, step 1 of 3, round 2 of 2",
        "paging, step 2 of 3, round 2 of 2",
        "paging, step 3 of 3, round 2 of 2",
        "paging, step 3 of 3, round 2 of 2",  # the last page's time to be answered
        "paging, step 3 of 3, round 2 of 2",
        "nobody acknowledged",
    ]


def test_silence_stops_the_escalation() -> None:
    incident = run(opened().incident, 1000.0).incident
    assert rules.state_text(incident, PRIMARY, 1100.0) == "paging, step 2 of 3, round 1 of 2"
    decision = rules.silence(incident, "70e9f84a", 4600.0, "carol", 1100.0)
    assert isinstance(decision, rules.Decision) and decision.incident.due is None
    until = rules.clock_text(4600.0)
    assert decision.effects == (rules.Reply(f"silenced by carol until {until} (silence 70e9f84a)"),)
    assert rules.state_text(decision.incident, PRIMARY, 1200.0) == f"silenced until {until}"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (190, "3m 10s"),
        (3600, "1h"),
        (3725, "1h 2m"),
        (90061, "1d 1h"),
    ],
)
def test_durations(seconds: int, text: str) -> None:
    assert rules.duration_text(seconds) == text


# -- posts into the chat -------------------------------------------------------------------


def row(id_: int, incident: int, opening: bool, post: int | None = None) -> PostRow:
    body = f"FIRING #{incident} X" if opening else f"paged alice on WhatsApp: queued ({id_})"
    line = f"FIRING #{incident} X — /ack {incident}" if opening else f"#{incident}: {body}"
    return PostRow(id_, incident, -100, opening, body, line, True, post)


def test_within_the_allowance_each_opening_goes_alone_with_its_buttons() -> None:
    planned = plan([row(1, 1, True), row(2, 2, True), row(3, 1, False)], allowance=lambda chat: 20)
    assert planned is not None
    assert [r.id for r in planned.rows] == [1]
    assert [b.label for b in planned.buttons] == ["Acknowledge", "Silence 1h"]


def test_replies_of_one_incident_go_under_its_post() -> None:
    planned = plan(
        [row(3, 1, False, post=77), row(4, 1, False, post=77)], allowance=lambda chat: 20
    )
    assert planned is not None and planned.reply_to == 77 and len(planned.rows) == 2
    assert (
        plan([row(3, 1, False)], allowance=lambda chat: 20) is None
    )  # its opening is not posted yet


def test_beyond_the_allowance_everything_is_merged_with_ack_commands() -> None:
    rows = [row(n, n, True) for n in range(1, 5)] + [row(9, 1, False)]
    planned = plan(rows, allowance=lambda chat: 3)
    assert planned is not None and planned.buttons == () and planned.reply_to is None
    assert planned.text.splitlines() == [
        "5 incident updates (merged under Telegram's limit; /incidents lists all):",
        "FIRING #1 X — /ack 1",
        "FIRING #2 X — /ack 2",
        "FIRING #3 X — /ack 3",
        "FIRING #4 X — /ack 4",
        "#1: paged alice on WhatsApp: queued (9)",
    ]


def test_a_chat_whose_posts_cannot_go_yet_never_holds_up_another() -> None:
    waiting = [dataclasses.replace(row(n, 1, False), chat_id=-200) for n in range(1, 4)]
    planned = plan([*waiting, row(9, 2, True)], allowance=lambda chat: 20)
    assert planned is not None and planned.chat_id == -100 and [r.id for r in planned.rows] == [9]


def test_an_orphan_reply_goes_on_its_own() -> None:
    orphan = dataclasses.replace(row(3, 1, False), orphan=True)
    planned = plan([orphan], allowance=lambda chat: 20)
    assert planned is not None and planned.reply_to is None and planned.rows == (orphan,)
