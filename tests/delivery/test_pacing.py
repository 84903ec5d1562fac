"""How many pushes may start: concurrency window, circuit breaker and 429 back-off (Pacer)."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.delivery.pacing import Circuit, Pacer, PacerSnapshot
from gateway.delivery.policy import Verdict
from gateway.outbox import Outcome

OK = Verdict(Outcome.DELIVERED)
DOWN = Verdict(Outcome.RETRY, upstream_down=True)  # a 5xx
ERROR = Verdict(Outcome.ERROR, upstream_down=True)  # timeout, refused
NOT_FOUND = Verdict(Outcome.RETRY)  # a 404 without a drop code
DROPPED = Verdict(Outcome.DROPPED, code="NO_OPERATION")
KEY = Verdict(Outcome.RETRY, code="HTTP_401", key_rejected=True)


def limited(retry_after: float | None = None) -> Verdict:
    return Verdict(Outcome.RATE_LIMITED, code="TOO_MANY_ATTEMPTS", retry_after=retry_after)


def opened(*, concurrency: int = 4, circuit_after: int = 3, at: float = 100.0) -> Pacer:
    """A pacer whose circuit opened at `at` (retry_interval 10)."""
    p = Pacer(concurrency=concurrency, circuit_after=circuit_after, retry_interval=10.0)
    for _ in range(circuit_after):
        p.finished(DOWN, at)
    assert p.circuit is Circuit.OPEN
    return p


# -- the window --------------------------------------------------------------------------------


def test_a_fresh_pacer_allows_up_to_concurrency_in_flight() -> None:
    p = Pacer(concurrency=4, circuit_after=3, retry_interval=10.0)
    assert [p.allowed(0.0, n) for n in range(7)] == [4, 3, 2, 1, 0, 0, 0]
    assert p.snapshot(0.0) == PacerSnapshot(
        circuit=Circuit.CLOSED, window=4, consecutive_down=0, paused_for=0.0, rate_cap=None
    )
    assert p.wait_hint(0.0, 0) is None


def test_ordinary_answers_leave_the_window_alone() -> None:
    p = Pacer(concurrency=4, circuit_after=3, retry_interval=10.0)
    for verdict in (OK, NOT_FOUND, DROPPED, KEY, OK):
        assert p.finished(verdict, 1.0) is None
    assert p.allowed(1.0, 0) == 4
    assert p.circuit is Circuit.CLOSED


# -- the circuit breaker -----------------------------------------------------------------------


def test_circuit_opens_after_circuit_after_upstream_failures_in_a_row() -> None:
    p = Pacer(concurrency=4, circuit_after=3, retry_interval=10.0)
    assert p.finished(DOWN, 100.0) is None
    assert p.finished(ERROR, 100.0) is None
    assert p.allowed(100.0, 0) == 4
    assert p.finished(DOWN, 100.0) is Circuit.OPEN

    assert p.snapshot(100.0) == PacerSnapshot(
        circuit=Circuit.OPEN, window=1, consecutive_down=3, paused_for=0.0, rate_cap=None
    )
    assert p.allowed(100.0, 0) == 0
    assert p.allowed(109.999, 0) == 0


def test_an_open_circuit_sends_one_probe_every_retry_interval() -> None:
    p = opened(at=100.0)

    assert p.allowed(110.0, 0) == 1
    assert p.allowed(110.0, 1) == 0  # the probe is in flight
    assert p.allowed(500.0, 1) == 0
    p.sent(110.0)
    assert p.finished(ERROR, 111.0) is None  # failed probe: still open

    assert p.allowed(120.999, 0) == 0
    assert p.allowed(121.0, 0) == 1  # retry_interval after the failed probe ended
    assert p.allowed(121.0, 2) == 0


def test_failures_not_in_a_row_do_not_open_the_circuit() -> None:
    p = Pacer(concurrency=4, circuit_after=3, retry_interval=10.0)
    for verdict in (DOWN, DOWN, OK, DOWN, DOWN, NOT_FOUND, ERROR, ERROR, DROPPED, DOWN):
        p.finished(verdict, 1.0)
    assert p.circuit is Circuit.CLOSED
    assert p.consecutive_down == 1
    assert p.allowed(1.0, 0) == 4


def test_late_failures_while_open_push_the_next_probe_back() -> None:
    p = opened(at=100.0)
    p.finished(ERROR, 105.0)  # a request that was already in flight times out
    assert p.allowed(110.0, 0) == 0
    assert p.allowed(115.0, 0) == 1


@pytest.mark.parametrize("answer", [OK, NOT_FOUND, DROPPED, KEY])
def test_any_answer_that_is_not_an_upstream_failure_starts_the_ramp(answer: Verdict) -> None:
    p = opened(at=100.0)
    p.sent(110.0)
    assert p.finished(answer, 110.5) is Circuit.RAMPING
    assert p.snapshot(110.5) == PacerSnapshot(
        circuit=Circuit.RAMPING, window=1, consecutive_down=0, paused_for=0.0, rate_cap=None
    )
    assert p.allowed(110.5, 0) == 1
    assert p.allowed(110.5, 1) == 0


def test_after_the_probe_succeeds_the_window_grows_by_one_per_success() -> None:
    concurrency = 6
    p = opened(concurrency=concurrency, at=100.0)
    p.sent(110.0)
    p.finished(OK, 110.0)
    now, in_flight = 111.0, 0
    windows: list[int] = []
    changes: list[Circuit | None] = []
    while True:
        n = p.allowed(now, in_flight)
        assert n == p.window - in_flight  # never more than the window
        for _ in range(n):
            p.sent(now)
        in_flight += n
        windows.append(p.window)
        if p.circuit is Circuit.CLOSED:
            break
        changes.append(p.finished(OK, now))  # the oldest in flight succeeds
        in_flight -= 1
        now += 0.1

    assert windows == [1, 2, 3, 4, 5, 6]
    assert changes == [None, None, None, None, Circuit.CLOSED]
    assert p.allowed(now, 0) == concurrency


def test_a_429_while_ramping_does_not_grow_the_window() -> None:
    p = opened(at=100.0)
    p.sent(110.0)
    p.finished(OK, 110.0)
    p.finished(OK, 110.0)
    assert p.window == 2
    p.finished(limited(0.0), 110.0)
    assert (p.circuit, p.window) == (Circuit.RAMPING, 2)


def test_failures_while_ramping_reopen_the_circuit_only_after_circuit_after() -> None:
    p = opened(circuit_after=3, at=100.0)
    p.sent(110.0)
    p.finished(OK, 110.0)
    p.finished(OK, 110.0)
    assert p.finished(DOWN, 111.0) is None
    assert p.finished(DOWN, 111.0) is None
    assert (p.circuit, p.window) == (Circuit.RAMPING, 2)
    assert p.finished(DOWN, 111.0) is Circuit.OPEN
    assert p.allowed(120.999, 0) == 0
    assert p.allowed(121.0, 0) == 1


# -- 429: pause and rate cap -------------------------------------------------------------------


def run(p: Pacer, start: float, seconds: float, *, tick: float = 0.001) -> int:
    """Send whatever allowed() permits every `tick`; each push succeeds at once. Returns sends."""
    sent = 0
    for k in range(round(seconds / tick)):
        now = start + k * tick
        for _ in range(p.allowed(now, 0)):
            p.sent(now)
            p.finished(OK, now)
            sent += 1
    return sent


def test_a_429_pauses_everything_for_retry_after_then_caps_the_rate() -> None:
    p = Pacer(concurrency=50, circuit_after=5, retry_interval=10.0)
    for i in range(40):  # 40 requests/s in the second before the 429
        t = i * 0.025
        assert p.allowed(t, 0) == 50
        p.sent(t)
        p.finished(OK, t)

    assert p.finished(limited(2.0), 1.0) is None  # no circuit change

    assert p.snapshot(1.0) == PacerSnapshot(
        circuit=Circuit.CLOSED, window=50, consecutive_down=0, paused_for=2.0, rate_cap=20.0
    )
    assert p.allowed(1.0, 0) == 0
    assert p.allowed(2.999, 0) == 0
    assert p.wait_hint(1.0, 0) == 2.0
    assert p.wait_hint(2.5, 0) == 0.5
    assert p.allowed(3.0, 0) == 1  # one token at the end of the pause, not a burst

    first_second = run(p, 3.0, 1.0)
    # cap 20/s growing 20 %/s: about 22 in the first second after the pause, against 40 before.
    assert 18 <= first_second <= 24


def test_the_rate_cap_grows_back_and_is_lifted() -> None:
    p = Pacer(concurrency=50, circuit_after=5, retry_interval=10.0)
    for i in range(40):
        p.sent(i * 0.025)
    p.finished(limited(2.0), 1.0)

    per_second = [run(p, 3.0 + s, 1.0) for s in range(7)]
    assert per_second == sorted(per_second)  # never slower than the second before
    assert per_second[0] < per_second[-1]
    assert p.rate_cap(10.0) == pytest.approx(20.0 * 1.2**7)

    # lifted once the cap reaches twice the provoking rate: 20 * 1.2**t >= 80
    lift_at = 3.0 + math.log(4) / math.log(1.2)
    assert p.rate_cap(lift_at - 0.01) is not None
    assert p.rate_cap(lift_at + 0.01) is None
    assert p.allowed(lift_at + 0.01, 0) == 50
    assert p.snapshot(lift_at + 0.01).rate_cap is None


def test_a_429_without_retry_after_pauses_for_retry_interval() -> None:
    p = Pacer(concurrency=4, circuit_after=5, retry_interval=10.0)
    p.finished(limited(None), 0.0)
    assert p.allowed(9.999, 0) == 0
    assert p.wait_hint(0.0, 0) == 10.0
    assert p.allowed(10.0, 0) == 1
    assert p.snapshot(10.0).rate_cap == 1.0  # nothing was sent: the floor of 1 request/s


def test_a_second_429_while_capped_lowers_the_cap_again() -> None:
    p = Pacer(concurrency=50, circuit_after=5, retry_interval=10.0)
    for i in range(40):
        p.sent(i * 0.025)
    p.finished(limited(2.0), 1.0)
    run(p, 3.0, 1.0)
    cap_before = p.rate_cap(4.0)
    assert cap_before is not None

    p.finished(limited(1.0), 4.0)

    cap_after = p.rate_cap(4.0)
    assert cap_after is not None
    assert cap_after <= cap_before / 2 + 1e-9
    assert p.allowed(4.5, 0) == 0
    assert p.allowed(5.0, 0) == 1


def test_a_429_with_retry_after_zero_only_caps_the_rate() -> None:
    p = Pacer(concurrency=8, circuit_after=5, retry_interval=10.0)
    for i in range(10):
        p.sent(0.1 * i)
    p.finished(limited(0.0), 1.0)
    assert p.allowed(1.0, 0) == 1
    p.sent(1.0)
    assert p.allowed(1.0, 0) == 0


# -- wait_hint ---------------------------------------------------------------------------------


def test_wait_hint_is_none_when_only_a_finishing_request_can_help() -> None:
    p = Pacer(concurrency=2, circuit_after=3, retry_interval=10.0)
    assert p.allowed(0.0, 2) == 0
    assert p.wait_hint(0.0, 0) is None


def test_wait_hint_counts_down_to_the_next_probe() -> None:
    p = opened(at=100.0)
    assert p.wait_hint(100.0, 0) == 10.0
    assert p.wait_hint(104.0, 0) == 6.0
    assert p.wait_hint(110.0, 0) == 0.0
    assert p.allowed(110.0, 0) == 1


def test_wait_hint_under_a_rate_cap_is_the_time_to_the_next_token() -> None:
    p = Pacer(concurrency=50, circuit_after=5, retry_interval=10.0)
    for i in range(40):
        p.sent(i * 0.025)
    p.finished(limited(2.0), 1.0)
    assert p.allowed(3.0, 0) == 1
    p.sent(3.0)
    assert p.allowed(3.0, 0) == 0

    hint = p.wait_hint(3.0, 0)

    assert hint is not None
    assert hint == pytest.approx(1 / 20.0)
    assert p.allowed(3.0 + hint, 0) == 1  # waiting as told is enough


def test_wait_hint_does_not_say_go_while_the_probe_is_in_flight() -> None:
    p = opened(at=100.0)
    assert p.allowed(110.0, 0) == 1
    p.sent(110.0)

    assert p.allowed(115.0, 1) == 0
    hint = p.wait_hint(115.0, 1)
    assert hint is None or hint > 0


def test_a_429_between_asking_and_sending_never_makes_allowed_negative() -> None:
    p = Pacer(concurrency=8, circuit_after=5, retry_interval=10.0)
    p.sent(0.0)  # one request in flight
    n = p.allowed(0.5, 1)
    assert n == 7
    p.finished(limited(1.0), 0.5)  # that request's 429 arrives while the batch is claimed
    for _ in range(n):
        p.sent(0.5)

    assert 0 <= p.allowed(1.5, n) <= 1


# -- properties --------------------------------------------------------------------------------

verdicts = st.sampled_from(
    [OK, DOWN, ERROR, NOT_FOUND, DROPPED, KEY, *(limited(a) for a in (None, 0.0, 0.5, 2.0, 30.0))]
)


class PacerMachine(RuleBasedStateMachine):
    """Random sends (only what allowed() permits), answers and clock moves."""

    @initialize(
        concurrency=st.integers(1, 12),
        circuit_after=st.integers(1, 5),
        retry_interval=st.sampled_from([0.5, 1.0, 10.0]),
    )
    def setup(self, concurrency: int, circuit_after: int, retry_interval: float) -> None:
        self.concurrency = concurrency
        self.p = Pacer(
            concurrency=concurrency, circuit_after=circuit_after, retry_interval=retry_interval
        )
        self.now = 0.0
        self.in_flight = 0

    @rule(k=st.integers(1, 20))
    def send(self, k: int) -> None:
        for _ in range(min(k, self.p.allowed(self.now, self.in_flight))):
            self.p.sent(self.now)
            self.in_flight += 1

    @precondition(lambda self: self.in_flight > 0)
    @rule(verdict=verdicts)
    def finish(self, verdict: Verdict) -> None:
        self.in_flight -= 1
        self.p.finished(verdict, self.now)

    @rule(dt=st.sampled_from([0.0, 0.001, 0.1, 0.5, 1.0, 2.5, 10.0, 60.0]) | st.floats(0, 100))
    def advance(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def allowed_stays_within_the_window(self) -> None:
        if not hasattr(self, "p"):
            return
        n = self.p.allowed(self.now, self.in_flight)
        assert 0 <= n <= self.concurrency - self.in_flight
        snap = self.p.snapshot(self.now)
        assert 1 <= snap.window <= self.concurrency
        assert n <= snap.window
        if snap.circuit is Circuit.OPEN:
            assert n <= 1
            if self.in_flight:
                assert n == 0
        hint = self.p.wait_hint(self.now, self.in_flight)
        assert hint is None or hint >= 0
        assert self.in_flight <= self.concurrency


PacerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestPacerNeverExceedsItsWindow = PacerMachine.TestCase
