"""``modems probe``: identify a port and print a config snippet that is valid TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.errors import DecodeError
from gateway.sources.modem.probe import ProbeResult, probe_port, render_snippet
from gateway.sources.modem.session import decode_crsm_iccid
from tests.sources.modem.conftest import PIN, FakeFactory


@pytest.mark.parametrize(("profile", "number"), [("huawei", None), ("telit", "+79161234567")])
async def test_probe_identifies_the_modem_and_prints_a_snippet(
    fakes: FakeFactory, profile: str, number: str | None
) -> None:
    fake = fakes(profile, number=number)
    result = await probe_port(fake.port, timeout=1)
    assert result.error is None
    assert (result.maker, result.model) == (fake.profile.manufacturer, fake.profile.model)
    assert (result.imei, result.iccid, result.imsi) == (fake.imei, fake.iccid, fake.imsi)
    assert result.own_number == (number.lstrip("+") if number else None)
    assert (result.signal_dbm, result.registered, result.operator) == (-73, True, "MegaFon")
    assert (result.storage, result.storage_used, result.storage_total) == ("SM", 0, 30)
    assert not any(
        c.startswith(("AT+CNMI", "AT+CMGL", "AT+CMGD", "AT+CFUN")) for c in fake.commands
    )

    snippet = render_snippet([result])
    doc = tomllib.loads(snippet)
    (modem,) = doc["modem"]
    (sim,) = doc["sim"]
    assert modem["port"] == fake.port
    assert sim["iccid"] == fake.iccid
    if number:
        assert modem["phone"] == sim["phone"] == "79161234567"
    else:
        assert "phone" not in modem and sim["phone"] == ""
        assert "# fill in" in snippet
    assert fake.imei in snippet and "MegaFon" in snippet


async def test_probe_of_a_missing_port_says_so(tmp_path: Path) -> None:
    port = str(tmp_path / "usb-nothing-if00-port0")
    result = await probe_port(port, timeout=0.5)
    assert result.error and "cannot open" in result.error
    snippet = render_snippet([result])
    assert tomllib.loads(snippet) == {}
    assert port in snippet


async def test_probe_of_a_locked_sim_enters_the_pin_or_asks_for_it(fakes: FakeFactory) -> None:
    fake = fakes("quectel", pin=PIN)
    locked = await probe_port(fake.port, timeout=1)
    assert locked.sim_state == "SIM PIN" and locked.error and "PIN" in locked.error
    assert locked.iccid == fake.iccid  # the ICCID reads without the PIN
    snippet = render_snippet([locked])
    (modem,) = tomllib.loads(snippet)["modem"]
    assert modem["pin"] == ""
    assert PIN not in snippet

    unlocked = await probe_port(fake.port, pin=PIN, timeout=1)
    assert unlocked.error is None and unlocked.sim_state == "READY"
    assert unlocked.imsi == fake.imsi


async def test_probe_of_a_silent_modem_times_out_without_resetting_it(fakes: FakeFactory) -> None:
    fake = fakes()
    fake.silent = True
    result = await probe_port(fake.port, timeout=0.3)
    assert result.error and "did not answer" in result.error
    assert "AT+CFUN=1,1" not in fake.commands
    assert tomllib.loads(render_snippet([result])) == {}


def test_snippet_for_several_ports_is_one_valid_document() -> None:
    results = [
        ProbeResult("/dev/ttyUSB0", maker="SIMCOM_Ltd", iccid="8970199123456789012"),
        ProbeResult("/dev/ttyUSB1", maker='Odd "maker"\n', imsi="250991234567890"),
        ProbeResult("/dev/ttyUSB2", maker="x"),
        ProbeResult("/dev/ttyUSB3", error="cannot open"),
    ]
    doc = tomllib.loads(render_snippet(results))
    assert [m["port"] for m in doc["modem"]] == ["/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2"]
    assert doc["sim"] == [
        {"iccid": "8970199123456789012", "phone": ""},
        {"imsi": "250991234567890", "phone": ""},
    ]


def test_iccid_from_the_sim_file_read_is_unswapped() -> None:
    # EF_ICCID 8970199123456789012 as BCD with swapped nibbles and an F filler.
    lines = ['+CRSM: 144,0,"980791193254769810F2"']
    assert decode_crsm_iccid(lines) == "8970199123456789012"
    with pytest.raises(DecodeError, match="refused"):
        decode_crsm_iccid(['+CRSM: 106,130,""'])
