"""What an upstream answer means for a message (CONTRACT section 4), decided by Policy."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import DEFAULT_DROP_ON
from gateway.delivery.policy import Policy, Verdict, parse_retry_after
from gateway.outbox import Outcome

policy = Policy(DEFAULT_DROP_ON)

RETRY = Verdict(Outcome.RETRY)
DOWN = Verdict(Outcome.RETRY, upstream_down=True)


def dropped(code: str) -> Verdict:
    return Verdict(Outcome.DROPPED, code=code)


def key_rejected(code: str) -> Verdict:
    return Verdict(Outcome.RETRY, code=code, key_rejected=True)


# -- 200 is delivered, whatever it says --------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "",
        '{"status": "SUCCESS"}',
        '{"response": 1}',
        '{"response": "NO_OPERATION"}',
        "NO_OP",
        "BAD_SERVICE",
        '{"response": "ERROR_WRONG_KEY"}',
        "TOO_MANY_ATTEMPTS",
        "<html>oops</html>",
    ],
)
def test_http_200_is_delivered_whatever_the_body(body: str) -> None:
    assert policy.classify(200, body) == Verdict(Outcome.DELIVERED)
    assert policy.classify(200, body, "30") == Verdict(Outcome.DELIVERED)


@pytest.mark.parametrize("status", [201, 202, 204, 301, 302])
def test_other_success_like_statuses_are_not_delivered(status: int) -> None:
    assert policy.classify(status, '{"status": "SUCCESS"}') == RETRY


# -- drop codes ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["NO_OPERATION", "NO_OP", "BAD_SERVICE"])
@pytest.mark.parametrize("status", [400, 403, 404, 429, 500, 503, 201])
@pytest.mark.parametrize("shape", ["json", "plain", "sentence"])
def test_no_operation_drops_message_for_good(code: str, status: int, shape: str) -> None:
    body = {
        "json": json.dumps({"response": code}),
        "plain": code,
        "sentence": f"error: {code}.",
    }[shape]
    assert policy.classify(status, body) == dropped(code)


def test_the_longest_code_is_reported_when_one_contains_another() -> None:
    assert policy.classify(404, "NO_OPERATION").code == "NO_OPERATION"
    assert policy.classify(404, '{"response":"NO_OP"}').code == "NO_OP"


def test_a_drop_code_wins_over_a_key_error_and_a_429() -> None:
    assert policy.classify(401, "ERROR_WRONG_KEY NO_OP") == dropped("NO_OP")
    assert policy.classify(429, '{"response":"BAD_SERVICE"}', "5") == dropped("BAD_SERVICE")


@pytest.mark.parametrize(
    "body",
    [
        "NO_OPERATIONS",
        "XNO_OP",
        "NO_OP2",
        "MY_NO_OP",
        "NO_OP_X",
        "BAD_SERVICES",
        '{"response": "NO_OPERATIONS"}',
        "no_operation_x",
        "NOOP",
        "NO OPERATION",
    ],
)
def test_a_code_inside_a_longer_word_does_not_drop(body: str) -> None:
    assert policy.classify(404, body) == RETRY


@pytest.mark.parametrize("body", ["no_operation", '{"response": "no_op"}', "Bad_Service"])
def test_drop_codes_are_case_sensitive_so_lowercase_is_retried(body: str) -> None:
    # Dropping is irreversible: only the upstream's exact (upper-case) codes end a message.
    # config.parse upper-cases configured codes, so `drop_on = ["no_op"]` still means NO_OP.
    assert policy.classify(404, body) == RETRY


def test_drop_on_is_what_the_configuration_lists() -> None:
    custom = Policy(["SERVICE_BAN"])
    assert custom.classify(400, '{"response":"SERVICE_BAN"}') == dropped("SERVICE_BAN")
    assert custom.classify(404, '{"response":"NO_OPERATION"}') == RETRY
    assert Policy([]).classify(404, "NO_OPERATION") == RETRY


def test_regex_characters_in_a_configured_code_are_literal() -> None:
    odd = Policy(["A.B"])
    assert odd.classify(400, "A.B") == dropped("A.B")
    assert odd.classify(400, "AxB") == RETRY


# -- retried answers -------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["", "<html><body><h1>404 Not Found</h1></body></html>", "{}"])
def test_404_without_a_drop_code_is_retried_not_dropped(body: str) -> None:
    assert policy.classify(404, body) == RETRY


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_5xx_is_retried_and_counts_as_upstream_down(status: int) -> None:
    assert policy.classify(status, "Internal Server Error") == DOWN


@pytest.mark.parametrize("status", [400, 404, 405, 409, 422, 499])
def test_4xx_is_retried_without_counting_as_upstream_down(status: int) -> None:
    assert policy.classify(status, "") == RETRY


def test_a_noted_code_is_kept_on_a_retry() -> None:
    assert policy.classify(400, '{"response":"SERVICE_BAN"}') == Verdict(
        Outcome.RETRY, code="SERVICE_BAN"
    )
    assert policy.classify(503, "IGNORED") == Verdict(
        Outcome.RETRY, code="IGNORED", upstream_down=True
    )


# -- key problems ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_reject_the_key(status: int) -> None:
    assert policy.classify(status, "") == key_rejected(f"HTTP_{status}")
    assert policy.classify(status, "<html>Forbidden</html>") == key_rejected(f"HTTP_{status}")


@pytest.mark.parametrize(
    "code", ["ERROR_WRONG_KEY", "ERROR_NO_KEY", "API_ACCESS_DISABLED", "API_ACCESS_IP"]
)
@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_key_error_in_a_non_200_body_rejects_the_key(code: str, status: int) -> None:
    assert policy.classify(status, json.dumps({"response": code})) == key_rejected(code)


def test_a_key_code_inside_a_longer_word_is_not_a_key_error() -> None:
    assert policy.classify(400, "XERROR_WRONG_KEY") == RETRY
    assert policy.classify(400, "ERROR_NO_KEYS") == RETRY
    assert policy.classify(400, "xAPI_ACCESS_DISABLED") == RETRY
    assert policy.classify(400, "API_ACCESS_") == RETRY  # API_ACCESS_ needs a suffix


# -- 429 -------------------------------------------------------------------------------------


def test_429_is_rate_limited_with_retry_after_in_seconds() -> None:
    assert policy.classify(429, '{"response":"TOO_MANY_ATTEMPTS"}', "2") == Verdict(
        Outcome.RATE_LIMITED, code="TOO_MANY_ATTEMPTS", retry_after=2.0
    )


def test_429_without_retry_after_has_none() -> None:
    assert policy.classify(429, "") == Verdict(
        Outcome.RATE_LIMITED, code="TOO_MANY_ATTEMPTS", retry_after=None
    )
    assert policy.classify(429, "", "soon") == Verdict(
        Outcome.RATE_LIMITED, code="TOO_MANY_ATTEMPTS", retry_after=None
    )


def test_429_with_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(time.time() + 120, UTC), usegmt=True)
    verdict = policy.classify(429, "", when)
    assert verdict.outcome is Outcome.RATE_LIMITED
    assert verdict.retry_after == pytest.approx(120, abs=2)


def test_429_keeps_a_noted_code_from_the_body() -> None:
    assert policy.classify(429, "IGNORED").code == "IGNORED"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2", 2.0),
        (" 30 ", 30.0),
        ("120", 120.0),
        ("1.5", None),  # not delta-seconds (RFC 9110: 1*DIGIT)
        ("-5", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 1445412000.0),
        ("Wed, 21 Oct 2015 07:28:00 +0000", 480.0),
        ("Wed, 21 Oct 2015 08:28:00 +0100", 480.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: go now
        ("Mon, 32 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    # now = 2015-10-21 07:20:00 UTC
    assert parse_retry_after(value, now=1445412000.0) == seconds


@pytest.mark.parametrize("value", ["²", "1²", "①"])
def test_a_retry_after_of_odd_unicode_digits_is_unreadable_not_a_crash(value: str) -> None:
    assert parse_retry_after(value, now=0.0) is None
    assert policy.classify(429, "", value).retry_after is None


# -- no answer at all ------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["Timeout", "ClientConnectorError", "ServerDisconnectedError"])
def test_no_http_answer_is_an_error_counting_as_upstream_down(error: str) -> None:
    assert policy.classify_error(error) == Verdict(Outcome.ERROR, upstream_down=True)


# -- properties ------------------------------------------------------------------------------


def _not_odd_digits(value: str) -> bool:
    v = value.strip()
    return not (v.isdigit() and not v.isdecimal())  # the xfail case above


header_values = st.one_of(
    st.none(),
    st.text(max_size=40).filter(_not_odd_digits),
    st.integers(min_value=0, max_value=10**30).map(str),
    st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: format_datetime(d, usegmt=True)),
)
bodies = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from([*DEFAULT_DROP_ON, "ERROR_WRONG_KEY", "API_ACCESS_X", "IGNORED", " ", "_"])
        | st.text(max_size=5),
        max_size=6,
    ).map("".join),
)


@given(status=st.integers(min_value=-1, max_value=1000), body=bodies, retry_after=header_values)
def test_classify_never_raises_and_gives_a_consistent_verdict(
    status: int, body: str, retry_after: str | None
) -> None:
    v = policy.classify(status, body, retry_after)
    assert isinstance(v, Verdict)
    if status == 200:
        assert v == Verdict(Outcome.DELIVERED)
    if v.outcome is Outcome.DROPPED:
        assert v.code in DEFAULT_DROP_ON
        assert v.code in body
    if v.upstream_down:
        assert status >= 500
        assert v.outcome is Outcome.RETRY
    if v.retry_after is not None:
        assert v.outcome is Outcome.RATE_LIMITED
        assert v.retry_after >= 0


@given(value=header_values, now=st.floats(min_value=0, max_value=4e9))
def test_parse_retry_after_never_raises_and_is_never_negative(
    value: str | None, now: float
) -> None:
    seconds = parse_retry_after(value, now=now)
    assert seconds is None or seconds >= 0
