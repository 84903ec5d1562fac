"""Network identification: IMSI -> MCC/MNC -> country and operator, and Onlinesim's names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.inventory.networks import Names, identify, split_imsi


def test_imsi_gives_country_and_operator() -> None:
    net = identify("250011234567890")
    assert net is not None
    assert (net.mcc, net.mnc, net.iso) == ("250", "01", "RU")
    names = Names({"250-01": "mts"})
    assert names.country(net) == "russia" and names.operator(net) == "mts"


def test_three_digit_mncs_and_the_networks_own_name_as_fallback() -> None:
    net = identify("310260123456789")
    assert net is not None and (net.mcc, net.mnc, net.iso) == ("310", "260", "US")
    unknown = identify("250771234567890", "MyNet")
    assert unknown is not None and unknown.operator == "MyNet"
    assert Names({}).operator(unknown) == "mynet"


@given(st.text(max_size=20))
def test_split_imsi_takes_garbage(text: str) -> None:
    split = split_imsi(text)
    assert split is None or (text.startswith(split[0] + split[1]) and len(split[0]) == 3)
