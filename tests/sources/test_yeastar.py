"""The Yeastar TG client: event parsing, and the TCP session against a fake TG on loopback.

Event format from the Yeastar TG "API Developer Guide" as TG200/TG400 send it (quoted in public
integrations, e.g. ``Event: ReceivedSMS / Privilege: all,smscommand / ID: 244 / GsmSpan: 2 /
Sender: ... / Recvtime: 2025-03-06 06:12:09 / Index: 1 / Total: 2 / Smsc: ... / Content:
%EF%BB%BF%D0%95%D1%89%D1%91+%D0%BE%D1%82%D0%B2%D0%B5%D1%82+ / --END SMS EVENT--``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.config import SimConfig, YeastarConfig
from gateway.errors import DecodeError
from gateway.health import Level
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Message, Outbox
from gateway.outbox.models import Hold, Incoming, Part
from gateway.play.standin import StandIn
from gateway.sources.yeastar import YeastarClient, decode_content, item_from_event
from tests.fakes.daemon import DaemonProcess
from tests.fakes.store import wait_messages
from tests.fakes.yeastar import FakeYeastar

NOW = 1_741_241_600.0
SOURCE = "yeastar:tg-1"
SIMS = (SimConfig(phone="79001230002", source="tg-1", port="2"),)
EVENT = {
    "Event": "ReceivedSMS",
    "Privilege": "all,smscommand",
    "ID": "244",
    "GsmSpan": "2",
    "Sender": "+79005556677",
    "Recvtime": "2025-03-06 06:12:09",
    "Index": "1",
    "Total": "1",
    "Smsc": "+79000000000",
    "Content": "%EF%BB%BF%D0%95%D1%89%D1%91+%D0%BE%D1%82%D0%B2%D0%B5%D1%82+",
}


def test_published_event_is_one_message_without_its_bom() -> None:
    m = item_from_event(EVENT, source=SOURCE, sims=SIMS, now=NOW)
    assert isinstance(m, Incoming)
    assert (m.text, m.phone, m.phone_from) == ("Ещё ответ ", "79001230002", "+79005556677")
    assert m.hold is None


def test_parts_are_joined_by_index_and_total() -> None:
    part = item_from_event({**EVENT, "Total": "2", "Index": "2"}, source=SOURCE, sims=SIMS, now=NOW)
    assert isinstance(part, Part)
    assert (part.seq, part.total, part.group_key) == (2, 2, "2|+79005556677|244|2")


def test_parts_keep_their_index_whichever_numbering_the_tg_uses() -> None:
    """Some firmware sends ``Index: 0`` of 2: that part used to be refused and lost. The index
    goes to the outbox as given; it completes a set numbered 0..n-1 or 1..n."""
    for first in (0, 1):
        events = [{**EVENT, "Total": "2", "Index": str(i)} for i in (first, first + 1)]
        parts = [item_from_event(e, source=SOURCE, sims=SIMS, now=NOW) for e in events]
        assert [(p.seq, p.total) for p in parts if isinstance(p, Part)] == [
            (first, 2),
            (first + 1, 2),
        ]
    with pytest.raises(DecodeError, match="Index 3 of Total 2"):
        item_from_event({**EVENT, "Total": "2", "Index": "3"}, source=SOURCE, sims=SIMS, now=NOW)


def test_unknown_span_is_held() -> None:
    m = item_from_event({**EVENT, "GsmSpan": "5"}, source=SOURCE, sims=SIMS, now=NOW)
    assert isinstance(m, Incoming) and m.hold is Hold.NO_PHONE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"GsmSpan": ""}, "GsmSpan"),
        ({"Index": "x"}, "Index"),
        ({"Index": "3", "Total": "2"}, "Index 3 of Total 2"),
        ({"Total": "999"}, "Total 999"),
        ({"Content": "%FF%FE"}, "URL-encoded UTF-8"),
    ],
)
def test_malformed_events_are_refused(change: dict[str, str], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        item_from_event({**EVENT, **change}, source=SOURCE, sims=SIMS, now=NOW)


def test_plus_is_a_space_and_percent_escapes_decode() -> None:
    assert decode_content("Hello+world%21+%2B1") == "Hello world! +1"


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["GsmSpan", "Sender", "ID", "Recvtime", "Index", "Total", "Content"]),
        st.text(max_size=30),
    )
)
def test_any_event_gives_an_item_or_a_decode_error(fields: dict[str, str]) -> None:
    try:
        item = item_from_event(fields, source=SOURCE, sims=SIMS, now=NOW)
    except DecodeError:
        return
    item.text.encode("utf-8")


def test_reconnect_delay_grows_and_is_capped() -> None:
    cfg = YeastarConfig(name="tg-1", host="127.0.0.1", username="u", password="p", reconnect_max=8)
    client = YeastarClient(cfg, intake=None)  # type: ignore[arg-type]
    delays = [client.reconnect_delay(n) for n in range(1, 12)]
    assert all(0 < d <= 8 for d in delays)
    assert delays[0] < 2 and delays[-1] >= 7  # exponential, then at the cap (jitter within)


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_reconnect_delay_is_half_a_second_doubling_plus_jitter(rand: float) -> None:
    cfg = YeastarConfig(name="tg-1", host="127.0.0.1", username="u", password="p", reconnect_max=8)
    client = YeastarClient(cfg, intake=None, rand=lambda: rand)  # type: ignore[arg-type]
    expected = [min(0.5 * 2**n + rand, 8.0) for n in range(6)] + [8.0]
    assert [client.reconnect_delay(n) for n in (1, 2, 3, 4, 5, 6, 10_000)] == expected
    assert client.reconnect_delay(0) == client.reconnect_delay(1)


# -- against the fake TG over loopback -----------------------------------------------------


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, checking every 20 ms, at most ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (the client has no event to wait on)
            await asyncio.sleep(0.02)


class Rig:
    def __init__(self, tmp_path: Path, tg: FakeYeastar, *, password: str = "secret-pw") -> None:
        self.tg = tg
        self.cfg = config.parse(
            {
                "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
                "store": {"path": str(tmp_path / "outbox.sqlite3")},
                "yeastar": [
                    {
                        "name": "tg-1",
                        "host": "127.0.0.1",
                        "port": tg.port,
                        "username": "apiuser",
                        "password": password,
                        "reconnect_max": 0.3,
                    }
                ],
                "sim": [{"source": "tg-1", "port": "2", "phone": "79001230002"}],
            }
        )
        self.outbox: Outbox
        self.client: YeastarClient

    async def start(self) -> None:
        self.outbox = await Outbox.open(self.cfg.store.path)
        self.client = YeastarClient(
            self.cfg.yeastar[0], Intake(self.outbox, Metrics()), self.cfg.sim, ping_interval=0.2
        )
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()
        await self.outbox.close()

    async def wait_messages(self, count: int, timeout: float = 5.0) -> list[Message]:
        return await wait_messages(self.outbox, count, timeout)


@pytest.fixture
async def tg() -> AsyncIterator[FakeYeastar]:
    server = FakeYeastar()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def rig(tmp_path: Path, tg: FakeYeastar) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, tg)
    await r.start()
    await tg.wait_until(lambda: tg.pings >= 1)  # the client pings once it is logged in
    yield r
    await r.stop()


async def test_logs_in_and_takes_an_sms(rig: Rig, tg: FakeYeastar) -> None:
    assert rig.client.connected and tg.logins == 1
    await tg.send_sms(2, "+79005556677", "Ваш код 4321", sms_id="10")
    (m,) = await rig.wait_messages(1)
    assert (m.phone, m.phone_from, m.text, m.source) == (
        "79001230002",
        "+79005556677",
        "Ваш код 4321",
        SOURCE,
    )
    assert rig.client.check().level is Level.OK


async def test_parts_of_a_long_sms_become_one_message(rig: Rig, tg: FakeYeastar) -> None:
    await tg.send_sms(2, "+79005556677", "вторая часть", sms_id="77", index=2, total=2)
    await tg.send_sms(2, "+79005556677", "Первая часть, ", sms_id="77", index=1, total=2)
    (m,) = await rig.wait_messages(1)
    assert m.text == "Первая часть, вторая часть"


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0), (2, 0, 1)])
async def test_parts_numbered_from_zero_become_one_message(
    rig: Rig, tg: FakeYeastar, order: tuple[int, ...]
) -> None:
    pieces = ["Первая часть, ", "вторая ", "и третья"]
    for i in order:
        await tg.send_sms(2, "+79005556677", pieces[i], sms_id="78", index=i, total=3)
    (m,) = await rig.wait_messages(1)
    assert m.text == "".join(pieces) and not m.partial
    assert rig.client.check().details["rejected"] == 0


async def test_a_cancel_of_stop_itself_propagates(rig: Rig) -> None:
    """stop() used to swallow a CancelledError aimed at itself with the session's."""
    stopper = asyncio.get_running_loop().create_task(rig.client.stop())
    await asyncio.sleep(0)  # one turn: stop() has cancelled the session and awaits its end
    assert rig.client._stopping.is_set() and not stopper.done()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopper, 5.0)
    assert stopper.cancelled()


async def test_pings_keep_the_link_checked(rig: Rig, tg: FakeYeastar) -> None:
    await tg.wait_until(lambda: tg.pings >= 2, timeout=3.0)


async def test_reconnects_after_the_tg_drops_the_connection(rig: Rig, tg: FakeYeastar) -> None:
    pings = tg.pings
    tg.drop_clients()
    await tg.wait_until(lambda: tg.logins == 2 and tg.pings > pings, timeout=5.0)
    await tg.send_sms(2, "+79005556677", "after reconnect")
    (m,) = await rig.wait_messages(1)
    assert m.text == "after reconnect" and rig.client.connects == 2


async def test_reconnects_after_the_tg_restarts(rig: Rig, tg: FakeYeastar) -> None:
    port = tg.port
    await tg.stop()
    await eventually(  # the client retries against the closed port meanwhile
        lambda: not rig.client.connected and "Connect" in (rig.client.status.last_error or "")
    )
    assert rig.client.check().level is Level.DEGRADED
    restarted = FakeYeastar()
    await restarted.start(port)
    try:
        await restarted.wait_until(lambda: restarted.pings >= 1, timeout=5.0)
        await restarted.send_sms(2, "+79005556677", "back")
        (m,) = await rig.wait_messages(1)
        assert m.text == "back" and rig.client.connected
    finally:
        await restarted.stop()


async def test_wrong_password_keeps_retrying_and_shows_in_health(
    tmp_path: Path, tg: FakeYeastar
) -> None:
    r = Rig(tmp_path, tg, password="wrong-password")
    await r.start()
    try:
        await tg.wait_until(lambda: tg.failed_logins >= 2, timeout=5.0)
        check = r.client.check()
        assert check.level is Level.DEGRADED and not check.details["connected"]
        assert "login refused" in (check.details["last_error"] or "")
        assert "wrong-password" not in str(check.details)
    finally:
        await r.stop()


async def test_malformed_event_is_skipped_and_the_session_goes_on(
    rig: Rig, tg: FakeYeastar
) -> None:
    await tg.send_sms(2, "+7900", "x", index=3, total=2)
    await tg.send_sms(2, "+7900", "good")
    (m,) = await rig.wait_messages(1)
    assert m.text == "good" and rig.client.check().details["rejected"] == 1


async def test_a_field_the_rules_refuse_is_that_events_refusal_not_the_sessions_end(
    rig: Rig, tg: FakeYeastar
) -> None:
    """A sender longer than the field rules take used to end the client's task for good."""
    with structlog.testing.capture_logs() as logs:
        await tg.send_sms(2, "+7" + "9" * 300, "too long a sender")
        await tg.send_sms(2, "+7" + "9" * 300, "a part of one", sms_id="9", index=1, total=2)
        await tg.send_sms(2, "+79005556677", "good")
        (m,) = await rig.wait_messages(1)
    assert m.text == "good" and rig.client.connected and tg.logins == 1
    refused = [e for e in logs if e["event"] == "yeastar.event_rejected"]
    assert [e["field"] for e in refused] == ["Sender", "Sender"]
    assert rig.client.check().details["rejected"] == 2


async def test_parts_numbered_from_zero_complete_after_the_daemon_is_killed_between_them(
    tg: FakeYeastar, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    """Parts 0 and 2 of 3 committed, ``kill -9``, a new daemon takes part 1: the SMS is whole
    and pushed at once. The numbering used to be learnt in memory: after a restart part 1 of 3
    waited up to a minute there (lost by another crash) for a part that settled it."""
    yeastar = (
        f'[[yeastar]]\nname = "tg-1"\nhost = "127.0.0.1"\nport = {tg.port}\n'
        'username = "apiuser"\npassword = "secret-pw"\nreconnect_max = 0.3\n'
        '[[sim]]\nsource = "tg-1"\nport = "2"\nphone = "79001230002"\n'
    )
    daemon: DaemonProcess = await daemon_factory(extra=yeastar)
    await tg.wait_until(lambda: tg.logins == 1, timeout=10.0)
    pieces = ["Первая часть, ", "вторая ", "и третья"]
    for i in (0, 2):
        await tg.send_sms(2, "+79005556677", pieces[i], sms_id="79", index=i, total=3)

    def parts_committed() -> int:
        return sum(1 for e in daemon.logs() if e.get("event") == "sms.part_accepted")

    await wait_until(parts_committed, 2)
    daemon.kill()
    await daemon.start()
    await tg.wait_until(lambda: tg.logins == 2, timeout=10.0)
    await tg.send_sms(2, "+79005556677", pieces[1], sms_id="79", index=1, total=3)

    def pushed() -> list[dict[str, Any]]:
        return [json.loads(p.raw) for p in standin.pushes if p.status == 200]

    await standin.wait_for(lambda _: len(pushed()) == 1, timeout=10.0)
    (push,) = pushed()
    assert push["text"] == "".join(pieces) and push["phone"] == "79001230002"
    assert await daemon.stop() == 0


async def wait_until(count: Callable[[], int], at_least: int, timeout: float = 10.0) -> None:
    """Wait, bounded, for another process's log to show ``at_least`` of something."""
    async with asyncio.timeout(timeout):
        while count() < at_least:  # noqa: ASYNC110 - another process's log: no event
            await asyncio.sleep(0.05)


def test_a_recvtime_of_unicode_digits_is_a_wrong_clock_not_a_crash() -> None:
    """``"²".isdigit()`` is true and ``float("²")`` raises: the event was lost with the session."""
    item = item_from_event({**EVENT, "Recvtime": "²"}, source=SOURCE, sims=SIMS, now=NOW)
    assert item.received_at == NOW
