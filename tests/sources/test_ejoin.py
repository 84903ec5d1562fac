"""Ejoin / Skyline pushes: the parser against the published format, and the route end to end.

Format: Ejoin / Skyline "HTTP API" v2.4, "Receive SMS": ``{"type": "recv-sms", "sms_num": n,
"sms": [[flag, "port", ts, "sender", "recipient", "<base64>"]]}``, flag 1 = delivery report,
content base64 of UTF-8 header lines, a blank line, then the text. The row with ICCID and IMSI
appended is as a Skyline box pushed it (quoted in a public integration's source).
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
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.models import Hold
from gateway.peers import PeerSources
from gateway.sources.ejoin import SUCCESS, decode_content, parse_push
from tests.fakes.peers import serving

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


@pytest.fixture
async def route(tmp_path: Path) -> AsyncIterator[tuple[str, Outbox]]:
    cfg = config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "ejoin": [{"name": "sky-1", "token": TOKEN, "allow": ["127.0.0.1", "::1"]}],
            "sim": [{"source": "ejoin:sky-1", "port": "24.01", "phone": "79001230001"}],
        }
    )
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
