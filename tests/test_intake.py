"""The one accept path (gateway/intake.py): what it logs and counts for what it commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Hold, Incoming, Outbox

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
