"""Group commit per bind (gateway/sources/smpp/session.py): what a bind reads while its last
batch is in the store goes as one batch, each answer only after its commit; the window stops
reading; a refused message fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gateway.fields import FieldError
from gateway.intake import Intake
from gateway.outbox import Accepted, Incoming, Outbox
from gateway.sources.smpp.pdu import Command, Status
from tests.fakes.store import wait_messages
from tests.sources.smpp.test_server import Rig, sm


class Gated(Intake):
    """A real Intake whose commits wait for `gate` and record their batch sizes."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__(outbox)
        self.gate = asyncio.Event()
        self.batches: list[int] = []
        self.entered = asyncio.Event()

    async def accept_each(self, items: Sequence[Incoming]) -> list[Accepted | FieldError]:
        self.batches.append(len(items))
        self.entered.set()
        await self.gate.wait()
        # A sender no SMPP field can carry (longer than the field rules allow): refused there.
        items = [
            dataclasses.replace(i, phone_from="7" * 300) if i.text == "refuse me" else i
            for i in items
        ]
        return await super().accept_each(items)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[Rig, Gated]]:
    rig = Rig(tmp_path)
    made: list[Gated] = []
    await rig.start(make=lambda outbox: made.append(Gated(outbox)) or made[-1])
    intake = made[0]
    yield rig, intake
    intake.gate.set()
    await rig.stop()


async def answers(p: object, n: int) -> dict[int, int]:
    """seq -> status of the next `n` submit_sm_resp."""
    got: dict[int, int] = {}
    while len(got) < n:
        h, _ = await p.read_until(Command.SUBMIT_SM_RESP)  # type: ignore[attr-defined]
        got[h.seq] = h.status
    return got


async def test_what_arrives_while_a_batch_commits_goes_as_one_batch_after_it(
    gated: tuple[Rig, Gated],
) -> None:
    rig, intake = gated
    p = await rig.peer()
    p.send_message(sm(1, b"first"))
    await asyncio.wait_for(intake.entered.wait(), 5)
    for seq in range(2, 11):
        p.send_message(sm(seq, f"text {seq}".encode()))
    # nothing is answered before its commit
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(p.read_until(Command.SUBMIT_SM_RESP), 0.3)
    assert intake.batches == [1]
    intake.gate.set()
    got = await answers(p, 10)
    assert got == {seq: Status.ROK for seq in range(1, 11)}
    assert intake.batches == [1, 9]
    assert len(await wait_messages(rig.outbox, 10)) == 10


async def test_a_lone_message_after_a_burst_is_committed_soon(gated: tuple[Rig, Gated]) -> None:
    rig, intake = gated
    intake.gate.set()
    p = await rig.peer()
    for seq in range(1, 11):
        p.send_message(sm(seq, f"burst {seq}".encode()))
    await answers(p, 10)
    p.send_message(sm(11, b"alone"))  # fewer than the last batch: waits `gather` at most
    got = await asyncio.wait_for(answers(p, 1), 2.0)
    assert got == {11: Status.ROK}
    assert intake.batches[-1] == 1 and sum(intake.batches) == 11


async def test_a_full_window_stops_reading_until_answers_go_out(gated: tuple[Rig, Gated]) -> None:
    rig, intake = gated
    p = await rig.peer()
    for seq in range(1, 16):  # window 10
        p.send_message(sm(seq, f"text {seq}".encode()))
    await asyncio.wait_for(intake.entered.wait(), 5)

    for _ in range(500):  # up to 5 s
        if rig.sessions() and rig.sessions()[0]["in_flight"] >= 10:
            break
        await asyncio.sleep(0.01)
    assert rig.sessions()[0]["in_flight"] == 10  # not 15: the rest wait in TCP
    intake.gate.set()
    got = await answers(p, 15)
    assert set(got.values()) == {Status.ROK}
    assert len(await wait_messages(rig.outbox, 15)) == 15


async def test_a_refused_message_fails_alone_in_its_batch(gated: tuple[Rig, Gated]) -> None:
    rig, intake = gated
    p = await rig.peer()
    p.send_message(sm(1, b"first"))
    await asyncio.wait_for(intake.entered.wait(), 5)
    p.send_message(sm(2, b"good one"))
    p.send_message(sm(3, b"refuse me"))
    p.send_message(sm(4, b"good two"))
    intake.gate.set()
    got = await answers(p, 4)
    assert got == {1: Status.ROK, 2: Status.ROK, 3: Status.RX_P_APPN, 4: Status.ROK}
    texts = sorted(m.text for m in await wait_messages(rig.outbox, 3))
    assert texts == ["first", "good one", "good two"]


async def test_a_store_slower_than_enquire_link_does_not_drop_a_full_window_as_silent(
    gated: tuple[Rig, Gated],
) -> None:
    """With the window full we stop reading, so the peer's enquire_link_resp waits unread: that
    silence is ours, not the peer's (enquire_link and response_timeout are 0.5 s here)."""
    rig, intake = gated
    p = await rig.peer()
    for seq in range(1, 16):
        p.send_message(sm(seq, f"text {seq}".encode()))
    await asyncio.wait_for(intake.entered.wait(), 5)
    # three times enquire_link + response_timeout with the store stalled; the peer answers
    # every enquire_link it gets, and the link must stay up (no IncompleteReadError)
    with pytest.raises(TimeoutError):
        await p.read_until(Command.SUBMIT_SM_RESP, timeout=3.0)
    assert not rig.counted("sms_gateway_smpp_errors_total", bind="box1#1", kind="silent")
    intake.gate.set()
    got = await answers(p, 15)
    assert set(got.values()) == {Status.ROK}
