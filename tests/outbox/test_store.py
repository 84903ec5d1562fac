"""The SQLite outbox (CONTRACT section 4): ids, dedup, claims, attempts, expiry, purge, requeue."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import StoreError, StoreTooNew, StoreUnavailable
from gateway.outbox import (
    Accepted,
    Attempt,
    AttemptRecord,
    Drop,
    Incoming,
    Message,
    Outbox,
    Outcome,
    State,
)
from gateway.outbox.migrate import available
from gateway.outbox.models import Hold
from gateway.outbox.store import existing_refs_sql

T0 = 1_800_000_000.0
LEASE = 15.0
DAY = 86400.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.sqlite3")


@pytest.fixture
async def store(db: str, clock: FakeClock) -> AsyncIterator[Outbox]:
    outbox = await Outbox.open(db, clock=clock)
    yield outbox
    await outbox.close()


def sms(
    text: str = "hello",
    *,
    ref: str | None = None,
    source: str = "http",
    phone: str = "79001234567",
    received_at: float = T0,
) -> Incoming:
    return Incoming(
        source=source,
        phone=phone,
        phone_from="Instagram",
        text=text,
        received_at=received_at,
        source_ref=ref,
    )


async def accept_ids(store: Outbox, *items: Incoming) -> list[int]:
    return [a.sms_id for a in await store.accept(items)]


async def accept_at(store: Outbox, clock: FakeClock, when: float, *items: Incoming) -> list[int]:
    """Accept `items` as if the gateway had received them at `when`; the clock stays at T0."""
    clock.now = when
    try:
        return await accept_ids(store, *items)
    finally:
        clock.now = T0


async def claim(store: Outbox, limit: int = 100, max_age: float = 0) -> list[int]:
    return [m.sms_id for m in await store.claim_due(limit=limit, lease=LEASE, max_age=max_age)]


def attempt(sms_id: int, outcome: Outcome, **kw: object) -> Attempt:
    return Attempt(sms_id=sms_id, started_at=T0, duration=0.25, outcome=outcome, **kw)  # type: ignore[arg-type]


async def finish(store: Outbox, sms_id: int, outcome: Outcome, code: str | None = None) -> None:
    await store.record([AttemptRecord(attempt(sms_id, outcome, code=code), None)])


async def state(store: Outbox, sms_id: int) -> Message:
    m = await store.get_message(sms_id)
    assert m is not None
    return m


# -- smsIds ------------------------------------------------------------------------------------


async def test_sms_ids_count_up_from_one_on_a_single_node(store: Outbox) -> None:
    assert await store.accept([sms("a"), sms("b")]) == [Accepted(1, False), Accepted(2, False)]
    assert await accept_ids(store, sms("c")) == [3]


async def test_sms_ids_are_sequence_times_nodes_plus_node(db: str, clock: FakeClock) -> None:
    outbox = await Outbox.open(db, node=2, nodes=3, clock=clock)
    try:
        assert await accept_ids(outbox, sms("a"), sms("b"), sms("c")) == [5, 8, 11]
        assert await accept_ids(outbox, sms("d")) == [14]
    finally:
        await outbox.close()


async def test_sms_ids_are_never_reused_even_after_purge(db: str, clock: FakeClock) -> None:
    outbox = await Outbox.open(db, clock=clock)
    ids = await accept_ids(outbox, sms("a"), sms("b"))
    for sms_id in ids:
        await finish(outbox, sms_id, Outcome.DELIVERED)
    clock.advance(DAY)
    assert await outbox.purge_finished(keep=60) == 2
    assert await outbox.list_messages() == []
    assert await accept_ids(outbox, sms("c")) == [3]
    await outbox.close()

    reopened = await Outbox.open(db, clock=clock)
    try:
        assert await accept_ids(reopened, sms("d")) == [4]
    finally:
        await reopened.close()


async def test_an_accepted_message_is_queued_and_due_now(store: Outbox, clock: FakeClock) -> None:
    clock.advance(5)
    [sms_id] = await accept_ids(store, sms("hi", ref="r1", received_at=T0 - 30))
    assert await store.get_message(sms_id) == Message(
        sms_id=1,
        source="http",
        source_ref="r1",
        phone="79001234567",
        phone_from="Instagram",
        text="hi",
        received_at=T0 - 30,
        accepted_at=T0 + 5,
        state=State.QUEUED,
        due_at=T0 + 5,
        attempts=0,
        finished_at=None,
        final_code=None,
    )


async def test_accepting_nothing_commits_nothing(store: Outbox) -> None:
    assert await store.accept([]) == []
    assert await accept_ids(store, sms()) == [1]


# -- deduplication -----------------------------------------------------------------------------


async def test_the_same_source_ref_twice_gives_the_same_sms_id(store: Outbox) -> None:
    first = await store.accept([sms("a", ref="r1")])
    again = await store.accept([sms("a, resent", ref="r1")])
    assert first == [Accepted(1, duplicate=False)]
    assert again == [Accepted(1, duplicate=True)]
    assert (await state(store, 1)).text == "a"
    assert (await store.summary()).counts[State.QUEUED] == 1


async def test_dedup_is_per_source(store: Outbox) -> None:
    assert await store.accept([sms(ref="r1", source="http"), sms(ref="r1", source="modem:1")]) == [
        Accepted(1, False),
        Accepted(2, False),
    ]


async def test_messages_without_a_source_ref_are_never_duplicates(store: Outbox) -> None:
    assert await store.accept([sms("same"), sms("same")]) == [
        Accepted(1, False),
        Accepted(2, False),
    ]


async def test_a_duplicate_within_one_batch_gets_the_id_of_its_first(store: Outbox) -> None:
    result = await store.accept([sms(ref="a"), sms(ref="b"), sms(ref="a"), sms(ref="b")])
    assert result == [
        Accepted(1, False),
        Accepted(2, False),
        Accepted(1, True),
        Accepted(2, True),
    ]
    assert (await store.summary()).counts[State.QUEUED] == 2


async def test_a_finished_message_is_still_a_duplicate(store: Outbox) -> None:
    await store.accept([sms(ref="r1")])
    await finish(store, 1, Outcome.DELIVERED)
    assert await store.accept([sms(ref="r1")]) == [Accepted(1, True)]
    assert (await state(store, 1)).state is State.DELIVERED


async def test_concurrent_accepts_of_the_same_ref_give_one_message(store: Outbox) -> None:
    results = await asyncio.gather(
        *(store.accept([sms(f"copy {i}", ref="dup")]) for i in range(20))
    )
    flat = [r for batch in results for r in batch]
    assert {a.sms_id for a in flat} == {1}
    assert [a.duplicate for a in flat].count(False) == 1
    later = await asyncio.gather(store.accept([sms(ref="dup")]), store.accept([sms(ref="new")]))
    assert list(later) == [[Accepted(1, True)], [Accepted(2, False)]]


async def test_a_thousand_concurrent_accepts_get_distinct_ids_and_survive_reopening(
    db: str, clock: FakeClock
) -> None:
    outbox = await Outbox.open(db, clock=clock)
    results = await asyncio.gather(*(outbox.accept([sms(f"m{i}")]) for i in range(1000)))
    ids = [batch[0].sms_id for batch in results]
    assert sorted(ids) == list(range(1, 1001))
    assert not any(batch[0].duplicate for batch in results)
    await outbox.close()

    reopened = await Outbox.open(db, clock=clock)
    try:
        stored = await reopened.list_messages(limit=5000)
        assert {m.sms_id: m.text for m in stored} == {sid: f"m{i}" for i, sid in enumerate(ids)}
    finally:
        await reopened.close()


async def test_a_listener_hears_of_new_messages_but_not_of_duplicates(store: Outbox) -> None:
    calls: list[int] = []
    store.on_accepted(lambda: calls.append(1))
    await store.accept([sms(ref="x")])
    await store.accept([sms(ref="x")])
    assert calls == [1]


async def test_nothing_is_taken_when_the_store_cannot_commit(db: str, clock: FakeClock) -> None:
    outbox = await Outbox.open(db, clock=clock, busy_timeout_ms=100)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable):
            await outbox.accept([sms("lost?", ref="r")])
        other.execute("ROLLBACK")
        assert await outbox.accept([sms("retry", ref="r")]) == [Accepted(1, False)]
    finally:
        other.close()
        await outbox.close()


# -- claiming ----------------------------------------------------------------------------------


async def test_claim_due_hands_out_the_oldest_due_first(store: Outbox, clock: FakeClock) -> None:
    ids = await accept_ids(store, sms("a"), sms("b"), sms("c"))
    assert await claim(store) == ids
    # their retries fall due in the order b, c, a
    await store.record(
        [
            AttemptRecord(attempt(1, Outcome.RETRY, http_status=500), T0 + 30),
            AttemptRecord(attempt(2, Outcome.RETRY, http_status=500), T0 + 10),
            AttemptRecord(attempt(3, Outcome.RETRY, http_status=500), T0 + 20),
        ]
    )
    clock.advance(40)
    assert [await claim(store, limit=1) for _ in range(4)] == [[2], [3], [1], []]


async def test_claim_due_takes_the_oldest_due_when_limited(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(store, *(sms(str(i)) for i in range(5)))
    await claim(store)
    await store.record(
        [
            AttemptRecord(attempt(i, Outcome.RETRY), T0 + due)
            for i, due in [(1, 50), (2, 40), (3, 30), (4, 20), (5, 10)]
        ]
    )
    clock.advance(60)
    assert set(await claim(store, limit=2)) == {4, 5}
    assert set(await claim(store, limit=2)) == {2, 3}
    assert await claim(store, limit=2) == [1]


async def test_claim_due_respects_the_limit(store: Outbox) -> None:
    await accept_ids(store, *(sms(str(i)) for i in range(5)))
    assert await claim(store, limit=3) == [1, 2, 3]
    assert await claim(store, limit=3) == [4, 5]
    assert await claim(store, limit=3) == []


async def test_claim_due_skips_messages_not_yet_due(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(store, sms())
    await claim(store)
    await store.record([AttemptRecord(attempt(1, Outcome.RETRY), T0 + 10)])
    clock.advance(9.999)
    assert await claim(store) == []
    clock.advance(0.001)
    assert await claim(store) == [1]


async def test_a_leased_message_is_not_handed_out_again_until_its_lease_ends(
    store: Outbox, clock: FakeClock
) -> None:
    await accept_ids(store, sms())
    [claimed] = await store.claim_due(limit=10, lease=LEASE, max_age=0)
    assert (claimed.sms_id, claimed.due_at, claimed.state) == (1, T0 + LEASE, State.QUEUED)
    clock.advance(LEASE - 0.001)
    assert await claim(store) == []
    clock.advance(0.001)
    assert await claim(store) == [1]  # the claimer died: the message is simply due again


async def test_claim_due_skips_messages_older_than_max_age(store: Outbox, clock: FakeClock) -> None:
    await accept_at(store, clock, T0 - 100, sms("old", received_at=T0 - 100))
    await accept_at(store, clock, T0 - 10, sms("new", received_at=T0 - 10))
    assert await claim(store, max_age=50) == [2]
    assert await claim(store, max_age=50) == []
    assert await claim(store, max_age=0) == [1]  # 0 = never too old


async def test_next_due_at_follows_the_queue(store: Outbox, clock: FakeClock) -> None:
    assert await store.next_due_at() is None
    await accept_at(store, clock, T0 - 100, sms(received_at=T0 - 100))
    assert await store.next_due_at() == T0 - 100
    assert await store.next_due_at(max_age=50) is None
    await claim(store)
    assert await store.next_due_at() == T0 + LEASE
    await finish(store, 1, Outcome.DELIVERED)
    assert await store.next_due_at() is None


# -- recording attempts ------------------------------------------------------------------------


async def test_record_delivered_finishes_the_message(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(store, sms())
    await claim(store)
    clock.advance(1)
    a = attempt(1, Outcome.DELIVERED, http_status=200, body='{"status": "SUCCESS"}')
    await store.record([AttemptRecord(a, None)])

    m = await state(store, 1)
    assert (m.state, m.attempts, m.finished_at, m.final_code, m.due_at) == (
        State.DELIVERED,
        1,
        T0 + 1,
        None,
        T0 + 1,
    )
    assert await store.attempts_for(1) == [a]
    clock.advance(LEASE * 10)
    assert await claim(store) == []


async def test_record_dropped_keeps_the_code(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(store, sms())
    await claim(store)
    a = attempt(1, Outcome.DROPPED, http_status=404, code="NO_OPERATION", body="NO_OPERATION")
    await store.record([AttemptRecord(a, None)])
    m = await state(store, 1)
    assert (m.state, m.attempts, m.finished_at, m.final_code) == (
        State.DROPPED,
        1,
        T0,
        "NO_OPERATION",
    )
    assert await store.recent_drops() == [
        Drop(1, "79001234567", "Instagram", "NO_OPERATION", T0, State.DROPPED)
    ]
    clock.advance(DAY)
    assert await claim(store) == []


async def test_record_retry_schedules_the_next_attempt(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(store, sms())
    for n in (1, 2, 3):
        assert await claim(store) == [1]
        a = attempt(1, Outcome.ERROR, error="ClientConnectorError")
        await store.record([AttemptRecord(a, clock.now + 10)])
        m = await state(store, 1)
        assert (m.state, m.attempts, m.due_at, m.finished_at, m.final_code) == (
            State.QUEUED,
            n,
            clock.now + 10,
            None,
            None,
        )
        clock.advance(10)
    assert [x.error for x in await store.attempts_for(1)] == ["ClientConnectorError"] * 3


async def test_a_late_answer_does_not_reopen_a_finished_message(store: Outbox) -> None:
    await accept_ids(store, sms())
    await finish(store, 1, Outcome.DELIVERED)
    await store.record([AttemptRecord(attempt(1, Outcome.RETRY, http_status=500), T0 + 10)])
    m = await state(store, 1)
    assert (m.state, m.attempts) == (State.DELIVERED, 1)
    assert len(await store.attempts_for(1)) == 2  # the attempt itself is still on record


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        ("x" * 5000, "x" * 4096),
        ("я" * 3000, "я" * 2048),  # 2-byte characters: exactly 4096 bytes
        ("€" * 2000, "€" * 1365),  # 3-byte characters: 4095 bytes, never half a character
        ("a" + "😀" * 1100, "a" + "😀" * 1023),  # 4-byte characters after one byte
        ("short", "short"),
        ("€" * 1365 + "a", "€" * 1365 + "a"),  # exactly 4096 bytes is kept whole
    ],
)
async def test_attempt_body_is_cut_to_4_kib_without_breaking_utf8(
    store: Outbox, body: str, stored: str
) -> None:
    await accept_ids(store, sms())
    await store.record([AttemptRecord(attempt(1, Outcome.RETRY, body=body), T0 + 10)])
    [a] = await store.attempts_for(1)
    assert a.body == stored
    assert len(a.body.encode("utf-8")) <= 4096


async def test_attempt_without_body_keeps_none(store: Outbox) -> None:
    await accept_ids(store, sms())
    await store.record([AttemptRecord(attempt(1, Outcome.ERROR, error="Timeout"), T0 + 10)])
    [a] = await store.attempts_for(1)
    assert (a.body, a.error, a.http_status, a.code) == (None, "Timeout", None, None)


# -- expiry, purge, requeue --------------------------------------------------------------------


async def test_expire_old_expires_only_queued_unleased_messages(
    store: Outbox, clock: FakeClock
) -> None:
    old = T0 - 200
    await accept_at(
        store,
        clock,
        old,
        sms("old queued", received_at=old),
        sms("old leased", received_at=old),
        sms("old delivered", received_at=old),
    )
    await accept_at(store, clock, T0 - 10, sms("young", received_at=T0 - 10))
    await claim(store, limit=2)  # 1 and 2
    await store.release([1])
    await finish(store, 3, Outcome.DELIVERED)

    assert await store.expire_old(max_age=100) == [1]

    m = await state(store, 1)
    assert (m.state, m.finished_at, m.final_code) == (State.EXPIRED, T0, "MAX_AGE")
    assert [(await state(store, i)).state for i in (2, 3, 4)] == [
        State.QUEUED,
        State.DELIVERED,
        State.QUEUED,
    ]
    assert await store.expire_old(max_age=0) == []  # 0 = never


async def test_purge_deletes_finished_messages_older_than_keep_and_their_attempts(
    store: Outbox, clock: FakeClock
) -> None:
    await accept_at(store, clock, T0 - DAY, *(sms(str(i), received_at=T0 - DAY) for i in range(5)))
    await finish(store, 1, Outcome.DELIVERED)
    await finish(store, 2, Outcome.DROPPED, "NO_OP")
    await store.expire_old(max_age=60)  # 3, 4, 5 expire
    await store.requeue(sms_ids=[5])  # 5 queued again
    clock.advance(100)
    await finish(store, 4, Outcome.DELIVERED)  # no effect: already expired
    await store.requeue(sms_ids=[4])
    await finish(store, 4, Outcome.DELIVERED)  # finished at T0 + 100

    assert await store.purge_finished(keep=50) == 3  # 1, 2, 3 (finished at T0)

    assert [m.sms_id for m in await store.list_messages()] == [5, 4]
    assert await store.attempts_for(1) == []
    assert await store.attempts_for(2) == []
    assert len(await store.attempts_for(4)) == 2
    clock.advance(DAY * 365)
    assert await store.purge_finished(keep=50) == 1  # 4; 5 is queued and never purged
    assert [m.sms_id for m in await store.list_messages()] == [5]


async def test_max_age_counts_from_acceptance_not_the_network_timestamp(
    store: Outbox, clock: FakeClock
) -> None:
    """An SMSC with a wrong clock (SCTS years in the past) must not expire a fresh SMS unsent."""
    years_ago = T0 - 5 * 365 * DAY
    await accept_ids(store, sms("fresh, stamped 2021", received_at=years_ago))
    assert await store.expire_old(max_age=DAY) == []
    assert await claim(store, max_age=DAY) == [1]
    m = await state(store, 1)
    assert (m.received_at, m.accepted_at) == (years_ago, T0)  # the network's time is kept
    clock.advance(DAY + LEASE + 1)
    assert await store.expire_old(max_age=DAY) == [1]  # a day after *we* got it, it expires


async def test_held_records_age_out_except_those_waiting_for_a_phone(
    store: Outbox, clock: FakeClock
) -> None:
    reasons = list(Hold)
    held = [dataclasses.replace(sms(r.value), hold=r) for r in reasons]
    ids = await accept_ids(store, *held)
    clock.advance(100)
    assert await store.purge_finished(keep=50) == len(reasons) - 1
    (kept,) = await store.list_messages()
    assert kept.sms_id == ids[reasons.index(Hold.NO_PHONE)]


async def test_purge_works_in_batches(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(store, *(sms(str(i)) for i in range(12)))
    for i in range(1, 13):
        await finish(store, i, Outcome.DELIVERED)
    clock.advance(10)
    assert await store.purge_finished(keep=1, batch=5) == 12


async def dropped_and_expired(store: Outbox, clock: FakeClock) -> None:
    """1 dropped at T0, 2 expired at T0 + 100, 3 delivered, 4 queued; clock at T0 + 200."""
    await accept_at(store, clock, T0 - DAY, sms("1"), sms("2", received_at=T0 - DAY))
    await accept_ids(store, sms("3"), sms("4"))
    await finish(store, 1, Outcome.DROPPED, "BAD_SERVICE")
    clock.advance(100)
    await store.expire_old(max_age=3600)
    await finish(store, 3, Outcome.DELIVERED)
    clock.advance(100)


async def test_requeue_by_ids_keeps_the_sms_id(store: Outbox, clock: FakeClock) -> None:
    await dropped_and_expired(store, clock)
    assert await store.requeue(sms_ids=[1, 3, 4, 99]) == [1]  # delivered/queued/unknown: no
    m = await state(store, 1)
    assert (m.state, m.due_at, m.finished_at, m.final_code, m.attempts) == (
        State.QUEUED,
        T0 + 200,
        None,
        None,
        1,
    )
    assert await claim(store) == [1, 4]


async def test_requeue_by_state(store: Outbox, clock: FakeClock) -> None:
    await dropped_and_expired(store, clock)
    assert await store.requeue(state=State.EXPIRED) == [2]
    m = await state(store, 2)
    assert m.state is State.QUEUED
    assert m.received_at == T0 - 86400  # the original receipt time is kept
    assert await store.expire_old(max_age=3600) == []  # max_age counts from the retry
    assert await store.requeue(state=State.DROPPED) == [1]


async def test_requeue_since_takes_only_recently_finished(store: Outbox, clock: FakeClock) -> None:
    await dropped_and_expired(store, clock)
    assert await store.requeue(since=150) == [2]  # expired 100 s ago; dropped 200 s ago
    assert await store.requeue(since=250) == [1]
    assert await store.requeue(since=1000) == []


async def test_requeue_without_filters_takes_every_dropped_and_expired(
    store: Outbox, clock: FakeClock
) -> None:
    await dropped_and_expired(store, clock)
    calls: list[int] = []
    store.on_accepted(lambda: calls.append(1))
    assert await store.requeue() == [1, 2]
    assert calls == [1]


async def held_and_others(store: Outbox, clock: FakeClock) -> None:
    """1, 2 held no_phone (accepted a day ago, no phone), 3 held undecodable, 4 queued,
    5 dropped; clock at T0."""
    no_phone = [
        dataclasses.replace(sms(t, source="smpp-server:box1", phone=""), hold=Hold.NO_PHONE, raw=r)
        for t, r in (("code 1", "destination_addr=5"), ("code 2", "destination_addr=5"))
    ]
    await accept_at(store, clock, T0 - DAY, *no_phone)
    await accept_ids(
        store, dataclasses.replace(sms("?"), hold=Hold.UNDECODABLE), sms("4"), sms("5")
    )
    await claim(store)  # 4 and 5, leased
    await finish(store, 5, Outcome.DROPPED, "NO_OPERATION")
    await store.release([4])


async def test_give_phone_queues_held_no_phone_messages_with_it_and_their_sms_id(
    store: Outbox, clock: FakeClock
) -> None:
    await held_and_others(store, clock)
    heard: list[int] = []
    store.on_accepted(lambda: heard.append(1))
    clock.advance(10)
    given = await store.give_phone([2, 1, 2], "79005550001")
    assert sorted(given.released) == [1, 2] and given.left == {}
    assert heard == [1]  # the delivery worker is woken, as for any retry
    for sms_id in (1, 2):
        m = await state(store, sms_id)
        assert given.released[sms_id] == m
        assert (m.state, m.phone, m.hold_reason, m.due_at) == (
            State.QUEUED,
            "79005550001",
            None,
            T0 + 10,
        )
        assert (m.received_at, m.accepted_at) == (T0, T0 - DAY)  # both kept
        assert m.raw == "destination_addr=5"  # what a person may still want to see
    assert await claim(store) == [1, 2, 4]
    # max_age counts from now: a day-old message is not expired at once.
    assert await store.expire_old(max_age=3600) == []


async def test_give_phone_leaves_every_other_message_as_it_is_and_says_what_it_is(
    store: Outbox, clock: FakeClock
) -> None:
    await held_and_others(store, clock)
    before = {i: await store.get_message(i) for i in range(1, 6)}
    given = await store.give_phone([3, 4, 5, 99], "79005550001")
    assert given.released == {}
    assert {i: (m.state, m.hold_reason) if m else None for i, m in given.left.items()} == {
        3: (State.HELD, Hold.UNDECODABLE),
        4: (State.QUEUED, None),
        5: (State.DROPPED, None),
        99: None,
    }
    assert {i: await store.get_message(i) for i in range(1, 6)} == before


async def test_give_phone_routes_each_message_by_when_it_was_accepted(
    store: Outbox, clock: FakeClock
) -> None:
    await held_and_others(store, clock)
    await accept_ids(store, dataclasses.replace(sms("late", phone=""), hold=Hold.NO_PHONE))  # 6
    seen: list[tuple[str, float]] = []

    def route(item: Incoming, accepted_at: float) -> Incoming:
        seen.append((item.phone, accepted_at))
        if accepted_at < T0:
            return dataclasses.replace(item, hold=Hold.NO_ACTIVATION)
        return dataclasses.replace(item, activation_id=41, rent_service="rent")

    given = await store.give_phone([1, 6], "79005550001", route)
    assert seen == [("79005550001", T0 - DAY), ("79005550001", T0)]
    old, late = await state(store, 1), await state(store, 6)
    assert (old.state, old.hold_reason, old.phone) == (
        State.HELD,
        Hold.NO_ACTIVATION,
        "79005550001",
    )
    assert (late.state, late.activation_id, late.rent_service) == (State.QUEUED, 41, "rent")
    assert given.released == {1: old, 6: late}
    assert await claim(store) == [4, 6]


async def test_give_phone_changes_all_it_may_or_nothing(store: Outbox, clock: FakeClock) -> None:
    await held_and_others(store, clock)

    def route(item: Incoming, accepted_at: float) -> Incoming:
        if item.text == "code 2":
            raise ValueError("a bug in the second message's route")
        return item

    with pytest.raises(ValueError, match="second"):
        await store.give_phone([1, 2], "79005550001", route)
    for sms_id in (1, 2):
        m = await state(store, sms_id)
        assert (m.state, m.hold_reason, m.phone) == (State.HELD, Hold.NO_PHONE, "")


async def test_give_phone_takes_more_smsids_than_one_statement_holds(
    store: Outbox, clock: FakeClock
) -> None:
    held = [dataclasses.replace(sms(str(i), phone=""), hold=Hold.NO_PHONE) for i in range(1200)]
    ids = await accept_ids(store, *held)
    given = await store.give_phone([*ids, 5000], "79005550001")
    assert sorted(given.released) == ids and list(given.left) == [5000]
    assert len(await claim(store, limit=2000)) == 1200


async def test_release_stale_leases_makes_every_leased_message_due_now(
    store: Outbox, clock: FakeClock
) -> None:
    await accept_ids(store, sms("a"), sms("b"), sms("c"))
    assert await claim(store, limit=2) == [1, 2]
    clock.advance(1)
    assert await store.release_stale_leases() == 2
    assert await claim(store) == [1, 2, 3]
    assert (await state(store, 1)).due_at == T0 + 1 + LEASE


async def test_release_gives_abandoned_messages_back_at_once(
    store: Outbox, clock: FakeClock
) -> None:
    await accept_ids(store, sms("a"), sms("b"))
    await claim(store)
    clock.advance(2)
    await store.release([2])
    m = await state(store, 2)
    assert (m.due_at, m.attempts) == (T0 + 2, 0)
    assert await claim(store) == [2]


# -- reading -----------------------------------------------------------------------------------


async def test_summary_counts_states_and_ages(store: Outbox, clock: FakeClock) -> None:
    await accept_ids(
        store,
        sms("a", received_at=T0 - 50),
        sms("b", received_at=T0 - 70),
        sms("c"),
        sms("d"),
    )
    await finish(store, 3, Outcome.DELIVERED)
    clock.advance(5)
    await finish(store, 4, Outcome.DROPPED, "NO_OP")
    s = await store.summary()
    assert s.counts == {
        State.QUEUED: 2,
        State.DELIVERED: 1,
        State.DROPPED: 1,
        State.EXPIRED: 0,
        State.HELD: 0,
    }
    assert s.oldest_queued_received_at == T0 - 70
    assert s.last_delivered_at == T0
    assert await store.queued_count() == 2
    assert await store.oldest_queued_received_at() == T0 - 70


async def test_list_messages_newest_first_with_filters(store: Outbox) -> None:
    await accept_ids(store, sms("a", phone="111"), sms("b", phone="222"), sms("c", phone="111"))
    await finish(store, 1, Outcome.DELIVERED)
    assert [m.sms_id for m in await store.list_messages()] == [3, 2, 1]
    assert [m.sms_id for m in await store.list_messages(phone="111")] == [3, 1]
    assert [m.sms_id for m in await store.list_messages(state=State.QUEUED)] == [3, 2]
    assert [m.sms_id for m in await store.list_messages(limit=1)] == [3]
    assert await store.get_message(99) is None
    assert await store.attempts_for(99) == []


# -- health of the file ------------------------------------------------------------------------


async def test_check_writable_is_none_when_the_store_commits(store: Outbox) -> None:
    assert await store.check_writable() is None


async def test_check_writable_names_the_problem_when_another_process_locks_the_file(
    db: str, clock: FakeClock
) -> None:
    outbox = await Outbox.open(db, clock=clock, busy_timeout_ms=200)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        reason = await outbox.check_writable(timeout=5.0)
        assert reason == "the store cannot commit: database is locked"
        assert time.monotonic() - started < 4.0
        assert outbox.last_write_error == "OperationalError: database is locked"
        other.execute("ROLLBACK")
        assert await outbox.check_writable() is None
        assert outbox.last_write_error is None
    finally:
        other.close()
        await outbox.close()


async def test_the_store_refuses_a_database_from_a_newer_version(db: str, clock: FakeClock) -> None:
    outbox = await Outbox.open(db, clock=clock)
    await outbox.accept([sms()])
    await outbox.close()
    newer = len(available()) + 1
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")

    with pytest.raises(StoreTooNew, match=f"schema version {newer}"):
        await Outbox.open(db, clock=clock)

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (newer,)
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)


async def test_open_without_create_refuses_a_missing_file(db: str) -> None:
    with pytest.raises(StoreError, match="no store there"):
        await Outbox.open(db, create=False)


async def test_open_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory does not exist"):
        await Outbox.open(str(tmp_path / "nope" / "outbox.sqlite3"))


# -- a big backlog -----------------------------------------------------------------------------

BACKLOG = 100_000


@pytest.fixture(scope="module")
def backlog_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("backlog") / "outbox.sqlite3")

    async def fill() -> None:
        outbox = await Outbox.open(path, clock=FakeClock())
        for start in range(0, BACKLOG, 10_000):
            await outbox.accept([sms(f"m{i}") for i in range(start, start + 10_000)])
        await outbox.close()

    asyncio.run(fill())
    return path


async def test_claiming_from_a_backlog_of_100k_takes_well_under_50_ms(backlog_db: str) -> None:
    outbox = await Outbox.open(backlog_db, clock=FakeClock(T0 + 1))
    try:
        assert await outbox.queued_count() >= BACKLOG - 1000
        await claim(outbox, limit=32)  # warm the cache
        times = []
        for _ in range(10):
            t = time.perf_counter()
            assert len(await claim(outbox, limit=32, max_age=DAY)) == 32
            times.append(time.perf_counter() - t)
        assert statistics.median(times) < 0.050, times
    finally:
        await outbox.close()


async def _claim_work(outbox: Outbox) -> int:
    """SQLite VM steps (in thousands) one claim of 32 costs, counted on the store's writer."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    conn = outbox._conn  # the store's one writing connection
    assert conn is not None
    await conn.call(lambda c: c.set_progress_handler(tick, 1000))
    try:
        assert len(await claim(outbox, limit=32, max_age=DAY)) == 32
    finally:
        await conn.call(lambda c: c.set_progress_handler(None, 0))
    return ticks[0]


async def test_a_claim_costs_the_same_with_100_or_100k_queued(
    backlog_db: str, tmp_path: Path
) -> None:
    small = await Outbox.open(str(tmp_path / "small.sqlite3"), clock=FakeClock(T0 + 1))
    try:
        await small.accept([sms(str(i)) for i in range(100)])
        small_work = await _claim_work(small)
    finally:
        await small.close()
    big = await Outbox.open(backlog_db, clock=FakeClock(T0 + 1))
    try:
        big_work = await _claim_work(big)
    finally:
        await big.close()
    assert big_work <= 2 * small_work + 5, (small_work, big_work)


async def test_the_dedup_lookup_searches_the_index_instead_of_scanning_it(db: str) -> None:
    store = await Outbox.open(db)
    await store.close()
    conn = sqlite3.connect(db)
    try:
        plan = " / ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + existing_refs_sql(3), ["s", "r"] * 3
            ).fetchall()
        )
    finally:
        conn.close()
    assert "SEARCH m USING COVERING INDEX messages_source_ref" in plan, plan
    assert "SCAN m" not in plan and "SCAN messages" not in plan, plan


def _ref_item(ref: str, earlier: str | None = None) -> Incoming:
    return Incoming(
        "smpp-server:box1", "79001230001", "79005556677", "same", T0, source_ref=ref,
        earlier_ref=earlier,
    )  # fmt: skip


async def test_an_item_stored_under_its_earlier_ref_is_a_duplicate(store: Outbox) -> None:
    (first,) = await store.accept([_ref_item("42|k|7")])
    # the next period: its earlier ref is the first one's ref
    (again,) = await store.accept([_ref_item("42|k|8", earlier="42|k|7")])
    assert again == Accepted(first.sms_id, duplicate=True)
    # two periods on: the earlier ref ("42|k|8") was never stored, so this is new
    (later,) = await store.accept([_ref_item("42|k|9", earlier="42|k|8")])
    assert not later.duplicate and later.sms_id != first.sms_id
    assert len(await store.list_messages()) == 2


async def test_an_earlier_ref_matches_within_one_batch_too(store: Outbox) -> None:
    a, b = await store.accept([_ref_item("7|k|1"), _ref_item("7|k|2", earlier="7|k|1")])
    assert not a.duplicate and b == Accepted(a.sms_id, duplicate=True)
    assert len(await store.list_messages()) == 1


async def test_a_message_held_again_on_release_ages_from_the_release_not_its_arrival(
    store: Outbox, clock: FakeClock
) -> None:
    """Held no_phone for a long time, then given its phone but held no_activation ([partner]
    on): the next purge must not delete it at once."""
    (sms_id,) = await accept_ids(
        store, dataclasses.replace(sms("old"), phone="", hold=Hold.NO_PHONE)
    )
    clock.advance(100 * DAY)
    assert await store.release_held("http", "79001234567", hold=Hold.NO_ACTIVATION) == [sms_id]
    assert await store.purge_finished(keep=7 * DAY) == 0
    clock.advance(7 * DAY + 1)
    assert await store.purge_finished(keep=7 * DAY) == 1


async def test_an_earlier_ref_matches_within_one_batch_in_either_order(store: Outbox) -> None:
    """A clock stepped back across a period boundary: the later period's copy first."""
    a, b = await store.accept([_ref_item("7|k|2", earlier="7|k|1"), _ref_item("7|k|1")])
    assert not a.duplicate and b == Accepted(a.sms_id, duplicate=True)
    assert len(await store.list_messages()) == 1
