"""Ejoin / Skyline pushes: the parser against the published format, and the route end to end.

Format: Ejoin / Skyline "HTTP API" v2.4, "Receive SMS": ``{"type": "recv-sms", "sms_num": n,
"sms": [[flag, "port", ts, "sender", "recipient", "<base64>"]]}``, flag 1 = delivery report,
content base64 of UTF-8 header lines, a blank line, then the text. The row with ICCID and IMSI
appended is as a Skyline box pushed it (quoted in a public integration's source).

Status pushes: Ejoin "HTTP MultiWan Router Development Spec" v2.2, section 3 (dev-status with
``expires`` and a ``status`` list of ``{"port", "st", "iccid", "imsi", "sn", "opr", "sig", ...}``,
port-status for one port when it changes); the examples below are the spec's own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.config import SimConfig
from gateway.fields import FieldError, checked_incoming
from gateway.intake import Intake
from gateway.inventory.sims import Inventory, SimState
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.models import Hold
from gateway.outbox.partner import PartnerBook
from gateway.peers import PeerSources
from gateway.sources import ejoin
from gateway.sources.ejoin import (
    SUCCESS,
    decode_content,
    fresh_window,
    parse_push,
    port_state,
    sightings,
    status_code,
)
from tests.fakes.peers import serving
from tests.inventory.conftest import InventoryWatch
from tests.inventory.test_boxes import Countable

NOW = 1_762_700_300.0
SOURCE = "ejoin:sky-1"
TOKEN = "ejoin-token-0123456789"
GOOGLE = (
    "U2VuZGVyOiBHb29nbGUNClJlY2VpdmVyOiAiMjQuMDEiIA0KU01TQzogMzQ2MDcwMDgwNzcNClNDVFM6IDI1MTEw"
    "OTE0NTYzMDg4DQpTbG90OiAiMDEiDQoNCkctNjY2MjY2IGlzIHlvdXIgR29vZ2xlIHZlcmlmaWNhdGlvbiBjb2RlLg=="
)
ROW = [0, "24.01", 1762700191, "Google", "", GOOGLE, "89610300003433465383", "505038350517698"]
PUSH = {"type": "recv-sms", "sms_num": 1, "sms": [ROW]}
SIMS = (SimConfig(phone="79001230001", source="sky-1", port="24.01"),)


def content(text: str, **headers: str) -> str:
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Sender": "x", **headers}.items())
    return base64.b64encode(f"{head}\r\n{text}".encode()).decode()


def parse(payload: Any, sims: tuple[SimConfig, ...] = SIMS) -> list[Any]:
    return parse_push(payload, source=SOURCE, sims=sims, now=NOW)


def test_published_example_gives_the_text_after_the_header_lines() -> None:
    (m,) = parse(PUSH)
    assert m.text == "G-666266 is your Google verification code."
    assert (m.phone, m.phone_from, m.received_at) == ("79001230001", "Google", 1762700191.0)
    assert m.hold is None and m.source_ref.startswith("24.01|1762700191|Google|")


def test_decode_content_returns_the_header_fields() -> None:
    headers, text = decode_content(GOOGLE)
    assert headers["SMSC"] == "34607008077" and headers["Slot"] == '"01"'
    assert text.startswith("G-666266")


def test_delivery_reports_are_acknowledged_not_pushed() -> None:
    report = [1, "1B", 1466506477, "10010", "13265825775", "0 250820064536A8"]
    assert parse({"type": "recv-sms", "sms_num": 1, "sms": [report]}) == []


def test_other_push_kinds_are_acknowledged_without_messages() -> None:
    assert parse({"type": "dev-status", "seq": 1, "status": []}) == []
    assert parse({"type": "status-report", "rpt_num": 0, "rpts": []}) == []


def test_phone_order_sim_table_then_imsi_then_the_pushed_recipient() -> None:
    row = [0, "3.02", 1762700191, "+79005556677", "+7 900 111 22 33", content("Привет")]
    (by_recipient,) = parse({"type": "recv-sms", "sms": [row]})
    assert by_recipient.phone == "79001112233" and by_recipient.text == "Привет"
    by_imsi = (SimConfig(phone="79009998877", imsi="505038350517698"),)
    (m,) = parse(PUSH, sims=by_imsi)
    assert m.phone == "79009998877"
    (held,) = parse({"type": "recv-sms", "sms": [[0, "3.02", 1, "x", "", content("hi")]]})
    assert held.hold is Hold.NO_PHONE


def test_text_without_header_lines_and_undecodable_content() -> None:
    plain = base64.b64encode(b"just text").decode()
    (m,) = parse({"type": "recv-sms", "sms": [[0, "24.01", 1, "x", "", plain]]})
    assert m.text == "just text"
    (bad,) = parse({"type": "recv-sms", "sms": [[0, "24.01", 1, "x", "", "!!not base64"]]})
    assert bad.hold is Hold.UNDECODABLE  # kept for a person, and the device stops resending


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ("x", "body"),
        ({"sms": []}, "type"),
        ({"type": "recv-sms"}, "sms"),
        ({"type": "recv-sms", "sms": [[0, "1"]]}, r"sms\[0\]"),
        ({"type": "recv-sms", "sms": [["a", "1", 1, "s", "r", "c"]]}, r"sms\[0\]\[0\]"),
        ({"type": "recv-sms", "sms": [[2, "1", 1, "s", "r", "c"]]}, "flag 2"),
        ({"type": "recv-sms", "sms": [[0, [], 1, "s", "r", "c"]]}, r"sms\[0\]\[1\]"),
        ({"type": "recv-sms", "sms": [[0, "1", -5, "s", "r", "c"]]}, r"sms\[0\]\[2\]"),
        ({"type": "recv-sms", "sms": [[0, "1", 1, "s", "r", 5]]}, r"sms\[0\]\[5\]"),
    ],
)
def test_malformed_pushes_are_refused_naming_the_field(payload: Any, field: str) -> None:
    with pytest.raises(FieldError, match=field):
        parse(payload)


_SCALAR = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
_ROW = st.lists(_SCALAR | st.just(GOOGLE), max_size=9)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["recv-sms", "recv-sms", "dev-status", "", None]),
    rows=st.one_of(st.lists(_ROW, max_size=4), _SCALAR),
)
def test_any_push_gives_acceptable_messages_or_a_field_error(kind: Any, rows: Any) -> None:
    try:
        items = parse({"type": kind, "sms": rows})
    except FieldError:
        return
    for m in items:
        assert checked_incoming(m, NOW) is m  # the accept path takes each as it is


# -- the route, end to end over loopback --------------------------------------------------


def box_config(tmp_path: Path) -> config.Config:
    """One Ejoin box, sky-1, on loopback; its port 24.01 has a [[sim]]."""
    return config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "ejoin": [{"name": "sky-1", "token": TOKEN, "allow": ["127.0.0.1", "::1"]}],
            "sim": [{"source": "ejoin:sky-1", "port": "24.01", "phone": "79001230001"}],
        }
    )


@pytest.fixture
async def route(tmp_path: Path) -> AsyncIterator[tuple[str, Outbox]]:
    cfg = box_config(tmp_path)
    outbox = await Outbox.open(cfg.store.path)
    metrics = Metrics()
    async with serving(PeerSources(cfg, Intake(outbox, metrics), metrics)) as base:
        yield f"{base}/v1/inbound/ejoin/sky-1", outbox
    await outbox.close()


async def post(url: str, body: Any, token: str = TOKEN) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, params={"token": token}, data=json.dumps(body)) as resp,
    ):
        return resp.status, json.loads(await resp.text())


async def test_a_push_sent_twice_is_one_message(route: tuple[str, Outbox]) -> None:
    url, outbox = route
    assert await post(url, PUSH) == (200, SUCCESS)
    assert await post(url, PUSH) == (200, SUCCESS)
    (m,) = await outbox.list_messages()
    assert (m.phone, m.phone_from) == ("79001230001", "Google")
    assert m.text == "G-666266 is your Google verification code."


async def test_wrong_token_and_malformed_body(route: tuple[str, Outbox]) -> None:
    url, outbox = route
    assert (await post(url, PUSH, token=""))[0] == 401
    status, body = await post(url, {"type": "recv-sms", "sms": "nope"})
    assert status == 400 and "sms" in body["error"]
    assert await outbox.list_messages() == []


# -- status pushes: dev-status / port-status ----------------------------------------------
# Ejoin "HTTP MultiWan Router Development Spec" v2.2, section 3 "Status Notification": the box
# sends dev-status every `period` seconds (`expires`) and port-status when a port changes.

SPEC_ICCID = "89860116289910033431"
# The spec's example dev-status (5.4.1), as printed
SPEC_DEV_STATUS: dict[str, Any] = {
    "type": "dev-status", "seq": 3, "expires": 60, "mac": "00-30-f1-00-6c-55",
    "ip": "192.168.1.67", "ver": "532-604-924-041-100-000", "max-ports": 32, "max-slot": 4,
    "status": [
        {"port": "1.01", "sim": "", "seq": 8, "st": 3, "imei": "898610599441327",
         "iccid": SPEC_ICCID, "imsi": "460014978212473", "sn": "",
         "opr": "46001 CHINA UNICOM GSM", "bal": "0.00", "sig": 15, "tot_dur": "0/-1",
         "mon_dur": "0/-1", "day_dur": "0/-1"},
        # an empty slot as firmware lists it (a public integration's captured answer)
        {"port": "5.01", "sim": "", "seq": 2124, "st": 0, "imei": "862032045299252"},
    ],
}  # fmt: skip
# The spec's example port-status (3.1.4): the state under "status", as "code detail"
SPEC_PORT_STATUS: dict[str, Any] = {
    "type": "port-status", "port": "2B", "seq": 1, "status": "3 OK", "bal": "100.00",
    "opr": "46000 China Mobile", "sn": "139xxxxxxxxx", "imei": "86xxxxxxxxxxxxx",
    "imsi": "xxx", "iccid": "xxx",
}  # fmt: skip


def ports(payload: Any, sims: tuple[SimConfig, ...] = SIMS) -> dict[str, Any]:
    return {s.location: s for s in sightings(payload, source=SOURCE, sims=sims, now=NOW)}


def test_the_spec_dev_status_gives_a_live_ready_port_and_an_absent_one() -> None:
    by_port = ports(SPEC_DEV_STATUS, sims=(SimConfig(phone="79001230009", iccid=SPEC_ICCID),))
    one, empty = by_port["1.01"], by_port["5.01"]
    assert (one.state, one.live, one.key) == (SimState.READY, True, SPEC_ICCID)
    assert (one.imsi, one.phone, one.phone_origin) == ("460014978212473", "79001230009", "sim")
    assert (one.signal, one.network_name) == (-83, "CHINA UNICOM GSM")  # sig 15 as +CSQ
    assert one.fresh_for == 2 * 60 + 15
    assert (empty.state, empty.key, empty.iccid) == (SimState.ABSENT, f"{SOURCE}:5.01", None)


def test_the_spec_port_status_reads_its_code_detail_state_and_skips_placeholders() -> None:
    (s,) = ports(SPEC_PORT_STATUS, sims=()).values()
    assert (s.location, s.state, s.live, s.fresh_for) == ("2B", SimState.READY, True, 135.0)
    assert (s.iccid, s.imsi, s.phone) == (None, None, "")  # "xxx", "139xxxxxxxxx": not values
    numbered = {**SPEC_PORT_STATUS, "st": 6, "sn": "+7 900 123-45-67", "iccid": "", "imsi": ""}
    (n,) = ports(numbered, sims=()).values()  # "st" wins over "status"
    assert (n.state, n.phone, n.phone_origin) == (SimState.NOT_REGISTERED, "79001234567", "source")


def test_status_pushes_are_never_messages() -> None:
    assert parse(SPEC_DEV_STATUS) == [] and parse(SPEC_PORT_STATUS) == []


@pytest.mark.parametrize(
    ("code", "state"),
    [(3, "ready"), (4, "ready"), (0, "absent"), (1, "not_registered"), (2, "not_registered"),
     (6, "not_registered"), (11, "not_registered"), (13, "not_registered"),
     (99, "not_registered"), (5, "sim_error"), (7, "sim_error"), (8, "sim_error"),
     (9, "sim_error"), (12, "sim_error")],
)  # fmt: skip
def test_port_state_codes(code: int, state: str) -> None:
    assert port_state(code).value == state


def test_a_slot_the_firmware_marks_inactive_is_never_ready() -> None:
    row = {"port": "1.02", "st": 3, "iccid": SPEC_ICCID, "active": 1, "slot_active": "0"}
    (s,) = ports({"type": "dev-status", "expires": 60, "status": [row]}).values()
    assert s.state is SimState.NOT_REGISTERED


@pytest.mark.parametrize(
    ("expires", "window"),
    [(60, 135.0), (180, 375.0), (None, 135.0), (-1, 135.0), (0, 135.0), ("60", 135.0),
     (True, 135.0), (10**9, 7215.0), (float("nan"), 135.0)],
)  # fmt: skip
def test_the_window_is_two_announced_periods_and_a_margin(expires: Any, window: float) -> None:
    assert fresh_window(expires) == window


def test_status_code_forms() -> None:
    assert [status_code(v) for v in (3, "3", "3 OK", " 12 User locked")] == [3, 3, 3, 12]
    assert [status_code(v) for v in (True, -1, "OK", "12345", "٣", None, 3.0)] == [None] * 7


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=24)
    | st.sampled_from(["3", "3 OK", "0", "1.01", "2B", SPEC_ICCID, "460014978212473", "\ud800"]),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["type", "status", "st", "port", "iccid", "imsi", "sn", "opr", "sig",
                         "expires", "active", "slot_active", "sms", "x"]),
        children, max_size=8,
    ),
    max_leaves=40,
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    kind=st.sampled_from(["dev-status", "port-status", "recv-sms", "status-report", None]),
    body=st.dictionaries(st.sampled_from(["status", "expires", "port", "st", "sms"]), _JSONISH),
)
def test_any_status_push_gives_sane_sightings_and_no_message(kind: Any, body: Any) -> None:
    payload = {**body, "type": kind}
    found = sightings(payload, source=SOURCE, sims=SIMS, now=NOW)
    for s in found:
        assert s.port == s.location and 1 <= len(s.port) <= 32 and s.port.isascii()
        assert s.iccid is None or (s.iccid.isdigit() and 18 <= len(s.iccid) <= 22)
        assert s.imsi is None or (s.imsi.isdigit() and len(s.imsi) in (14, 15))
        assert s.signal is None or -113 <= s.signal <= -51
        for text in (s.port, s.phone, s.network_name):
            text.encode("utf-8")  # storable: no lone surrogates
        if kind == "recv-sms":
            assert not s.live and s.fresh_for is None
        else:
            assert s.live and s.fresh_for is not None and 135.0 <= s.fresh_for <= 7215.0
    assert len({s.location for s in found}) == len(found)
    if kind in ("dev-status", "port-status"):
        assert parse(payload) == []


_CODES = st.integers(min_value=0, max_value=20)
_ENTRY = st.fixed_dictionaries(
    {"port": st.from_regex(r"[1-9][0-9]?\.0[1-4]", fullmatch=True), "st": _CODES},
    optional={"iccid": st.from_regex(r"89[0-9]{17}", fullmatch=True),
              "imsi": st.from_regex(r"[0-9]{15}", fullmatch=True),
              "sig": st.integers(min_value=0, max_value=31)},
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(_ENTRY, max_size=12), expires=st.integers(min_value=1, max_value=600))
def test_well_formed_dev_status_entries_each_give_their_port_and_state(
    entries: list[dict[str, Any]], expires: int
) -> None:
    found = ports({"type": "dev-status", "expires": expires, "status": entries})
    first: dict[str, dict[str, Any]] = {}
    for e in entries:
        first.setdefault(e["port"], e)
    assert set(found) == set(first)
    for port, e in first.items():
        s = found[port]
        assert s.state is port_state(e["st"]) and s.fresh_for == 2 * expires + 15
        if s.state is not SimState.ABSENT:
            assert (s.iccid, s.imsi) == (e.get("iccid"), e.get("imsi"))


# -- status pushes through the route -------------------------------------------------------


async def test_status_pushes_are_answered_ok_and_never_stored(route: tuple[str, Outbox]) -> None:
    url, outbox = route
    for body in (
        SPEC_DEV_STATUS,
        SPEC_PORT_STATUS,
        {"type": "dev-status", "status": "junk"},
        {"type": "port-status"},
        {"type": "status-report", "rpt_num": 0, "rpts": []},
    ):
        assert await post(url, body) == (200, SUCCESS)
    assert await outbox.list_messages() == []


@pytest.fixture
async def watched(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, Outbox, InventoryWatch, Countable]]:
    cfg = box_config(tmp_path)
    outbox = await Outbox.open(cfg.store.path)
    inventory = Inventory(PartnerBook(outbox), names={"250-01": "mts"}, save_delay=0.05)
    await inventory.start()
    watch = InventoryWatch(inventory)
    desk = Countable(inventory, outbox)
    metrics = Metrics()
    peers = PeerSources(cfg, Intake(outbox, metrics), metrics, inventory=inventory)
    async with serving(peers) as base:
        yield f"{base}/v1/inbound/ejoin/sky-1", outbox, watch, desk
    await inventory.stop()
    await outbox.close()


def dev_status(st_code: int, *, expires: float = 60, port: str = "24.01") -> dict[str, Any]:
    row = {"port": port, "st": st_code, "iccid": ICCID_24, "imsi": IMSI_MTS, "sig": 20,
           "opr": "25001 MTS RUS", "sn": ""}  # fmt: skip
    return {"type": "dev-status", "seq": 1, "expires": expires, "status": [row]}


ICCID_24 = "8970199123456789024"
IMSI_MTS = "250011234567890"


async def test_a_status_push_makes_its_ports_live_countable_and_then_stale(
    watched: tuple[str, Outbox, InventoryWatch, Countable], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, outbox, watch, desk = watched
    # the route tells the inventory before it answers: each answer below is the moment to look
    assert await post(url, dev_status(3)) == (200, SUCCESS)
    sim = watch.by_key()[ICCID_24]
    assert sim.live and (sim.record.state, sim.record.location) == ("ready", "24.01")
    assert (sim.record.phone, sim.record.operator, sim.record.signal) == ("79001230001", "mts", -73)
    assert desk.count(operator="mts") == 1
    # an SMS on that port (the row names no ICCID) sets last_sms, and the SIM stays live
    row = [0, "24.01", int(NOW), "900", "", content("code 1")]
    assert await post(url, {"type": "recv-sms", "sms_num": 1, "sms": [row]}) == (200, SUCCESS)
    (m,) = await outbox.list_messages()
    assert m.phone == "79001230001"
    sim = watch.by_key()[ICCID_24]
    assert sim.live and sim.record.last_sms is not None and set(watch.by_key()) == {ICCID_24}
    # the SIM is taken out: port-status says so at once
    gone = {"type": "port-status", "port": "24.01", "seq": 2, "st": 0}
    assert await post(url, gone) == (200, SUCCESS)
    sim = watch.by_key()[ICCID_24]
    assert not sim.live and sim.record.state == "absent" and desk.count(operator="mts") == 0
    # back in, with a short announced period and no slack: stale once the reports stop
    monkeypatch.setattr(ejoin, "STALE_SLACK", 0.0)
    assert await post(url, dev_status(3, expires=0.2)) == (200, SUCCESS)
    assert watch.by_key()[ICCID_24].live and desk.count(operator="mts") == 1
    await watch.until(lambda: not watch.by_key()[ICCID_24].live, timeout=5.0)
    assert watch.by_key()[ICCID_24].record.state == "absent" and desk.count(operator="mts") == 0
    assert await outbox.list_messages() == [m]  # no status push became a message
