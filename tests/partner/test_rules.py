"""The ledger rules and exceptionPhoneSet matching."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox.partner import FinishStatus, LedgerEntry
from gateway.partner.rules import after_finish, excluded, offerable

statuses = st.lists(st.sampled_from(list(FinishStatus)), max_size=12)
digits = st.text(string.digits, min_size=1, max_size=15)


def test_a_sold_number_is_never_offered_again_for_that_service() -> None:
    assert not offerable(after_finish(LedgerEntry(), FinishStatus.SOLD), 3)


def test_a_cancelled_number_is_offered_three_more_times() -> None:
    entry = LedgerEntry()
    offers = 1  # the first order
    while offerable(entry, 3):
        entry = after_finish(entry, FinishStatus.CANCELLED)
        offers += offerable(entry, 3)
    assert offers == 4


def test_status_1_ends_offers_and_5_counts_as_a_cancel() -> None:
    assert not offerable(after_finish(LedgerEntry(), FinishStatus.NOT_FOR_SERVICE), 3)
    refunded = after_finish(LedgerEntry(), FinishStatus.REFUNDED)
    assert offerable(refunded, 3) and refunded.cancels == 1 and refunded.refunds == 1


@given(statuses, st.integers(min_value=0, max_value=10))
def test_offerable_follows_the_history(history: list[FinishStatus], retries: int) -> None:
    entry = LedgerEntry()
    for status in history:
        entry = after_finish(entry, status)
    cancels = sum(s in (FinishStatus.CANCELLED, FinishStatus.REFUNDED) for s in history)
    expected = (
        FinishStatus.SOLD not in history
        and FinishStatus.NOT_FOR_SERVICE not in history
        and cancels <= retries
    )
    assert offerable(entry, retries) == expected


@given(digits, st.lists(digits, max_size=10))
def test_excluded_is_a_digit_prefix_match(phone: str, prefixes: list[str]) -> None:
    assert excluded(phone, prefixes) == any(phone[: len(p)] == p for p in prefixes)


def test_excluded_matches_the_documented_example() -> None:
    assert excluded("46950123456", ["46950"])
    assert not excluded("46951123456", ["46950"])
