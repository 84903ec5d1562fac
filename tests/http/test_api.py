"""The daemon's HTTP API over a real socket: ingest answers, health and metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.play.standin import Answer, StandIn
from tests.fakes.daemon import INGEST_TOKEN, STATUS_TOKEN, DaemonProcess

GOOD = {"phone": "79001234567", "phoneFrom": "Instagram", "text": "code 1234"}


def store_counts(daemon: DaemonProcess) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--json", "-c", str(daemon.config_path)],
        capture_output=True,
        check=True,
        text=True,
    )
    counts: dict[str, int] = json.loads(out.stdout)["messages"]
    return counts


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"token": None}, 401, None),
        ({"token": "wrong-token"}, 401, None),
        ({"token": INGEST_TOKEN[:-1]}, 401, None),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, None),
        ({"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400, None),
        ({"json": {"phoneFrom": "a", "text": "b"}}, 400, "phone"),
        ({"json": {"phone": "79001234567", "text": "b"}}, 400, "phoneFrom"),
        ({"json": {"phone": "79001234567", "phoneFrom": "a"}}, 400, "text"),
        ({"json": {**GOOD, "phone": 79001234567}}, 400, "phone"),
        ({"json": {**GOOD, "text": ["x"]}}, 400, "text"),
        ({"json": {**GOOD, "phone": "not a number"}}, 400, "phone"),
        ({"json": {**GOOD, "receivedAt": "yesterday"}}, 400, "receivedAt"),
        ({"json": {**GOOD, "id": 5}}, 400, "id"),
        ({"json": {**GOOD, "phonefrom": "typo"}}, 400, "phonefrom"),
        ({"json": [GOOD, {**GOOD, "phone": ""}]}, 400, "[1].phone"),
        ({"json": []}, 400, "body"),
        ({"json": [GOOD] * 1001}, 400, "body"),
        ({"json": "just a string"}, 400, "body"),
        ({"data": b'{"phone": "7900", "x": "' + b"a" * (1024 * 1024) + b'"}'}, 413, None),
    ],
    ids=lambda v: str(v)[:40] if not isinstance(v, dict) else ",".join(v)[:40],
)
async def test_bad_ingest_requests_are_refused_and_enqueue_nothing(
    daemon: DaemonProcess, standin: StandIn, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    kwargs = dict(kwargs)
    token = kwargs.pop("token", INGEST_TOKEN)
    got, body = await daemon.request("POST", "/v1/sms", token=token, **kwargs)
    assert got == status
    if status in (400, 401):
        assert isinstance(body, dict)
        assert body["error"]
    if field is not None:
        assert body["field"] == field
        assert body["error"].startswith(f"{field}:")
    assert store_counts(daemon) == {
        "queued": 0,
        "delivered": 0,
        "dropped": 0,
        "expired": 0,
        "held": 0,
    }
    assert list(standin.pushes) == []


async def test_oversize_body_without_content_length_is_refused(daemon: DaemonProcess) -> None:
    async def chunks() -> Any:
        for _ in range(80):
            yield b"x" * 16384

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            daemon.base + "/v1/sms",
            data=chunks(),
            headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        ) as resp,
    ):
        assert resp.status == 413


async def test_same_source_id_twice_is_one_message(daemon: DaemonProcess, standin: StandIn) -> None:
    msg = {**GOOD, "id": "box-7:4411"}
    status1, first = await daemon.post_sms(msg)
    status2, second = await daemon.post_sms(msg)
    assert (status1, status2) == (201, 200)
    assert second == {"smsId": first["smsId"], "duplicate": True}
    await standin.wait_for(lambda s: first["smsId"] in s.delivered_ids(), timeout=5)
    assert store_counts(daemon)["delivered"] == 1


async def test_list_answers_one_smsid_per_item_in_order(daemon: DaemonProcess) -> None:
    items = [{**GOOD, "text": f"m{i}", "id": f"r{i % 3}"} for i in range(5)]
    status, body = await daemon.post_sms(items)
    assert status == 201
    ids = [b["smsId"] for b in body]
    assert ids[0] == ids[3]
    assert ids[1] == ids[4]
    assert len(set(ids)) == 3
    assert [b.get("duplicate", False) for b in body] == [False, False, False, True, True]


async def test_ingest_is_off_without_a_token(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon = await daemon_factory(token="")
    status, _ = await daemon.post_sms(GOOD)
    assert status in (404, 405)


async def test_health_is_ok_then_degraded_when_upstream_keeps_failing(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    daemon = await daemon_factory(upstream={"circuit_after": 2, "retry_interval": 0.2})
    status, body = await daemon.health()
    assert status == 200
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"store", "worker", "upstream"}
    assert body["queue"] == {"queued": 0, "oldest_queued_age": 0}
    standin.default = Answer(500, "down")
    await daemon.post_sms(GOOD)
    await standin.wait_for(lambda s: len(s.pushes) >= 3, timeout=10)
    status, body = await daemon.health()
    assert status == 200
    assert body["status"] == "degraded"
    assert body["checks"]["upstream"]["consecutive_failures"] >= 2
    assert body["checks"]["upstream"]["circuit"] == "open"
    assert body["queue"]["queued"] == 1
    assert body["queue"]["oldest_queued_age"] > 0
    standin.default = None
    await standin.wait_for(lambda s: len(s.delivered()) == 1, timeout=10)
    status, body = await daemon.health()
    assert body["status"] == "ok"


async def test_health_reports_a_rejected_key(daemon: DaemonProcess, standin: StandIn) -> None:
    standin.default = Answer(401, '{"response":"ERROR_WRONG_KEY"}')
    await daemon.post_sms(GOOD)
    await standin.wait_for(lambda s: len(s.pushes) >= 1, timeout=5)
    await asyncio.sleep(0.1)  # the attempt is recorded just after the answer
    _, body = await daemon.health()
    assert body["status"] == "degraded"
    assert body["checks"]["upstream"]["key_rejected"] is True
    assert body["checks"]["upstream"]["key_error"] == "ERROR_WRONG_KEY"


async def test_health_fails_when_the_store_cannot_be_written(daemon: DaemonProcess) -> None:
    store = str(daemon.dir / "outbox.sqlite3")
    blocker = sqlite3.connect(store, timeout=1, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        status, body = await daemon.health()
        assert status == 503
        assert body["status"] == "failing"
        assert body["checks"]["store"]["writable"] is False
        # Ingest refuses too, and says nothing was taken.
        status, answer = await daemon.post_sms(GOOD)
        assert status == 503
        assert "nothing was taken" in answer["error"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    status, body = await daemon.health()
    assert status == 200
    assert body["checks"]["store"]["writable"] is True


async def test_metrics_parse_and_count(daemon: DaemonProcess, standin: StandIn) -> None:
    standin.script.append(Answer(404, '{"response":"NO_OPERATION"}'))
    await daemon.post_sms([GOOD, {**GOOD, "text": "two"}])
    await standin.wait_for(lambda s: len(s.pushes) == 2, timeout=5)
    await asyncio.sleep(0.1)
    status, text = await daemon.request("GET", "/metrics", token=None)
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("sms_gateway_messages_received_total", (("source", "http"),))] == 2
    assert samples[("sms_gateway_push_attempts_total", (("result", "delivered"),))] == 1
    assert samples[("sms_gateway_push_attempts_total", (("result", "dropped"),))] == 1
    assert samples[("sms_gateway_messages", (("state", "delivered"),))] == 1
    assert samples[("sms_gateway_messages", (("state", "dropped"),))] == 1
    assert samples[("sms_gateway_messages", (("state", "queued"),))] == 0
    assert ("sms_gateway_oldest_queued_seconds", ()) in samples
    assert samples[("sms_gateway_push_seconds_count", ())] == 2
    assert samples[("sms_gateway_delivery_seconds_count", ())] == 1
    assert "test-api-key" not in text


async def test_health_without_the_status_token_leaves_out_what_identifies(
    daemon: DaemonProcess,
) -> None:
    for token in (None, "wrong-token", INGEST_TOKEN):
        status, body = await daemon.health(token=token)
        assert status == 200
        assert body["status"] == "ok"
        assert body["checks"]["store"] == {"status": "ok", "writable": True}
        assert body["queue"] == {"queued": 0, "oldest_queued_age": 0}
        assert str(daemon.dir) not in json.dumps(body)
    status, body = await daemon.health(token=STATUS_TOKEN)
    assert body["checks"]["store"]["path"] == str(daemon.dir / "outbox.sqlite3")


async def test_no_status_token_means_no_identities_for_anyone(
    daemon_factory: Callable[..., Any],
) -> None:
    daemon: DaemonProcess = await daemon_factory(http={"status_token": ""})
    for token in (None, "", STATUS_TOKEN):
        _, body = await daemon.health(token=token)
        assert "path" not in body["checks"]["store"]


async def test_wrong_status_tokens_lock_an_address_out_of_every_status_door(
    daemon: DaemonProcess,
) -> None:
    """/health, the status page and /v1/sims/discover share one lockout: ten wrong tokens
    anywhere, then even the right one is not compared for a minute. /health still answers,
    with the partial view, so monitoring never sees a 429."""
    for i in range(5):
        await daemon.health(token=f"guess-{i}")
        status, _ = await daemon.request("POST", "/v1/sims/discover", token=f"guess-{i}", json={})
        assert status == 401
    status, body = await daemon.health(token=STATUS_TOKEN)
    assert status == 200 and "path" not in body["checks"]["store"]  # locked: partial view
    status, _ = await daemon.request("POST", "/v1/sims/discover", token=STATUS_TOKEN, json={})
    assert status == 429
    basic = base64.b64encode(f"x:{STATUS_TOKEN}".encode()).decode()
    status, _ = await daemon.request(
        "GET", "/status.json", token=None, headers={"Authorization": f"Basic {basic}"}
    )
    assert status == 429
    locked = await daemon.logged("auth.locked_out")
    assert locked["remote"] == "127.0.0.1" and locked["wrong_tries"] == 10
    assert STATUS_TOKEN not in daemon.log_text()
