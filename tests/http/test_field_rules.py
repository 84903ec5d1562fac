"""The field rules at the doors of the real daemon: a bad value is refused naming its field, alone,
and never reaches the store beside good ones (gateway/fields.py, gateway/intake.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gateway.play.standin import StandIn
from tests.fakes.daemon import INGEST_TOKEN, DaemonProcess

DINSTAR_TOKEN = "dinstar-token-0123456789"
EJOIN_TOKEN = "ejoin-token-0123456789"
BOXES = f"""
[[dinstar]]
name = "box-1"
token = "{DINSTAR_TOKEN}"

[[ejoin]]
name = "sky-1"
token = "{EJOIN_TOKEN}"
"""
# A lone surrogate as JSON sends it: the escape is valid JSON, the string it makes is not Unicode.
BAD_DINSTAR = (
    '{"sn": "da00-0030", "sms": [{"incoming_sms_id": 7, "port": 1, '
    '"number": "+7900\\ud800", "timestamp": "2026-11-27 10:00:00", "text": "code 1"}]}'
)


async def _post_raw(base: str, path: str, body: str, token: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            base + path,
            data=body.encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text  # a 500 page, say: the assertions show it


def _stored(d: DaemonProcess) -> list[tuple[str, str]]:
    with sqlite3.connect(d.dir / "outbox.sqlite3") as db:
        return db.execute("SELECT source, phone_from FROM messages ORDER BY sms_id").fetchall()


async def test_a_bad_dinstar_push_fails_alone_beside_twenty_good_posts(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    d: DaemonProcess = await daemon_factory(extra=BOXES)
    good = [
        d.post_sms({"phone": "+7 900 123-45-67", "phoneFrom": f"Sender{i}", "text": f"t{i}"})
        for i in range(20)
    ]
    bad = _post_raw(d.base, "/v1/inbound/dinstar/box-1", BAD_DINSTAR, DINSTAR_TOKEN)
    *answers, (bad_status, bad_body) = await asyncio.gather(*good, bad)

    assert [status for status, _ in answers] == [201] * 20
    assert bad_status == 400
    assert bad_body["field"] == "sms[0].number"
    assert "surrogate" in bad_body["error"]
    stored = _stored(d)
    assert sorted(p for _, p in stored) == sorted(f"Sender{i}" for i in range(20))
    assert {s for s, _ in stored} == {"http"}
    await standin.wait_for(lambda s: len(s.delivered()) == 20)


@pytest.mark.parametrize(
    "received_at",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z"],
)
async def test_a_received_at_out_of_the_window_is_400_naming_it(
    daemon_factory: Callable[..., Any], received_at: str
) -> None:
    d: DaemonProcess = await daemon_factory()
    status, body = await d.post_sms(
        {"phone": "79001234567", "phoneFrom": "Bank", "text": "x", "receivedAt": received_at}
    )
    assert (status, body["field"]) == (400, "receivedAt")
    status, body = await d.post_sms(
        [{"phone": "79001234567", "phoneFrom": "Bank", "text": "x", "receivedAt": received_at}]
    )
    assert (status, body["field"]) == (400, "[0].receivedAt")
    assert _stored(d) == []


@pytest.mark.parametrize(
    ("path", "token"),
    [
        ("/v1/sms", None),
        ("/v1/inbound/dinstar/box-1", DINSTAR_TOKEN),
        ("/v1/inbound/ejoin/sky-1", EJOIN_TOKEN),
    ],
)
async def test_an_integer_of_thousands_of_digits_is_400_naming_the_body(
    daemon_factory: Callable[..., Any], path: str, token: str | None
) -> None:
    d: DaemonProcess = await daemon_factory(extra=BOXES)
    body = '{"phone": "79001234567", "phoneFrom": "Bank", "text": "x", "n": ' + "9" * 5000 + "}"
    status, answer = await _post_raw(d.base, path, body, token or INGEST_TOKEN)
    assert (status, answer["field"]) == (400, "body")
    assert _stored(d) == []
