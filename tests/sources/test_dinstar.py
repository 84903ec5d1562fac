"""Dinstar pushes: the parser against the published format, and the route end to end.

Format: "Dinstar GSM Gateway HTTP API" v201910, "Receive SMS" (push example
``{"sn":"xxxx-xxxx-xxxx-xxxx","sms":[{"incoming_sms_id":1,"port":1,"number":"6717",
"smsc":"+8613800757511","timestamp":"2016-07-12 15:46:18","text":"test"}]}``; success answer
``{"error_code": 200}``).
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
from gateway.outbox import Outbox, State
from gateway.outbox.models import Hold
from gateway.peers import PeerSources
from gateway.sources.dinstar import SUCCESS, parse_push
from tests.fakes.peers import serving

NOW = 1_700_000_000.0
SOURCE = "dinstar:box-1"
DOC_PUSH = {
    "sn": "da00-0030-1901-2817",
    "sms": [
        {
            "incoming_sms_id": 1,
            "port": 1,
            "number": "6717",
            "smsc": "+8613800757511",
            "timestamp": "2016-07-12 15:46:18",
            "text": "test",
        }
    ],
}
SIMS = (
    SimConfig(phone="79001230001", source="box-1", port="1"),
    SimConfig(phone="79001230002", imsi="250011234567890"),
)
TOKEN = "dinstar-token-0123456789"


def parse(payload: Any, sims: tuple[SimConfig, ...] = SIMS) -> list[Any]:
    return parse_push(payload, source=SOURCE, sims=sims, now=NOW)


def test_documented_push_gives_one_message_on_the_port_s_phone() -> None:
    (m,) = parse(DOC_PUSH)
    assert (m.source, m.phone, m.phone_from, m.text) == (SOURCE, "79001230001", "6717", "test")
    assert m.hold is None
    assert m.received_at == NOW  # 2016 is no plausible receipt time
    assert m.source_ref and m.source_ref.startswith("da00-0030-1901-2817|1|")


def test_phone_by_imsi_and_held_when_nothing_matches() -> None:
    item = {**DOC_PUSH["sms"][0], "port": 7, "imsi": "250011234567890"}  # type: ignore[dict-item]
    (by_imsi,) = parse({"sn": "x", "sms": [item]})
    assert by_imsi.phone == "79001230002"
    (held,) = parse({"sn": "x", "sms": [{**item, "imsi": ""}]})
    assert held.hold is Hold.NO_PHONE and held.phone == ""


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("", "Привет"),
        ("unicode", "Привет"),
        ("base64", base64.b64encode("Привет".encode()).decode()),
        ("url", "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82"),
    ],
)
def test_text_encodings(encoding: str, text: str) -> None:
    item = {**DOC_PUSH["sms"][0], "text": text, "encoding": encoding}  # type: ignore[dict-item]
    assert parse({"sn": "x", "sms": [item]})[0].text == "Привет"


def test_other_push_kinds_are_acknowledged_without_messages() -> None:
    assert parse({"sn": "x", "sms_result": [{"port": 1, "status": "DELIVERED"}]}) == []
    assert parse({"sn": "x", "ussd": [{"port": 1, "text": "Thank you!"}]}) == []


def test_same_id_with_other_content_is_another_message() -> None:
    """The device's id counter restarts after a factory reset."""
    (a,) = parse(DOC_PUSH)
    item = {**DOC_PUSH["sms"][0], "text": "other"}  # type: ignore[dict-item]
    (b,) = parse({**DOC_PUSH, "sms": [item]})
    assert a.source_ref != b.source_ref


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ({"foo": 1}, "sms: missing"),
        ({"sn": "x", "sms": {}}, "sms: expected a list"),
        ({"sn": 5, "sms": []}, "sn"),
        ({"sn": "x", "sms": [1]}, r"sms\[0\]"),
        ({"sn": "x", "sms": [{"number": "1", "text": "t"}]}, "incoming_sms_id"),
        ({"sn": "x", "sms": [{"incoming_sms_id": "a", "number": "1", "text": "t"}]}, "id"),
        ({"sn": "x", "sms": [{"incoming_sms_id": 1, "text": "t"}]}, "number"),
        ({"sn": "x", "sms": [{"incoming_sms_id": 1, "number": "1"}]}, "text"),
        ({"sn": "x", "sms": [{"incoming_sms_id": 1, "number": 5, "text": "t"}]}, "number"),
        (
            {
                "sn": "x",
                "sms": [{"incoming_sms_id": 1, "number": "1", "text": "%%", "encoding": "x"}],
            },
            "encoding",
        ),
        (
            {
                "sn": "x",
                "sms": [{"incoming_sms_id": 1, "number": "1", "text": "!", "encoding": "base64"}],
            },
            "base64",
        ),
        (
            {"sn": "x", "sms": [{"incoming_sms_id": 1, "number": "1", "text": "\ud800"}]},
            "surrogate",
        ),
    ],
)
def test_malformed_pushes_are_refused_naming_the_field(payload: Any, field: str) -> None:
    with pytest.raises(FieldError, match=field):
        parse(payload)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["sn", "sms", "incoming_sms_id", "port", "number", "text", "timestamp", "imsi",
             "encoding", "other"]
        ),
        children,
        max_size=6,
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_any_json_gives_acceptable_messages_or_a_field_error(payload: Any) -> None:
    try:
        items = parse(payload)
    except FieldError:
        return
    for m in items:
        assert checked_incoming(m, NOW) is m  # the accept path takes each as it is
        assert m.source_ref


# -- the route, end to end over loopback --------------------------------------------------


def make_config(tmp_path: Path, **peer: Any) -> config.Config:
    return config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "dinstar": [{"name": "box-1", "token": TOKEN, **peer}],
            "sim": [{"source": "box-1", "port": "1", "phone": "79001230001"}],
        }
    )


class Box:
    """The route on a real aiohttp server, posting as the device would."""

    def __init__(self, url: str, outbox: Outbox, peers: PeerSources) -> None:
        self.url = url
        self.outbox = outbox
        self.peers = peers

    async def post(
        self, body: Any, *, token: str = TOKEN, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.url, params={"token": token}, data=data) as resp,
        ):
            return resp.status, json.loads(await resp.text())


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    cfg = make_config(tmp_path)
    outbox = await Outbox.open(cfg.store.path)
    metrics = Metrics()
    peers = PeerSources(cfg, Intake(outbox, metrics), metrics)
    async with serving(peers) as base:
        yield Box(f"{base}/v1/inbound/dinstar/box-1", outbox, peers)
    await outbox.close()


async def test_a_push_sent_twice_is_one_message_and_answered_after_commit(box: Box) -> None:
    assert await box.post(DOC_PUSH) == (200, SUCCESS)
    assert await box.post(DOC_PUSH) == (200, SUCCESS)  # the device did not see our answer
    (m,) = await box.outbox.list_messages()
    assert (m.phone, m.phone_from, m.text, m.state) == ("79001230001", "6717", "test", State.QUEUED)
    check = box.peers.health_checks()[SOURCE]
    assert check.details["messages"] == 1 and check.details["last_message_age"] is not None


async def test_wrong_token_is_401_and_takes_nothing(box: Box) -> None:
    status, body = await box.post(DOC_PUSH, token="wrong")
    assert status == 401 and "token" in body["error"]
    assert await box.outbox.list_messages() == []


async def test_malformed_body_is_400_with_the_reason(box: Box) -> None:
    assert (await box.post(None, raw=b"{not json"))[0] == 400
    status, body = await box.post({"sn": "x", "sms": [{"incoming_sms_id": 1}]})
    assert status == 400 and "number" in body["error"]
    assert box.peers.health_checks()[SOURCE].details["rejected"] == 2


async def test_store_that_cannot_commit_is_503(box: Box) -> None:
    await box.outbox.close()
    status, body = await box.post(DOC_PUSH)
    assert status == 503 and "try again" in body["error"]
    assert box.peers.health_checks()[SOURCE].details["store_errors"] == 1


async def test_address_outside_allow_is_401(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, allow=["192.0.2.0/24"])
    outbox = await Outbox.open(cfg.store.path)
    try:
        peers = PeerSources(cfg, Intake(outbox), Metrics())
        async with (
            serving(peers) as base,
            aiohttp.ClientSession() as s,
            s.post(
                f"{base}/v1/inbound/dinstar/box-1", params={"token": TOKEN}, json=DOC_PUSH
            ) as resp,
        ):
            assert resp.status == 401
        assert await outbox.list_messages() == []
    finally:
        await outbox.close()


async def test_allow_in_the_form_a_dual_stack_log_shows_lets_the_box_in(tmp_path: Path) -> None:
    """A listener on ``::`` logs an IPv4 box as ``::ffff:a.b.c.d``; copied into allow, that
    entry must admit the box, as it does for the HTTP guard and GoIP (one shared rule)."""
    cfg = make_config(tmp_path, allow=["::ffff:127.0.0.1", "fe80::/10"])
    outbox = await Outbox.open(cfg.store.path)
    try:
        peers = PeerSources(cfg, Intake(outbox), Metrics())
        async with (
            serving(peers) as base,
            aiohttp.ClientSession() as s,
            s.post(
                f"{base}/v1/inbound/dinstar/box-1", params={"token": TOKEN}, json=DOC_PUSH
            ) as resp,
        ):
            assert resp.status == 200
        assert len(await outbox.list_messages()) == 1
    finally:
        await outbox.close()
