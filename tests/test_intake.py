"""The one accept path (gateway/intake.py): what it logs and counts for what it commits."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.fields import EARLIEST, MAX_AHEAD, MAX_FIELD, MAX_TEXT, FieldError, checked_part
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Hold, Incoming, Outbox, Part, State

T0 = 1_800_000_000.0


def sms(text: str, *, ref: str | None = None, source: str = "http") -> Incoming:
    return Incoming(source, "79001234567", "Instagram", text, T0, source_ref=ref)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    store = await Outbox.open(str(tmp_path / "outbox.sqlite3"), clock=lambda: T0)
    yield store
    await store.close()


def counted(metrics: Metrics, name: str, source: str) -> float | None:
    return metrics.registry.get_sample_value(f"sms_gateway_{name}_total", {"source": source})


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_one_message_is_one_line_naming_its_sms_id(outbox: Outbox) -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        (accepted,) = await Intake(outbox, metrics, clock=lambda: T0).accept([sms("code 1")])
    (line,) = events(logs, "sms.accepted")
    assert line["sms_id"] == accepted.sms_id
    assert (line["source"], line["phone"], line["phone_from"], line["chars"]) == (
        "http",
        "79001234567",
        "Instagram",
        6,
    )
    assert counted(metrics, "messages_received", "http") == 1


async def test_a_list_is_one_line_naming_every_sms_id(outbox: Outbox) -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        accepted = await Intake(outbox, metrics, clock=lambda: T0).accept(
            [sms(f"m{i}") for i in range(100)]
        )
    (line,) = logs
    assert line["event"] == "sms.accepted"
    assert line["sms_ids"] == [a.sms_id for a in accepted]
    assert (line["count"], line["source"]) == (100, "http")
    assert counted(metrics, "messages_received", "http") == 100


async def test_duplicates_in_a_list_are_one_line_with_their_ids_and_refs(outbox: Outbox) -> None:
    metrics = Metrics()
    intake = Intake(outbox, metrics, clock=lambda: T0)
    first = await intake.accept([sms("a", ref="r1"), sms("b", ref="r2")])
    with capture_logs() as logs:
        again = await intake.accept([sms("a", ref="r1"), sms("c"), sms("b", ref="r2")])
    (accepted_line,) = events(logs, "sms.accepted")
    (duplicate_line,) = events(logs, "sms.duplicate_ignored")
    assert accepted_line["sms_ids"] == [again[1].sms_id]
    assert duplicate_line["sms_ids"] == [a.sms_id for a in first]
    assert duplicate_line["source_refs"] == ["r1", "r2"]
    assert counted(metrics, "messages_received", "http") == 3
    assert counted(metrics, "duplicates", "http") == 2


async def test_a_list_from_several_sources_is_a_line_per_source(outbox: Outbox) -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        accepted = await Intake(outbox, metrics, clock=lambda: T0).accept(
            [sms("a", source="dinstar-1"), sms("b", source="ejoin-1"), sms("c", source="dinstar-1")]
        )
    by_source = {e["source"]: e["sms_ids"] for e in events(logs, "sms.accepted")}
    assert by_source == {
        "dinstar-1": [accepted[0].sms_id, accepted[2].sms_id],
        "ejoin-1": [accepted[1].sms_id],
    }
    assert counted(metrics, "messages_received", "dinstar-1") == 2


async def test_a_held_message_in_a_list_gets_its_own_warning(outbox: Outbox) -> None:
    held = Incoming("modem", "", "Bank", "no phone yet", T0, hold=Hold.NO_PHONE)
    with capture_logs() as logs:
        accepted = await Intake(outbox, clock=lambda: T0).accept([sms("a"), held])
    (warning,) = events(logs, "sms.held")
    assert (warning["sms_id"], warning["reason"]) == (accepted[1].sms_id, "no_phone")
    assert events(logs, "sms.accepted")[0]["sms_ids"] == [accepted[0].sms_id]


@pytest.mark.parametrize(
    "device_time", [EARLIEST - 1, 0.0, T0 + MAX_AHEAD + 1, math.nan, math.inf, -math.inf]
)
async def test_a_device_time_out_of_the_window_is_replaced_by_the_receive_time(
    outbox: Outbox, device_time: float
) -> None:
    item = Incoming("gammu", "79001234567", "Bank", "code 5", device_time, "g-1")
    with capture_logs() as logs:
        (accepted,) = await Intake(outbox, clock=lambda: T0).accept([item])
    stored = await outbox.get_message(accepted.sms_id)
    assert stored is not None and stored.received_at == T0
    (line,) = events(logs, "sms.device_time_replaced")
    assert (line["sms_id"], line["source"], line["received_at"]) == (accepted.sms_id, "gammu", T0)


async def test_a_time_inside_the_window_is_kept(outbox: Outbox) -> None:
    for when in (EARLIEST, T0 - 20 * 365 * 86400, T0 + MAX_AHEAD):
        item = Incoming("gammu", "79001234567", "Bank", "x", when)
        with capture_logs() as logs:
            (accepted,) = await Intake(outbox, clock=lambda: T0).accept([item])
        stored = await outbox.get_message(accepted.sms_id)
        assert stored is not None and stored.received_at == when
        assert not events(logs, "sms.device_time_replaced")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone_from": "+7900\ud800"}, "phone_from"),
        ({"text": "half \udc00 an emoji"}, "text"),
        ({"source_ref": "ref-\ud83d"}, "source_ref"),
        ({"raw": '{"number": "\ud800"}'}, "raw"),
        ({"source": "box\udfff"}, "source"),
        ({"phone": "+79001234567"}, "phone"),
        ({"phone": "12"}, "phone"),
        ({"phone": ""}, "phone"),
        ({"text": "x" * (MAX_TEXT + 1)}, "text"),
        ({"phone_from": "x" * (MAX_FIELD + 1)}, "phone_from"),
    ],
)
async def test_a_bad_field_from_any_source_is_refused_and_takes_nothing(
    outbox: Outbox, change: dict[str, Any], field: str
) -> None:
    intake = Intake(outbox, clock=lambda: T0)
    bad = dataclasses.replace(sms("bad", source="dinstar:box-1"), **change)
    with pytest.raises(FieldError) as one:
        await intake.accept([bad])
    assert one.value.field == field
    with pytest.raises(FieldError) as listed:
        await intake.accept([sms("good"), bad])
    assert listed.value.field == f"[1].{field}"
    assert (await outbox.summary()).counts.get(State.QUEUED, 0) == 0
    (accepted,) = await intake.accept([sms("good")])  # the next one is not affected
    assert accepted.sms_id


def part(**change: Any) -> Part:
    p = Part("modem:m1", "g1", 1, 2, "half \ud83d", "79001234567", "Bank", T0, "p1")
    return dataclasses.replace(p, **change)


def test_a_part_may_end_or_start_with_half_a_surrogate_pair() -> None:
    assert checked_part(part(), T0) == part()
    assert checked_part(part(text="\ude00 rest"), T0) == part(text="\ude00 rest")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone_from": "\ud800"}, "phone_from"),
        ({"source_ref": "\ud800"}, "source_ref"),
        ({"group_key": "\ud800"}, "group_key"),
        ({"phone": "7900x"}, "phone"),
        ({"text": "x" * (MAX_TEXT + 1)}, "text"),
    ],
)
async def test_a_bad_field_in_a_part_is_refused(
    outbox: Outbox, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(FieldError) as e:
        await Intake(outbox, clock=lambda: T0).accept_part(part(**change))
    assert e.value.field == field


async def test_a_part_with_a_device_time_out_of_the_window_gets_the_receive_time(
    outbox: Outbox,
) -> None:
    intake = Intake(outbox, clock=lambda: T0)
    with capture_logs() as logs:
        await intake.accept_part(part(text="first ", received_at=1.0))
        result = await intake.accept_part(part(seq=2, text="second", source_ref="p2"))
    assert result.joined is not None
    stored = await outbox.get_message(result.joined.sms_id)
    assert stored is not None and stored.received_at == T0
    (line,) = events(logs, "sms.device_time_replaced")
    assert (line["source"], line["seq"]) == ("modem:m1", 1)


# -- delivery follows activations ([partner] on) -------------------------------------------------

ORDERED, UNORDERED = "79001110001", "79002220002"


@dataclasses.dataclass(frozen=True)
class Open:
    """An open activation as the desk hands it out (gateway.outbox.partner.Activation's shape)."""

    activation_id: int
    service: str = "vk"
    rent: bool = False
    opened_at: float = T0 - 60.0  # before the messages of these tests (accepted at T0)


def on(phone: str, text: str, *, ref: str | None = None, hold: Hold | None = None) -> Incoming:
    return Incoming("modem", phone, "VK", text, T0, source_ref=ref, hold=hold)


def partner_intake(
    outbox: Outbox,
    activations: dict[str, Open],
    *,
    push_without: bool = False,
    metrics: Metrics | None = None,
) -> Intake:
    return Intake(
        outbox,
        metrics,
        clock=lambda: T0,
        activation_for=activations.get,
        push_without_activation=push_without,
    )


def held_count(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("sms_gateway_messages_held_total", {"reason": reason})


async def test_an_sms_on_an_ordered_number_is_queued_with_its_activation_id(
    outbox: Outbox,
) -> None:
    intake = partner_intake(outbox, {ORDERED: Open(41)})
    with capture_logs() as logs:
        (a,) = await intake.accept([on(ORDERED, "code 1")])
    m = await outbox.get_message(a.sms_id)
    assert m is not None
    assert (m.state, m.activation_id, m.rent_service, m.hold_reason) == (
        State.QUEUED,
        41,
        None,
        None,
    )
    (line,) = events(logs, "sms.accepted")
    assert line["activation_id"] == 41


async def test_an_sms_on_a_number_nobody_ordered_is_held_not_pushed_and_counted(
    outbox: Outbox,
) -> None:
    metrics = Metrics()
    intake = partner_intake(outbox, {ORDERED: Open(41)}, metrics=metrics)
    with capture_logs() as logs:
        (a,) = await intake.accept([on(UNORDERED, "code 2")])
    m = await outbox.get_message(a.sms_id)
    assert m is not None
    assert (m.state, m.hold_reason, m.activation_id, m.phone) == (
        State.HELD,
        Hold.NO_ACTIVATION,
        None,
        UNORDERED,
    )
    (line,) = events(logs, "sms.held")
    assert (line["reason"], line["phone"], line["log_level"]) == (
        "no_activation",
        UNORDERED,
        "info",
    )
    assert held_count(metrics, "no_activation") == 1
    assert await outbox.claim_due(limit=10, lease=60, max_age=0) == []


async def test_a_rent_activation_records_its_service_for_the_rent_push(outbox: Outbox) -> None:
    intake = partner_intake(outbox, {ORDERED: Open(7, service="rent", rent=True)})
    (a,) = await intake.accept([on(ORDERED, "rent code")])
    (m,) = await outbox.claim_due(limit=10, lease=60, max_age=0)
    assert (m.sms_id, m.activation_id, m.rent_service) == (a.sms_id, 7, "rent")


async def test_push_without_activation_pushes_unordered_numbers_as_ever(outbox: Outbox) -> None:
    intake = partner_intake(outbox, {ORDERED: Open(41)}, push_without=True)
    accepted = await intake.accept([on(UNORDERED, "a"), on(ORDERED, "b")])
    claimed = {m.sms_id: m for m in await outbox.claim_due(limit=10, lease=60, max_age=0)}
    assert [claimed[a.sms_id].activation_id for a in accepted] == [None, 41]


async def test_the_activation_open_when_the_sms_is_accepted_decides(outbox: Outbox) -> None:
    """An SMS that came before the order stays held when the order comes; one accepted while
    the activation was open keeps its id after the activation finishes."""
    activations: dict[str, Open] = {}
    intake = partner_intake(outbox, activations)
    (before,) = await intake.accept([on(ORDERED, "before the order")])
    activations[ORDERED] = Open(5)
    (during,) = await intake.accept([on(ORDERED, "during")])
    del activations[ORDERED]
    (after,) = await intake.accept([on(ORDERED, "after the finish")])
    states = {
        a.sms_id: (m.state, m.activation_id)
        for a in (before, during, after)
        if (m := await outbox.get_message(a.sms_id)) is not None
    }
    assert states == {
        before.sms_id: (State.HELD, None),
        during.sms_id: (State.QUEUED, 5),
        after.sms_id: (State.HELD, None),
    }


async def test_messages_held_for_other_reasons_stay_as_they_are(outbox: Outbox) -> None:
    intake = partner_intake(outbox, {ORDERED: Open(41)})
    (a,) = await intake.accept([on("", "no number yet", hold=Hold.NO_PHONE)])
    m = await outbox.get_message(a.sms_id)
    assert m is not None and (m.hold_reason, m.activation_id) == (Hold.NO_PHONE, None)


async def test_a_duplicate_keeps_what_the_first_commit_decided(outbox: Outbox) -> None:
    activations: dict[str, Open] = {}
    intake = partner_intake(outbox, activations)
    (first,) = await intake.accept([on(ORDERED, "x", ref="sim-1")])
    activations[ORDERED] = Open(9)
    (again,) = await intake.accept([on(ORDERED, "x", ref="sim-1")])
    assert again == dataclasses.replace(first, duplicate=True)
    m = await outbox.get_message(first.sms_id)
    assert m is not None and (m.state, m.activation_id) == (State.HELD, None)


async def test_a_joined_multi_part_sms_follows_the_activation_of_its_number(
    outbox: Outbox,
) -> None:
    intake = partner_intake(outbox, {ORDERED: Open(12)})

    def piece(phone: str, seq: int) -> Part:
        return Part("modem", f"g-{phone}", seq, 2, f"p{seq}", phone, "VK", T0, f"{phone}-{seq}")

    for phone in (ORDERED, UNORDERED):
        await intake.accept_part(piece(phone, 1))
        result = await intake.accept_part(piece(phone, 2))
        assert result.joined is not None
        m = await outbox.get_message(result.joined.sms_id)
        assert m is not None and m.text == "p1p2"
        expect = (State.QUEUED, 12) if phone == ORDERED else (State.HELD, None)
        assert (m.state, m.activation_id) == expect


async def test_stale_and_closed_groups_follow_activations_too(outbox: Outbox) -> None:
    intake = partner_intake(outbox, {ORDERED: Open(12, service="rent", rent=True)})
    await intake.accept_part(Part("goip", "open", 1, 0, "a", ORDERED, "VK", T0, "o-1"))
    await intake.accept_part(Part("modem", "stale", 1, 3, "b", UNORDERED, "VK", T0, "s-1"))
    closed = await intake.close_group("goip", "open")
    assert closed is not None
    (flushed,) = await intake.flush_stale_parts(-1.0)  # everything waiting is stale
    c, f = await outbox.get_message(closed.sms_id), await outbox.get_message(flushed.sms_id)
    assert c is not None and f is not None
    assert (c.state, c.activation_id, c.rent_service) == (State.QUEUED, 12, "rent")
    assert (f.state, f.hold_reason, f.partial) == (State.HELD, Hold.NO_ACTIVATION, True)


@pytest.mark.parametrize("push_without", [False, True])
async def test_messages_released_with_their_number_follow_the_rule_strictly(
    outbox: Outbox, push_without: bool
) -> None:
    """The SIM's number was unknown when they came, so no order could have been for them."""
    intake = partner_intake(outbox, {ORDERED: Open(3)}, push_without=push_without)
    (a,) = await intake.accept([on("", "early", hold=Hold.NO_PHONE)])
    assert await intake.release_held("modem", ORDERED) == [a.sms_id]
    m = await outbox.get_message(a.sms_id)
    assert m is not None
    if push_without:
        assert (m.state, m.hold_reason, m.activation_id) == (State.QUEUED, None, None)
    else:
        assert (m.state, m.hold_reason, m.phone) == (State.HELD, Hold.NO_ACTIVATION, ORDERED)


async def test_a_phone_given_by_hand_queues_held_no_phone_messages_and_logs_them(
    outbox: Outbox,
) -> None:
    intake = Intake(outbox, Metrics(), clock=lambda: T0)
    held = await intake.accept(
        [
            Incoming("smpp-server:box1", "", "VK", "code", T0, hold=Hold.NO_PHONE),
            Incoming("dinstar:box-1", "", "VK", "code", T0, hold=Hold.NO_PHONE),
            Incoming("dinstar:box-1", "", "VK", "code", T0, hold=Hold.NO_PHONE),
        ]
    )
    (queued,) = await intake.accept([sms("already queued")])
    ids = [a.sms_id for a in held]
    with capture_logs() as logs:
        given = await intake.give_phone([*ids, queued.sms_id], ORDERED)
    assert sorted(given.released) == ids and list(given.left) == [queued.sms_id]
    claimed = await outbox.claim_due(limit=10, lease=60, max_age=0)
    assert {(m.sms_id, m.phone) for m in claimed} == {
        *((i, ORDERED) for i in ids),
        (queued.sms_id, "79001234567"),
    }
    lines = {line["source"]: line for line in events(logs, "sms.released")}
    assert {s: (line["sms_ids"], line["phone"]) for s, line in lines.items()} == {
        "smpp-server:box1": ([ids[0]], ORDERED),
        "dinstar:box-1": (ids[1:], ORDERED),
    }
    assert all(line["by"] == "operator" and line["log_level"] == "info" for line in logs)


async def test_a_phone_given_by_hand_follows_the_activation_open_when_the_sms_came(
    outbox: Outbox,
) -> None:
    """As for a message arriving: pushed for the activation open on the number (a rent one to
    the rent URL), else held no_activation; the moment is still the SMS's acceptance."""
    activations = {
        ORDERED: Open(41),
        "79003330003": Open(7, service="rent", rent=True),
        "79004440004": Open(9, opened_at=T0 + 60),  # ordered after the SMS came: not its SMS
    }
    metrics = Metrics()
    intake = partner_intake(outbox, activations, metrics=metrics)
    phones = [ORDERED, "79003330003", "79004440004", UNORDERED]
    held = await intake.accept([on("", f"for {p}", hold=Hold.NO_PHONE) for p in phones])
    with capture_logs() as logs:
        for a, phone in zip(held, phones, strict=True):
            await intake.give_phone([a.sms_id], phone)
    found = [await outbox.get_message(a.sms_id) for a in held]
    assert [(m.state, m.hold_reason, m.activation_id, m.rent_service) for m in found if m] == [
        (State.QUEUED, None, 41, None),
        (State.QUEUED, None, 7, "rent"),
        (State.HELD, Hold.NO_ACTIVATION, None, None),
        (State.HELD, Hold.NO_ACTIVATION, None, None),
    ]
    released = events(logs, "sms.released")
    assert [(line["sms_ids"], line["activation_id"]) for line in released] == [
        ([held[0].sms_id], 41),
        ([held[1].sms_id], 7),
    ]
    still = events(logs, "sms.held")
    assert [(line["sms_ids"], line["reason"]) for line in still] == [
        ([held[2].sms_id], "no_activation"),
        ([held[3].sms_id], "no_activation"),
    ]
    assert held_count(metrics, "no_activation") == 2


async def test_a_phone_given_by_hand_with_push_without_activation_is_pushed_as_ever(
    outbox: Outbox,
) -> None:
    intake = partner_intake(outbox, {}, push_without=True)
    (a,) = await intake.accept([on("", "no order", hold=Hold.NO_PHONE)])
    await intake.give_phone([a.sms_id], UNORDERED)
    (m,) = await outbox.claim_due(limit=10, lease=60, max_age=0)
    assert (m.sms_id, m.phone, m.activation_id) == (a.sms_id, UNORDERED, None)


@pytest.mark.parametrize("phone", ["", "12", "+7 900 123-45-67", "7900123456789012345678", "٧٩٠٠"])
async def test_a_phone_the_field_rules_refuse_changes_nothing(outbox: Outbox, phone: str) -> None:
    intake = Intake(outbox, clock=lambda: T0)
    (a,) = await intake.accept([on("", "held", hold=Hold.NO_PHONE)])
    with pytest.raises(FieldError) as refused:
        await intake.give_phone([a.sms_id], phone)
    assert refused.value.field == "phone"
    m = await outbox.get_message(a.sms_id)
    assert m is not None and (m.state, m.phone) == (State.HELD, "")


async def test_retry_by_sms_id_pushes_a_no_activation_message_by_hand(outbox: Outbox) -> None:
    intake = partner_intake(outbox, {})
    (held,) = await intake.accept([on(UNORDERED, "operator wants it out")])
    (other,) = await intake.accept([on("", "no phone", hold=Hold.NO_PHONE)])
    assert await outbox.requeue(state=State.DROPPED) == []  # by state: never a held one
    assert await outbox.requeue(sms_ids=[held.sms_id, other.sms_id]) == [held.sms_id]
    (m,) = await outbox.claim_due(limit=10, lease=60, max_age=0)
    assert (m.sms_id, m.hold_reason, m.activation_id) == (held.sms_id, None, None)


async def test_no_activation_messages_age_out_like_other_records(outbox: Outbox) -> None:
    intake = partner_intake(outbox, {})
    (a,) = await intake.accept([on(UNORDERED, "old")])
    assert await outbox.purge_finished(keep=-1.0) == 1
    assert await outbox.get_message(a.sms_id) is None


phones = st.sampled_from([ORDERED, UNORDERED, "79003330003", "491701234567"])
incoming = st.builds(
    on,
    phones,
    st.text(max_size=5),
    ref=st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3"])),
    hold=st.one_of(st.none(), st.just(Hold.NO_PHONE), st.just(Hold.UNDECODABLE)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(incoming, min_size=1, max_size=6), min_size=1, max_size=4), st.booleans())
def test_with_no_activation_anywhere_nothing_is_pushed_unless_push_without(
    batches: list[list[Incoming]], push_without: bool
) -> None:
    async def run(path: str) -> None:
        store = await Outbox.open(path, clock=lambda: T0)
        try:
            intake = partner_intake(store, {}, push_without=push_without)
            for batch in batches:
                await intake.accept(batch)
            claimed = await store.claim_due(limit=1000, lease=60, max_age=0)
            everything = await store.list_messages(limit=1000)
            assert all(m.activation_id is None for m in everything)
            held_by_source = [
                m for m in everything if m.hold_reason in (Hold.NO_PHONE, Hold.UNDECODABLE)
            ]
            if push_without:
                assert len(claimed) == len(everything) - len(held_by_source)
                assert not any(m.hold_reason is Hold.NO_ACTIVATION for m in everything)
            else:
                assert claimed == []
                assert all(m.state is State.HELD for m in everything)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run(str(Path(d) / "outbox.sqlite3")))


async def test_accept_each_refuses_a_bad_item_alone_and_commits_the_rest(outbox: Outbox) -> None:
    intake = Intake(outbox, Metrics())
    items = [sms("one", ref="a"), sms("two", ref="b"), sms("three", ref="c")]
    items[1] = dataclasses.replace(items[1], phone_from="7" * (MAX_FIELD + 1))
    with capture_logs() as logs:
        first, bad, third = await intake.accept_each(items)
    assert isinstance(bad, FieldError) and bad.field == "phone_from"
    assert not isinstance(first, FieldError) and not isinstance(third, FieldError)
    assert not first.duplicate and not third.duplicate
    stored = {m.sms_id: m.text for m in await outbox.list_messages()}
    assert stored == {first.sms_id: "one", third.sms_id: "three"}
    (line,) = events(logs, "sms.accepted")  # the good ones share one commit and one line
    assert line["sms_ids"] == [first.sms_id, third.sms_id]
    again = await intake.accept_each([sms("one", ref="a")])
    assert again == [dataclasses.replace(first, duplicate=True)]
