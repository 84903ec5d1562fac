"""Partner calls parsed from hostile JSON: typed values or BadRequest naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox.partner import FinishStatus
from gateway.partner.requests import (
    Action,
    BadRequest,
    FinishActivation,
    GetNumber,
    GetServices,
    parse_request,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def test_get_services_from_the_documented_body() -> None:
    assert parse_request({"action": "GET_SERVICES", "key": "k"}) == GetServices(rent=False)


def test_get_number_from_the_documented_body_with_integer_and_string_prefixes() -> None:
    body = {
        "action": "GET_NUMBER",
        "country": "Germany",
        "operator": "any",
        "service": "facebook",
        "sum": 40,
        "key": "k",
        "exceptionPhoneSet": [46950, "7918", "+79281"],
    }
    assert parse_request(body) == GetNumber(
        rent=False,
        country="germany",
        operator="any",
        service="facebook",
        exceptions=("46950", "7918", "79281"),
        sum=40.0,
        period=None,
    )


def test_finish_activation_from_the_documented_body() -> None:
    body = {"action": "FINISH_ACTIVATION", "activationId": 355, "sum": 4.5, "status": 3}
    assert parse_request(body) == FinishActivation(False, 355, FinishStatus.SOLD, 4.5)


def test_rent_finish_is_recognised_by_its_service_field() -> None:
    body = {"action": "FINISH_ACTIVATION", "activationId": 1, "status": 4, "service": "rent"}
    request = parse_request(body)
    assert isinstance(request, FinishActivation) and request.rent


def test_the_url_names_the_action_when_the_body_does_not() -> None:
    assert parse_request({}, default=Action.GET_SERVICES, rent=True) == GetServices(rent=True)


def test_a_body_action_other_than_the_urls_is_refused() -> None:
    with pytest.raises(BadRequest) as e:
        parse_request({"action": "GET_NUMBER"}, default=Action.GET_SERVICES)
    assert e.value.field == "action"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "NOPE"}, "action"),
        ({"action": 5}, "action"),
        ({}, "action"),
        ({"action": "GET_NUMBER", "service": "vk"}, "country"),
        ({"action": "GET_NUMBER", "country": "russia"}, "service"),
        ({"action": "GET_NUMBER", "country": "", "service": "vk"}, "country"),
        ({"action": "GET_NUMBER", "country": "r" * 65, "service": "vk"}, "country"),
        (
            {"action": "GET_NUMBER", "country": "ru", "service": "vk", "exceptionPhoneSet": 7},
            "exceptionPhoneSet",
        ),
        (
            {"action": "GET_NUMBER", "country": "ru", "service": "vk", "exceptionPhoneSet": [True]},
            "exceptionPhoneSet[0]",
        ),
        (
            {"action": "GET_NUMBER", "country": "ru", "service": "vk", "exceptionPhoneSet": ["7a"]},
            "exceptionPhoneSet[0]",
        ),
        ({"action": "GET_NUMBER", "country": "ru", "service": "vk", "sum": "1"}, "sum"),
        ({"action": "FINISH_ACTIVATION", "status": 3}, "activationId"),
        ({"action": "FINISH_ACTIVATION", "activationId": 0, "status": 3}, "activationId"),
        ({"action": "FINISH_ACTIVATION", "activationId": 2**63, "status": 3}, "activationId"),
        ({"action": "FINISH_ACTIVATION", "activationId": 1, "status": 2}, "status"),
        ({"action": "FINISH_ACTIVATION", "activationId": 1}, "status"),
        ([], "body"),
    ],
)
def test_bad_bodies_name_their_field(body: Any, field: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_request(body)
    assert e.value.field == field


@given(json_values, st.sampled_from([None, *Action]), st.booleans())
def test_any_json_is_parsed_or_refused_with_bad_request(
    body: Any, default: Action | None, rent: bool
) -> None:
    try:
        request: object = parse_request(body, default=default, rent=rent)
    except BadRequest as e:
        request = e
    if isinstance(request, BadRequest):
        assert request.field
        json.dumps({"status": "ERROR", "error": str(request)})  # always serialisable
    else:
        assert isinstance(request, GetServices | GetNumber | FinishActivation)


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=10**19),
            st.text("0123456789", min_size=1, max_size=20),
        ),
        max_size=50,
    )
)
def test_prefixes_are_digit_strings_whatever_their_json_type(prefixes: list[int | str]) -> None:
    body = {"action": "GET_NUMBER", "country": "ru", "service": "vk", "exceptionPhoneSet": prefixes}
    request = parse_request(body)
    assert isinstance(request, GetNumber)
    assert request.exceptions == tuple(str(p) for p in prefixes)
