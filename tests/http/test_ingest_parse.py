"""The body of POST /v1/sms (CONTRACT section 5): parse_body and normalize_phone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fields import MAX_FIELD, MAX_ITEMS, MAX_TEXT, FieldError, normalize_phone
from gateway.http.ingest import ParsedBody, parse_body
from gateway.outbox import Incoming

NOW = 1_800_000_000.0


def sms(**fields: Any) -> dict[str, Any]:
    return {"phone": "79001234567", "phoneFrom": "Instagram", "text": "Code 1234", **fields}


def parse(payload: Any) -> ParsedBody:
    return parse_body(payload, source="http", now=NOW)


def error(payload: Any) -> FieldError:
    with pytest.raises(FieldError) as info:
        parse(payload)
    return info.value


# -- accepted bodies ---------------------------------------------------------------------------


def test_one_object_gives_one_message_received_now() -> None:
    assert parse(sms()) == ParsedBody(
        items=[
            Incoming(
                source="http",
                phone="79001234567",
                phone_from="Instagram",
                text="Code 1234",
                received_at=NOW,
                source_ref=None,
            )
        ],
        is_list=False,
    )


def test_a_list_gives_one_message_per_item_in_order() -> None:
    body = parse([sms(text="a"), sms(text="b", phone="+7 (900) 765-43-21")])
    assert body.is_list is True
    assert [(m.phone, m.text) for m in body.items] == [("79001234567", "a"), ("79007654321", "b")]


def test_a_list_of_one_is_still_a_list() -> None:
    assert parse([sms()]).is_list is True


def test_a_list_of_a_thousand_is_accepted() -> None:
    assert len(parse([sms(id=str(i)) for i in range(MAX_ITEMS)]).items) == 1000


def test_id_becomes_the_source_ref() -> None:
    assert parse(sms(id="modem-7/42")).items[0].source_ref == "modem-7/42"
    assert parse(sms(id="")).items[0].source_ref is None


def test_text_keeps_every_character() -> None:
    text = 'Привет 👋\n\t"quoted" \\ <b> ' + "x" * 100
    assert parse(sms(text=text)).items[0].text == text
    assert parse(sms(text="")).items[0].text == ""


def test_text_up_to_the_limit_is_accepted() -> None:
    assert len(parse(sms(text="я" * MAX_TEXT)).items[0].text) == MAX_TEXT


def test_null_optional_fields_are_as_if_absent() -> None:
    item = parse(sms(id=None, receivedAt=None)).items[0]
    assert (item.source_ref, item.received_at) == (None, NOW)


# -- receivedAt --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-27T15:04:05+03:00", datetime(2026, 11, 27, 12, 4, 5, tzinfo=UTC)),
        ("2026-11-27T12:04:05Z", datetime(2026, 11, 27, 12, 4, 5, tzinfo=UTC)),
        ("2026-11-27T12:04:05", datetime(2026, 11, 27, 12, 4, 5, tzinfo=UTC)),  # naive is UTC
        ("2026-11-27T12:04:05.250-01:30", datetime(2026, 11, 27, 13, 34, 5, 250000, tzinfo=UTC)),
        ("2026-11-27 12:04:05+00:00", datetime(2026, 11, 27, 12, 4, 5, tzinfo=UTC)),
    ],
)
def test_received_at_is_iso_8601(value: str, expected: datetime) -> None:
    assert parse(sms(receivedAt=value)).items[0].received_at == expected.timestamp()


def test_an_empty_received_at_means_now() -> None:
    assert parse(sms(receivedAt="")).items[0].received_at == NOW


@pytest.mark.parametrize("value", ["yesterday", "27.11.2026 15:04", "2026-13-01T00:00:00Z", "1"])
def test_a_received_at_that_is_not_iso_8601_is_refused(value: str) -> None:
    e = error(sms(receivedAt=value))
    assert e.field == "receivedAt"
    assert str(e) == "receivedAt: expected ISO-8601, e.g. 2026-11-27T15:04:05+03:00"


def test_a_bad_received_at_in_a_list_names_its_index() -> None:
    assert error([sms(), sms(receivedAt="soon")]).field == "[1].receivedAt"


# -- refused bodies name their field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"phoneFrom": "X", "text": "t"}, "phone", "phone: missing"),
        (sms(phone=None), "phone", "phone: missing"),
        ({"phone": "79001234567", "text": "t"}, "phoneFrom", "phoneFrom: missing"),
        ({"phone": "79001234567", "phoneFrom": "X"}, "text", "text: missing"),
        (sms(phoneFrom="   "), "phoneFrom", "phoneFrom: must not be empty"),
        (
            sms(phone="not a number"),
            "phone",
            "phone: expected 3 to 20 digits (+, spaces, dashes, dots, parentheses allowed)",
        ),
        (
            sms(extra=1),
            "extra",
            "extra: unknown field; expected phone, phoneFrom, text, receivedAt, id",
        ),
        (sms(smsId=5), "smsId", None),
        (sms(phone_from="X"), "phone_from", None),
        ([], "body", "body: empty list; send 1 to 1000 messages"),
        ("79001234567", "body", "body: expected a JSON object"),
        (None, "body", "body: expected a JSON object"),
        (42, "body", "body: expected a JSON object"),
        ([sms(), "x"], "[1]", "[1]: expected a JSON object"),
        ([sms(), [sms()]], "[1]", "[1]: expected a JSON object"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    payload: Any, field: str, message: str | None
) -> None:
    e = error(payload)
    assert e.field == field
    if message is not None:
        assert str(e) == message


def test_more_than_a_thousand_messages_are_refused() -> None:
    e = error([sms()] * (MAX_ITEMS + 1))
    assert (e.field, str(e)) == ("body", "body: 1001 messages; at most 1000 per request")


def test_an_error_in_a_list_names_the_index_of_the_item() -> None:
    items = [sms(), sms(), sms(), {"phone": "79001234567", "text": "t"}]
    e = error(items)
    assert (e.field, str(e)) == ("[3].phoneFrom", "[3].phoneFrom: missing")


def test_the_first_bad_item_of_a_list_is_reported() -> None:
    assert error([sms(), sms(phone="x"), sms(text=1)]).field == "[1].phone"


def test_unknown_fields_are_refused_in_list_items_too() -> None:
    assert error([sms(), sms(Phone="1")]).field == "[1].Phone"


@pytest.mark.parametrize("field", ["phone", "phoneFrom", "text", "id", "receivedAt"])
@pytest.mark.parametrize(
    ("value", "kind"),
    [(79001234567, "int"), (1.5, "float"), (True, "bool"), (["x"], "list"), ({"a": 1}, "dict")],
)
def test_non_string_values_are_refused(field: str, value: Any, kind: str) -> None:
    e = error(sms(**{field: value}))
    assert (e.field, str(e)) == (field, f"{field}: expected a string, got {kind}")


@pytest.mark.parametrize("field", ["phoneFrom", "text", "id", "receivedAt"])
def test_a_lone_surrogate_is_refused(field: str) -> None:
    payload = json.loads(json.dumps(sms(**{field: "ab\ud800cd"})))
    e = error(payload)
    assert (e.field, str(e)) == (field, f"{field}: contains an unpaired UTF-16 surrogate")


def test_a_lone_surrogate_in_a_list_item_names_its_index() -> None:
    assert error([sms(), sms(text="\udfff")]).field == "[1].text"


def test_a_surrogate_pair_from_json_is_a_real_character() -> None:
    payload = json.loads('{"phone": "79001234567", "phoneFrom": "X", "text": "\\ud83d\\ude00"}')
    assert parse(payload).items[0].text == "😀"


def test_over_long_fields_are_refused() -> None:
    assert error(sms(text="x" * (MAX_TEXT + 1))).field == "text"
    assert error(sms(phoneFrom="x" * (MAX_FIELD + 1))).field == "phoneFrom"
    assert error(sms(id="x" * (MAX_FIELD + 1))).field == "id"
    assert parse(sms(phoneFrom="x" * MAX_FIELD)).items[0].phone_from == "x" * MAX_FIELD


# -- phone numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("79001234567", "79001234567"),
        ("+7 (900) 123-45-67", "79001234567"),
        ("+7.900.123.45.67", "79001234567"),
        (" 7900\t1234567 ", "79001234567"),
        ("123", "123"),
        ("1" * 20, "1" * 20),
        ("12", None),
        ("1" * 21, None),
        ("", None),
        ("+", None),
        ("7900123456x", None),
        ("٧٩٠٠١٢٣٤٥٦٧", None),  # Arabic-Indic digits are not ASCII
        ("\uff17\uff19\uff10\uff10", None),  # full-width digits
        ("79001234567;", None),
        ("#123", None),
    ],
)
def test_normalize_phone_keeps_ascii_digits_only(raw: str, digits: str | None) -> None:
    assert normalize_phone(raw) == digits


@given(st.text(max_size=40))
def test_normalize_phone_gives_3_to_20_ascii_digits_or_none(raw: str) -> None:
    digits = normalize_phone(raw)
    if digits is not None:
        assert digits.isascii()
        assert digits.isdigit()
        assert 3 <= len(digits) <= 20
        assert digits == "".join(c for c in raw if c in "0123456789")


# -- property ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["phone", "phoneFrom", "text", "receivedAt", "id"])
            | st.text(max_size=8),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)
plausible_items = st.fixed_dictionaries(
    {
        "phone": st.sampled_from(["79001234567", "+7 900 123", "12", "x"]) | st.text(max_size=25),
        "phoneFrom": st.text(max_size=12),
        "text": st.text(max_size=30),
    },
    optional={
        "receivedAt": st.datetimes().map(lambda d: d.isoformat())
        | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
        | st.text(max_size=30),
        "id": st.text(max_size=10) | st.none(),
        "extra": json_values,
    },
)


def parsed_or_error(payload: Any) -> ParsedBody | FieldError:
    """Any other exception propagates and fails the property."""
    try:
        return parse(payload)
    except FieldError as e:
        return e


@given(payload=json_values | plausible_items | st.lists(plausible_items | json_values, max_size=5))
@settings(max_examples=400)
def test_any_json_value_is_parsed_or_refused_with_ingest_error(payload: Any) -> None:
    body = parsed_or_error(payload)
    if isinstance(body, FieldError):
        assert str(body).startswith(f"{body.field}: ")  # (field is "" for an unknown key "")
    else:
        assert body.is_list is isinstance(payload, list)
        assert 1 <= len(body.items) <= MAX_ITEMS
        for item in body.items:
            assert item.phone.isascii()
            assert item.phone.isdigit()
            item.text.encode("utf-8")
            item.phone_from.encode("utf-8")
            assert isinstance(item.received_at, float)
