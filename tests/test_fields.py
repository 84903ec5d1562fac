"""The field rules (gateway/fields.py): the one phone normaliser, Unicode validity, the time
window; properties over any input, garbage included."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.fields import (
    EARLIEST,
    MAX_AHEAD,
    MAX_DEVICE_AGE,
    MAX_DEVICE_AHEAD,
    FieldError,
    check_json_strings,
    check_string,
    checked_incoming,
    device_time,
    in_window,
    is_valid_unicode,
    normalize_phone,
    parse_received_at,
)
from gateway.outbox import Incoming

NOW = 1_796_000_000.0  # 2026-11-30
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ANY_TEXT = st.text(st.characters(codec=None), max_size=40)  # surrogates included


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+7.900.123.45.67", "79001234567"),
        ("+7 (900) 123-45-67", "79001234567"),
        ("79001234567", "79001234567"),
        ("+1\t555\u00a0123", "1555123"),
        ("123", "123"),
        ("1" * 20, "1" * 20),
    ],
)
def test_phone_forms_the_api_accepts(raw: str, digits: str) -> None:
    assert normalize_phone(raw) == digits


@pytest.mark.parametrize(
    "raw", ["", "12", "1" * 21, "+7 900 abc", "٧٩٠٠١٢٣٤٥٦٧", "7900\ud800123", "79/00", "++"]
)
def test_what_is_not_a_phone(raw: str) -> None:
    assert normalize_phone(raw) is None


@given(ANY_TEXT)
def test_the_phone_normaliser_gives_3_to_20_ascii_digits_or_none(raw: str) -> None:
    digits = normalize_phone(raw)
    if digits is not None:
        assert digits.isascii() and digits.isdigit() and 3 <= len(digits) <= 20
        assert normalize_phone(digits) == digits  # the stored form is its own normal form


@given(
    st.text("0123456789", min_size=3, max_size=20),
    st.lists(st.sampled_from(["+", " ", "-", ".", "(", ")", "\t"]), max_size=25),
    st.randoms(use_true_random=False),
)
def test_separators_anywhere_do_not_change_the_digits(
    digits: str, junk: list[str], rnd: Any
) -> None:
    chars = list(digits)
    for sep in junk:
        chars.insert(rnd.randint(0, len(chars)), sep)
    assert normalize_phone("".join(chars)) == digits


@given(ANY_TEXT)
def test_valid_unicode_is_what_utf8_can_carry(value: str) -> None:
    assert is_valid_unicode(value) == _utf8(value)


@given(st.text(max_size=10), SURROGATES, st.text(max_size=10))
def test_a_lone_surrogate_anywhere_is_refused_naming_the_field(
    before: str, half: str, after: str
) -> None:
    with pytest.raises(FieldError) as e:
        check_string("phoneFrom", before + half + after)
    assert e.value.field == "phoneFrom"


@given(ANY_TEXT, st.integers(0, 50))
def test_check_string_passes_exactly_short_valid_text(value: str, limit: int) -> None:
    ok = len(value) <= limit and _utf8(value)
    try:
        assert check_string("f", value, limit=limit) == value
    except FieldError:
        assert not ok
    else:
        assert ok


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=15,
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@given(_JSON)
def test_json_is_refused_exactly_when_a_key_or_string_is_not_unicode(value: Any) -> None:
    ok = all(_utf8(s) for s in _strings(value))
    refused: FieldError | None = None
    try:
        check_json_strings("sms[0]", value)
    except FieldError as e:
        refused = e
    assert (refused is None) == ok
    assert refused is None or refused.field.startswith("sms[0]")


def test_json_nested_as_deep_as_a_parser_allows_is_checked_without_recursion() -> None:
    value: Any = "\ud800"
    for _ in range(100_000):
        value = [value]
    with pytest.raises(FieldError):
        check_json_strings("body", value)


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00",
        "1999-12-31T23:59:59Z",
        "2026-12-02T00:00:00+00:00",  # two days ahead of NOW
    ],
)
def test_a_client_time_out_of_the_window_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(FieldError) as e:
        parse_received_at("[2].receivedAt", text, NOW)
    assert e.value.field == "[2].receivedAt"
    assert "out of range" in e.value.problem


@given(ANY_TEXT)
def test_any_received_at_text_is_a_time_in_the_window_or_a_field_error(text: str) -> None:
    try:
        when = parse_received_at("receivedAt", text, NOW)
    except FieldError as e:
        field = e.field
    else:
        assert EARLIEST <= when <= NOW + MAX_AHEAD
        return
    assert field == "receivedAt"


@given(st.datetimes(timezones=st.timezones()))
def test_a_client_time_is_taken_exactly_when_it_is_in_the_window(when: datetime) -> None:
    try:
        stamp = when.timestamp()
    except (OverflowError, ValueError):
        stamp = math.nan
    inside = EARLIEST <= stamp <= NOW + MAX_AHEAD
    try:
        assert parse_received_at("receivedAt", when.isoformat(), NOW) == pytest.approx(stamp)
    except FieldError:
        assert not inside
    else:
        assert inside


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_the_window(when: float) -> None:
    assert in_window(when, NOW) == (EARLIEST <= when <= NOW + MAX_AHEAD)


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        ANY_TEXT,
        st.lists(st.integers(), max_size=2),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
            lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
        ),
    )
)
@settings(max_examples=300)
def test_a_device_time_is_always_a_plausible_time(value: object) -> None:
    when = device_time(value, NOW, source="dinstar:box-1")
    assert when == NOW or NOW - MAX_DEVICE_AGE <= when <= NOW + MAX_DEVICE_AHEAD


def test_a_wrong_device_clock_is_logged_with_the_source() -> None:
    with capture_logs() as logs:
        assert device_time("2016-07-12 15:46:18", NOW, source="dinstar:box-1") == NOW
        assert device_time("", NOW, source="dinstar:box-1") == NOW  # missing: nothing to say
    (line,) = logs
    assert (line["event"], line["source"]) == ("device_time.replaced", "dinstar:box-1")


_INCOMING = st.builds(
    Incoming,
    source=ANY_TEXT,
    phone=st.one_of(ANY_TEXT, st.text("0123456789", min_size=3, max_size=20)),
    phone_from=ANY_TEXT,
    text=ANY_TEXT,
    received_at=st.floats(allow_nan=True, allow_infinity=True),
    source_ref=st.none() | ANY_TEXT,
    raw=st.none() | ANY_TEXT,
)


@given(_INCOMING)
def test_what_passes_the_accept_path_can_be_stored(item: Incoming) -> None:
    field: str | None = None
    try:
        good = checked_incoming(item, NOW)
    except FieldError as e:
        field = e.field
    if field is not None:
        assert field in {"source", "phone", "phone_from", "text", "source_ref", "raw"}
        return
    for value in (good.source, good.phone, good.phone_from, good.text):
        assert _utf8(value)
    assert good.phone.isascii() and good.phone.isdigit() and 3 <= len(good.phone) <= 20
    assert in_window(good.received_at, NOW)
    assert good.received_at in (item.received_at, NOW)


def test_a_day_ahead_is_the_limit() -> None:
    ahead = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=MAX_AHEAD)
    assert parse_received_at("receivedAt", ahead.isoformat(), NOW) == NOW + MAX_AHEAD
