"""The one accept path (gateway/intake.py): what it logs and counts for what it commits."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
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
