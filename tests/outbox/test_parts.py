"""Concatenated SMS in the outbox: parts committed one by one, joined once, never lost."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.outbox import Hold, Incoming, Outbox, Part, State
from gateway.outbox.parts import gap_marker


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Outbox, Clock]]:
    clock = Clock()
    outbox = await Outbox.open(str(tmp_path / "o.sqlite3"), clock=clock)
    yield outbox, clock
    await outbox.close()


def part(seq: int, total: int = 3, *, group: str = "g1", phone: str = "79001234567") -> Part:
    return Part(
        source="modem:m1",
        group_key=group,
        seq=seq,
        total=total,
        text=f"<{seq}>",
        phone=phone,
        phone_from="Bank",
        received_at=1_800_000_000.0 + seq,
        source_ref=f"{group}/{seq}",
        raw=f"PDU{seq}",
    )


async def test_parts_in_any_order_make_one_message(store: tuple[Outbox, Clock]) -> None:
    outbox, _ = store
    assert (await outbox.accept_part(part(3))).joined is None
    assert (await outbox.accept_part(part(1))).joined is None
    result = await outbox.accept_part(part(2))
    assert result.joined is not None
    m = await outbox.get_message(result.joined.sms_id)
    assert m is not None
    assert (m.text, m.state, m.partial, m.phone) == (
        "<1><2><3>",
        State.QUEUED,
        False,
        "79001234567",
    )
    assert m.received_at == 1_800_000_001.0


async def test_a_part_read_again_after_the_join_is_a_duplicate(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, _ = store
    for seq in (1, 2, 3):
        result = await outbox.accept_part(part(seq))
    assert result.joined is not None
    again = await outbox.accept_part(part(2))
    assert again.duplicate
    assert again.joined is not None
    assert again.joined.sms_id == result.joined.sms_id
    summary = await outbox.summary()
    assert summary.counts[State.QUEUED] == 1


async def test_a_part_read_twice_before_the_join_is_a_duplicate(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, _ = store
    await outbox.accept_part(part(1))
    again = await outbox.accept_part(part(1))
    assert again.duplicate
    assert again.joined is None


async def test_stale_groups_go_out_with_gaps_marked(store: tuple[Outbox, Clock]) -> None:
    outbox, clock = store
    await outbox.accept_part(part(1))
    await outbox.accept_part(part(3))
    clock.now += 100
    assert await outbox.flush_stale_parts(300) == []
    clock.now += 250
    (joined,) = await outbox.flush_stale_parts(300)
    m = await outbox.get_message(joined.sms_id)
    assert m is not None
    assert m.text == "<1>" + gap_marker(2, 3) + "<3>"
    assert m.partial
    assert m.state is State.QUEUED
    # The late part is then recognised, not pushed again as a new message.
    late = await outbox.accept_part(part(1))
    assert late.duplicate


async def test_parts_without_a_phone_make_a_held_message_released_later(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, _ = store
    await outbox.accept_part(part(1, 2, phone=""))
    result = await outbox.accept_part(part(2, 2, phone=""))
    assert result.joined is not None
    m = await outbox.get_message(result.joined.sms_id)
    assert m is not None
    assert (m.state, m.hold_reason) == (State.HELD, Hold.NO_PHONE)
    assert await outbox.claim_due(limit=10, lease=10, max_age=0) == []
    assert await outbox.release_held("modem:m1", "79001112233") == [result.joined.sms_id]
    (claimed,) = await outbox.claim_due(limit=10, lease=10, max_age=0)
    assert claimed.phone == "79001112233"


async def test_held_records_are_kept_not_pushed(store: tuple[Outbox, Clock]) -> None:
    outbox, clock = store
    (a,) = await outbox.accept(
        [Incoming("modem:m1", "", "?", "", clock.now, "k1", hold=Hold.UNDECODABLE, raw="0791ZZ")]
    )
    m = await outbox.get_message(a.sms_id)
    assert m is not None
    assert (m.state, m.raw, m.hold_reason) == (State.HELD, "0791ZZ", Hold.UNDECODABLE)
    assert await outbox.claim_due(limit=10, lease=10, max_age=0) == []
    assert await outbox.release_held("modem:m1", "79001234567") == []  # not a phone problem
    assert [x.sms_id for x in await outbox.list_messages(state=State.HELD)] == [a.sms_id]


async def test_two_groups_interleaved_stay_apart(store: tuple[Outbox, Clock]) -> None:
    outbox, _ = store
    results = []
    for seq in (1, 2):
        results.append(await outbox.accept_part(part(seq, 2, group="a")))
        results.append(await outbox.accept_part(part(seq, 2, group="b")))
    joined = [r.joined for r in results if r.joined]
    assert len(joined) == 2
    assert len({j.sms_id for j in joined}) == 2


@settings(max_examples=25, deadline=None)
@given(total=st.integers(1, 8), seed=st.integers(0, 10_000), repeats=st.integers(0, 3))
async def test_any_arrival_order_with_repeats_joins_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, total: int, seed: int, repeats: int
) -> None:
    path = tmp_path_factory.mktemp("parts") / "o.sqlite3"
    outbox = await Outbox.open(str(path))
    try:
        order = [*range(1, total + 1)]
        rng = random.Random(seed)
        order += [rng.randint(1, total) for _ in range(repeats)]
        rng.shuffle(order)
        joined = set()
        for seq in order:
            r = await outbox.accept_part(part(seq, total))
            if r.joined:
                joined.add(r.joined.sms_id)
        assert len(joined) == 1
        (m,) = await outbox.list_messages()
        assert m.text == "".join(f"<{i}>" for i in range(1, total + 1))
    finally:
        await outbox.close()


@settings(max_examples=40, deadline=None)
@given(
    first=st.sampled_from([0, 1]),
    total=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    repeats=st.integers(0, 3),
)
async def test_parts_numbered_from_zero_or_one_join_in_order_in_any_arrival_order(
    tmp_path_factory: pytest.TempPathFactory, first: int, total: int, seed: int, repeats: int
) -> None:
    """A peer numbers the parts of an SMS 1..n or 0..n-1 (Yeastar firmware does either): a
    group completes when its parts are either consistent set, joined in that order."""
    path = tmp_path_factory.mktemp("parts") / "o.sqlite3"
    outbox = await Outbox.open(str(path))
    try:
        seqs = [*range(first, first + total)]
        rng = random.Random(seed)
        order = seqs + [rng.choice(seqs) for _ in range(repeats)]
        rng.shuffle(order)
        joined = []
        for seq in order:
            r = await outbox.accept_part(part(seq, total))
            if r.joined and not r.joined.duplicate:
                joined.append(r.joined.sms_id)
        assert len(joined) == 1
        (m,) = await outbox.list_messages()
        assert m.text == "".join(f"<{i}>" for i in seqs) and not m.partial
    finally:
        await outbox.close()


async def test_parts_numbered_from_zero_committed_before_a_restart_still_complete(
    tmp_path: Path,
) -> None:
    """Nothing about the numbering lives in memory: parts 0 and 2 of 3 committed, the process
    gone (store closed), a new one takes part 1 and the group completes at once."""
    path = str(tmp_path / "o.sqlite3")
    outbox = await Outbox.open(path)
    assert (await outbox.accept_part(part(0))).joined is None
    assert (await outbox.accept_part(part(2))).joined is None
    await outbox.close()
    outbox = await Outbox.open(path)
    try:
        result = await outbox.accept_part(part(1))
        assert result.joined is not None
        m = await outbox.get_message(result.joined.sms_id)
        assert m is not None and m.text == "<0><1><2>" and not m.partial
    finally:
        await outbox.close()


async def test_a_stale_group_numbered_from_zero_marks_its_gap_by_position(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, clock = store
    await outbox.accept_part(part(0))
    await outbox.accept_part(part(2))
    clock.now += 1000
    (joined,) = await outbox.flush_stale_parts(300)
    m = await outbox.get_message(joined.sms_id)
    assert m is not None and m.partial
    assert m.text == "<0>" + gap_marker(2, 3) + "<2>"


async def test_a_set_mixing_both_numberings_loses_no_part(store: tuple[Outbox, Clock]) -> None:
    """0, 1 and 2 of 2 fit neither numbering: nothing completes it early, and when the
    multi-part timeout joins it every part that came is in the text, in order."""
    outbox, clock = store
    for seq in (2, 0):
        assert (await outbox.accept_part(part(seq, 2))).joined is None
    result = await outbox.accept_part(part(1, 2))
    if result.joined is None:  # 0 and 1 of 2 would be whole; 2 then waits alone
        clock.now += 1000
        await outbox.flush_stale_parts(300)
    texts = sorted(m.text for m in await outbox.list_messages())
    assert "".join(texts).count("<") == 3


async def test_open_ended_groups_wait_for_their_source_to_close_them(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, _ = store
    for seq in (1, 2):
        assert (await outbox.accept_part(part(seq, 0, group="goip"))).joined is None
    joined = await outbox.close_group("modem:m1", "goip")
    assert joined is not None
    m = await outbox.get_message(joined.sms_id)
    assert m is not None
    assert (m.text, m.partial) == ("<1><2>", False)
    assert await outbox.close_group("modem:m1", "goip") is None  # nothing waits any more


async def test_an_open_ended_group_left_by_a_crash_goes_out_without_a_false_gap(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, clock = store
    await outbox.accept_part(part(1, 0, group="goip"))
    await outbox.accept_part(part(3, 0, group="goip"))
    clock.now += 400
    (joined,) = await outbox.flush_stale_parts(300)
    m = await outbox.get_message(joined.sms_id)
    assert m is not None
    assert m.text == "<1>" + gap_marker(2, 3) + "<3>"  # a real gap below the last part only


# -- an emoji split between two parts ---------------------------------------------------------

GRIN = "\U0001f600"  # 😀: UTF-16 D83D DE00


def ucs2_part_pdu(seq: int, total: int, data: bytes, ref: int = 0x42) -> str:
    """An SMS-DELIVER PDU (no SMSC) of one UCS-2 part, built by hand from its bytes."""
    sender = "79001234567"
    digits = sender + "F" * (len(sender) % 2)
    swapped = "".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2))
    header = bytes([5, 0, 3, ref, total, seq])
    ud = header + data
    return (
        "00"  # no SMSC address
        + "40"  # SMS-DELIVER with a user data header
        + f"{len(sender):02X}91{swapped}"
        + "00"  # TP-PID
        + "08"  # TP-DCS: UCS-2
        + "62211221000000"  # TP-SCTS
        + f"{len(ud):02X}"
        + ud.hex().upper()
    )


async def test_an_emoji_split_between_two_parts_comes_back_whole(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, _ = store
    first = Part("modem:m1", "split", 1, 2, "ab\ud83d", "79001234567", "Bank", 1.0, "s/1")
    second = Part("modem:m1", "split", 2, 2, "\ude00cd", "79001234567", "Bank", 1.0, "s/2")
    assert (await outbox.accept_part(first)).joined is None
    assert (await outbox.accept_part(first)).duplicate  # read again: still recognised
    result = await outbox.accept_part(second)
    assert result.joined is not None
    m = await outbox.get_message(result.joined.sms_id)
    assert m is not None
    assert m.text == f"ab{GRIN}cd"


async def test_a_half_pair_whose_other_part_never_came_is_a_replacement_character(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, clock = store
    await outbox.accept_part(
        Part("modem:m1", "lonely", 1, 2, "ab\ud83d", "79001234567", "Bank", 1.0, "l/1")
    )
    clock.now += 3600
    (joined,) = await outbox.flush_stale_parts(60)
    m = await outbox.get_message(joined.sms_id)
    assert m is not None
    assert m.text == "ab\ufffd" + gap_marker(2, 2)


async def test_an_emoji_split_by_the_network_reaches_the_outbox_whole_from_the_modem(
    store: tuple[Outbox, Clock],
) -> None:
    from gateway.sources.modem.inbound import Received, to_item

    outbox, clock = store
    units = f"Hi {GRIN}!".encode("utf-16-be")  # 00480069002000D83DDE000021
    cut = units.index(bytes.fromhex("DE00"))  # between the two halves of the pair
    joined = None
    for seq, data in ((1, units[:cut]), (2, units[cut:])):
        item = to_item(
            ucs2_part_pdu(seq, 2, data),
            Received("modem:m1", "sim1", "79001234567", str(seq), clock.now),
        )
        assert isinstance(item, Part)
        joined = (await outbox.accept_part(item)).joined
    assert joined is not None
    m = await outbox.get_message(joined.sms_id)
    assert m is not None
    assert m.text == f"Hi {GRIN}!"


async def test_a_part_stored_under_its_earlier_ref_is_a_duplicate(
    store: tuple[Outbox, Clock],
) -> None:
    outbox, _ = store
    first = dataclasses.replace(part(1, 2), source_ref="p1|5")
    assert not (await outbox.accept_part(first)).duplicate
    again = dataclasses.replace(part(1, 2), source_ref="p1|6", earlier_ref="p1|5")
    assert (await outbox.accept_part(again)).duplicate
    # two periods on the earlier ref was never stored: a new part (of a new copy)
    later = dataclasses.replace(part(1, 2), source_ref="p1|7", earlier_ref="p1|6")
    assert not (await outbox.accept_part(later)).duplicate
