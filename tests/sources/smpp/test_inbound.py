"""Inbound (gateway/sources/smpp/inbound.py) on a real outbox: a retransmission is the same
sequence number and bytes within the peer's retransmit_window, not forever."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.intake import Intake
from gateway.outbox import Hold, Outbox
from gateway.sources.smpp.content import TLV_RECEIPTED_MESSAGE_ID
from gateway.sources.smpp.inbound import Inbound, PeerRules
from gateway.sources.smpp.pdu import Status
from tests.sources.smpp.peer import sm

WINDOW = 600.0
T0 = 1_800_000_000.0  # a multiple of WINDOW: the start of a period


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Inbound, Outbox, Clock]]:
    clock = Clock()
    outbox = await Outbox.open(str(tmp_path / "o.sqlite3"), clock=clock)
    inbound = Inbound(Intake(outbox, clock=clock), clock=clock)
    yield inbound, outbox, clock
    await outbox.close()


RULES = PeerRules("smpp-server:box1", retransmit_window=WINDOW)


@pytest.mark.parametrize(
    ("start", "later"),
    [
        (T0, 0.0),
        (T0, WINDOW - 1),  # same period
        (T0 + WINDOW - 0.5, 1.0),  # across the start of the next period
        (T0, 1.5 * WINDOW),
    ],
)
async def test_a_resend_within_the_window_is_one_message_with_the_first_answer(
    rig: tuple[Inbound, Outbox, Clock], start: float, later: float
) -> None:
    inbound, outbox, clock = rig
    clock.now = start
    first = await inbound.take(RULES, sm(42, b"Code 1234"))
    clock.now += later
    again = await inbound.take(RULES, sm(42, b"Code 1234"))
    assert (first.status, again.status) == (Status.ROK, Status.ROK)
    assert first.stored and not again.stored
    assert again.message_id == first.message_id
    assert len(await outbox.list_messages()) == 1


async def test_the_same_number_and_text_two_windows_later_is_a_new_message(
    rig: tuple[Inbound, Outbox, Clock],
) -> None:
    """A peer that numbers from 1 again on every bind sends the very same SMS again later:
    it is stored, not taken for a retransmission."""
    inbound, outbox, clock = rig
    first = await inbound.take(RULES, sm(1, b"Your code is 1111"))
    clock.now += 2 * WINDOW
    later = await inbound.take(RULES, sm(1, b"Your code is 1111"))
    assert first.stored and later.stored
    assert [m.text for m in await outbox.list_messages()] == ["Your code is 1111"] * 2


async def test_a_resent_part_within_the_window_is_one_part(
    rig: tuple[Inbound, Outbox, Clock],
) -> None:
    inbound, outbox, clock = rig
    udh = bytes([5, 0, 3, 0x42, 2])
    one = await inbound.take(RULES, sm(5, udh + b"\x01" + b"first half ", esm_class=0x40))
    clock.now += WINDOW + 1
    again = await inbound.take(RULES, sm(5, udh + b"\x01" + b"first half ", esm_class=0x40))
    assert one.status == again.status == Status.ROK
    two = await inbound.take(RULES, sm(6, udh + b"\x02" + b"second", esm_class=0x40))
    assert two.status == Status.ROK
    (m,) = await outbox.list_messages()
    assert m.text == "first half second"


async def test_receipts_stay_matched_by_their_id_at_any_age(
    rig: tuple[Inbound, Outbox, Clock],
) -> None:
    inbound, outbox, clock = rig
    receipt = sm(
        9, b"id:abc stat:DELIVRD", esm_class=0x04, tlvs=((TLV_RECEIPTED_MESSAGE_ID, b"abc\0"),)
    )
    await inbound.take(RULES, receipt)
    clock.now += 10 * WINDOW
    again = await inbound.take(RULES, receipt)
    assert again.status == Status.ROK and not again.stored
    assert len(await outbox.list_messages()) == 1


@pytest.mark.parametrize(
    ("destination", "phone"),
    [
        ("79001230001", "79001230001"),
        ("+7 900 123-00-01", "79001230001"),
        ("6831234", "6831234"),  # 7 digits: the shortest international numbers
        ("1.01", ""),  # a box's port name with no [[sim]]: held, not pushed to "101"
        ("101", ""),
        ("3", ""),
        ("port3", ""),
    ],
)
async def test_a_destination_is_a_phone_only_when_it_looks_like_a_whole_number(
    rig: tuple[Inbound, Outbox, Clock], destination: str, phone: str
) -> None:
    inbound, _, _ = rig
    assert inbound.phone_of(RULES, destination) == phone


async def test_a_message_for_a_port_with_no_sim_is_held_keeping_its_destination(
    rig: tuple[Inbound, Outbox, Clock],
) -> None:
    inbound, outbox, _ = rig
    answer = await inbound.take(RULES, sm(8, b"for port 1.01", dst="1.01"))
    assert answer.status == Status.ROK
    (m,) = await outbox.list_messages()
    assert (m.hold_reason, m.phone, m.raw) == (Hold.NO_PHONE, "", "destination_addr=1.01")


async def test_a_multipart_message_for_a_port_with_no_sim_keeps_its_destination_too(
    rig: tuple[Inbound, Outbox, Clock],
) -> None:
    inbound, outbox, _ = rig
    udh = bytes([5, 0, 3, 0x17, 2])
    for seq, part in ((1, b"\x02world"), (2, b"\x01hello ")):  # any order
        answer = await inbound.take(RULES, sm(seq, udh + part, dst="3", esm_class=0x40))
        assert answer.status == Status.ROK
    (m,) = await outbox.list_messages()
    assert (m.text, m.hold_reason, m.raw) == ("hello world", Hold.NO_PHONE, "destination_addr=3")
