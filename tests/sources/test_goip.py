"""The GoIP SMS server: packet parsing, and the UDP exchange end to end over loopback.

Packet formats from the GoIP "SMS Interface" document (goip_sms_Interface_en), as public
receivers implement them (iivorait/GoIP-SMS-receiver receive.php: ``RECEIVE:1734804704;
id:goip01;password:xxxxxx;srcnum:+358401234567;msg:Hello`` answered ``RECEIVE <id> OK``;
yuksbg/goip-sms-server main.go: keepalive answered ``reg:<n>;status:200;``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.errors import DecodeError
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Message, Outbox
from gateway.outbox.models import Hold
from gateway.sources.goip import REJECT_LOG_WINDOW, GoipServer, RejectLog, parse_packet
from tests.fakes.store import wait_messages

PASSWORD = "goip-secret-pw"
KEEPALIVE = (
    f"req:12;id:goip01;pass:{PASSWORD};num:;signal:25;gsm_status:LOGIN;voip_status:LOGOUT;"
    "voip_state:IDLE;remain_time:-1;imei:865123456789012;imsi:250991234567890;"
    "iccid:8970199123456789012;pro:MegaFon;idle:10;disable_status:0;SMS_LOGIN:N;SMS_STORE:Y"
)


def receive(recvid: int, text: str, *, sender: str = "+79005556677", pw: str = PASSWORD) -> str:
    return f"RECEIVE:{recvid};id:goip01;password:{pw};srcnum:{sender};msg:{text}"


def test_receive_packet_keeps_semicolons_and_colons_in_the_text() -> None:
    p = parse_packet(receive(1734804704, "a;b:c; msg:d").encode())
    assert (p.kind, p.seq) == ("RECEIVE", "1734804704")
    assert p.fields["msg"] == "a;b:c; msg:d" and p.fields["srcnum"] == "+79005556677"
    assert p.password == PASSWORD and PASSWORD not in p.redacted()


def test_keepalive_packet() -> None:
    p = parse_packet(KEEPALIVE.encode())
    assert (p.kind, p.seq, p.password, p.fields["imsi"]) == (
        "req",
        "12",
        PASSWORD,
        "250991234567890",
    )


@pytest.mark.parametrize(
    "data", [b"", b"hello", b"RECEIVE;id:x", b"RECEIVE:;id:x", b"RE CEIVE:1;", b"req:1 2;id:x"]
)
def test_garbage_packets_are_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_packet(data)


def test_text_that_is_not_utf8_is_kept_as_bytes_not_replaced() -> None:
    p = parse_packet(receive(1, "x").encode()[:-1] + b"\xff\xfe;\xd0")
    assert p.fields["msg"] == "" and p.undecodable == b"\xff\xfe;\xd0"
    assert "msg_hex:FFFE3BD0" in p.redacted() and PASSWORD not in p.redacted()


def test_rejections_are_logged_once_a_minute_per_address_with_the_count_left_out() -> None:
    now = [1000.0]
    rejects = RejectLog("goip:g", lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):
            rejects.reject("wrong password", "192.0.2.1")
        rejects.reject("wrong password", "192.0.2.2")
        now[0] += REJECT_LOG_WINDOW
        rejects.reject("wrong password", "192.0.2.1")
    assert [(e["peer"], e["suppressed"]) for e in logs] == [
        ("192.0.2.1", 0),
        ("192.0.2.2", 0),
        ("192.0.2.1", 99),
    ]


def test_reject_log_remembers_a_bounded_number_of_addresses() -> None:
    rejects = RejectLog("goip:g", lambda: 1000.0)
    with structlog.testing.capture_logs() as logs:
        for i in range(5000):
            rejects.reject("x", f"10.0.{i // 256}.{i % 256}")
    assert len(rejects._seen) <= 1025 and len(logs) <= 1025


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: ("RECEIVE:" + t).encode()))
def test_any_datagram_parses_or_gives_a_decode_error(data: bytes) -> None:
    try:
        p = parse_packet(data)
    except DecodeError:
        return
    assert p.kind and p.seq
    p.redacted().encode("utf-8")


# -- end to end over loopback -----------------------------------------------------------


class Line:
    """The GoIP side of the exchange: sends datagrams, collects the server's answers."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[str] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self, addr: tuple[str, int], local: str = "127.0.0.1") -> None:
        line = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _: tuple[str, int]) -> None:
                line.answers.put_nowait(data.decode())

        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            Proto, local_addr=(local, 0), remote_addr=addr
        )

    def send(self, text: str | bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(text.encode() if isinstance(text, str) else text)

    async def register(self) -> None:
        """A good keepalive: the server then takes this line's RECEIVE packets."""
        self.send(KEEPALIVE)
        assert await self.answer() == "reg:12;status:200;"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def answer(self, timeout: float = 3.0) -> str:
        return await asyncio.wait_for(self.answers.get(), timeout)


class Rig:
    def __init__(self, tmp_path: Path, **goip: Any) -> None:
        self.cfg = config.parse(
            {
                "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
                "store": {"path": str(tmp_path / "outbox.sqlite3")},
                "goip": [
                    {
                        "name": "goip-1",
                        "id": "goip01",
                        "password": PASSWORD,
                        "listen": "127.0.0.1:0",
                        "quiet_period": 0.3,
                        **goip,
                    }
                ],
                "sim": [{"source": "goip-1", "port": "goip01", "phone": "79001230001"}],
            }
        )
        self.outbox: Outbox
        self.server: GoipServer
        self.line = Line()
        self.messages: list[Message] = []

    async def start(self, *, register: bool = True) -> None:
        self.outbox = await Outbox.open(self.cfg.store.path)
        self.server = GoipServer(self.cfg.goip[0], Intake(self.outbox, Metrics()), self.cfg.sim)
        await self.server.start()
        await self.line.open(self.server.address)
        if register:
            await self.line.register()

    async def stop(self) -> None:
        await self.server.stop()
        await self.outbox.close()

    async def wait_messages(self, count: int, timeout: float = 5.0) -> list[Message]:
        return await wait_messages(self.outbox, count, timeout)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    await r.start()
    yield r
    await r.stop()
    if r.line.transport is not None:
        r.line.transport.close()


async def test_keepalive_is_answered_by_password_and_a_wrong_one_not_at_all(rig: Rig) -> None:
    rig.line.send(KEEPALIVE.replace(PASSWORD, "wrong").replace("req:12", "req:13"))
    rig.line.send(KEEPALIVE)
    assert await rig.line.answer() == "reg:12;status:200;"  # nothing came for req:13
    check = rig.server.check()
    assert check.details["last_keepalive_age"] is not None and check.details["rejected"] == 1


async def test_sms_is_acknowledged_after_commit_and_pushed_after_the_quiet_period(
    rig: Rig,
) -> None:
    rig.line.send(receive(1001, "Ваш код 4321"))
    assert await rig.line.answer() == "RECEIVE 1001 OK"
    (m,) = await rig.wait_messages(1)
    assert (m.phone, m.phone_from, m.text, m.source) == (
        "79001230001",
        "+79005556677",
        "Ваш код 4321",
        "goip:goip-1",
    )
    assert PASSWORD not in (m.raw or "") and m.hold_reason is None


async def test_wrong_password_gets_no_answer_and_nothing_is_taken(rig: Rig) -> None:
    """An answer (32 bytes) to an unauthenticated packet would go to a spoofable address."""
    for garbage in (receive(1002, "hi", pw="nope"), "hello", b"\xff" * 40, "DELIVER:5;id:x"):
        rig.line.send(garbage)
    rig.line.send(receive(1003, "good"))
    assert await rig.line.answer() == "RECEIVE 1003 OK"  # the first answer: none came before
    (m,) = await rig.wait_messages(1)
    assert m.text == "good" and rig.server.check().details["rejected"] == 4


async def test_receive_only_from_the_address_of_the_last_good_keepalive(rig: Rig) -> None:
    """The password is in every keepalive in clear: knowing it is not enough to inject SMS."""
    other = Line()
    await other.open(rig.server.address, local="127.0.0.2")
    try:
        other.send(receive(1100, "injected"))
        rig.line.send(receive(1101, "from the line"))
        assert await rig.line.answer() == "RECEIVE 1101 OK"
        (m,) = await rig.wait_messages(1)
        assert m.text == "from the line" and other.answers.empty()
        assert rig.server.peer == "127.0.0.1" and rig.server.check().details["rejected"] == 1
        # The GoIP moved (DHCP): its next keepalive binds the id to the new address.
        await other.register()
        assert rig.server.peer == "127.0.0.2"
        rig.line.send(receive(1102, "old address"))
        other.send(receive(1103, "new address"))
        assert await other.answer() == "RECEIVE 1103 OK"
        assert rig.line.answers.empty()
    finally:
        other.close()


async def test_a_receive_before_any_keepalive_waits_for_one(tmp_path: Path) -> None:
    """After a restart the GoIP may resend before its next keepalive: no answer, so it sends
    again, and once it has kept alive the packet is taken."""
    r = Rig(tmp_path)
    await r.start(register=False)
    try:
        r.line.send(receive(1200, "resent"))
        await r.line.register()  # the first answer is the keepalive's: the RECEIVE got none
        r.line.send(receive(1200, "resent"))
        assert await r.line.answer() == "RECEIVE 1200 OK"
        (m,) = await r.wait_messages(1)
        assert m.text == "resent"
    finally:
        await r.stop()
        r.line.close()


async def test_packets_from_outside_allow_get_nothing(tmp_path: Path) -> None:
    r = Rig(tmp_path, allow=["127.0.0.2/32"])
    await r.start(register=False)
    inside = Line()
    await inside.open(r.server.address, local="127.0.0.2")
    try:
        with structlog.testing.capture_logs() as logs:
            for n in range(50):
                r.line.send(KEEPALIVE)  # right password, wrong address
                r.line.send(receive(1300 + n, "from outside"))
            await inside.register()
            inside.send(receive(1400, "from inside"))
            assert await inside.answer() == "RECEIVE 1400 OK"
        (m,) = await r.wait_messages(1)
        assert m.text == "from inside" and r.line.answers.empty()
        assert r.server.check().details["rejected"] == 100
        rejected = [e for e in logs if e["event"] == "goip.packet_rejected"]
        assert len(rejected) == 1 and rejected[0]["reason"] == "address not in allow"
    finally:
        inside.close()
        await r.stop()
        r.line.close()


async def test_allow_in_the_form_a_dual_stack_log_shows_lets_the_line_in(
    tmp_path: Path,
) -> None:
    """``::ffff:127.0.0.1`` (how a listener on ``::`` shows an IPv4 peer) in allow admits
    127.0.0.1: the same rule as the HTTP guard and the Dinstar/Ejoin routes."""
    r = Rig(tmp_path, allow=["::ffff:127.0.0.1"])
    await r.start()
    try:
        r.line.send(receive(1450, "dual-stack form"))
        assert await r.line.answer() == "RECEIVE 1450 OK"
        (m,) = await r.wait_messages(1)
        assert m.text == "dual-stack form"
    finally:
        await r.stop()
        r.line.close()


async def test_a_field_the_rules_refuse_is_answered_as_refused_and_logged_once(
    rig: Rig,
) -> None:
    """A sender longer than the field rules take: that SMS alone is refused (the GoIP gets an
    ERROR answer, so it stops resending), one log line names the field, the next SMS goes on."""
    long_sender = "+7" + "9" * 300
    with structlog.testing.capture_logs() as logs:
        rig.line.send(receive(1460, "too long a sender", sender=long_sender))
        assert await rig.line.answer() == "RECEIVE 1460 ERROR srcnum: longer than 256 characters"
        rig.line.send(receive(1461, "undecodable too", sender=long_sender).encode() + b"\xff")
        assert await rig.line.answer() == "RECEIVE 1461 ERROR srcnum: longer than 256 characters"
    refused = [e for e in logs if e["event"] == "goip.sms_refused"]
    assert [(e["recvid"], e["field"]) for e in refused] == [("1460", "srcnum"), ("1461", "srcnum")]
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")]
    assert rig.server.check().details["rejected"] == 2
    rig.line.send(receive(1462, "the next one"))
    assert await rig.line.answer() == "RECEIVE 1462 OK"
    (m,) = await rig.wait_messages(1)
    assert m.text == "the next one"


async def test_text_not_valid_utf8_is_held_not_sent_with_replacement_marks(rig: Rig) -> None:
    rig.line.send(receive(1500, "").encode() + b"\xd0\x9f\xff\xfe")
    assert await rig.line.answer() == "RECEIVE 1500 OK"
    (m,) = await rig.wait_messages(1)
    assert m.hold_reason is Hold.UNDECODABLE and m.text == "" and "\ufffd" not in m.text
    assert "msg_hex:D09FFFFE" in (m.raw or "") and PASSWORD not in (m.raw or "")


async def test_long_sms_in_separate_packets_is_joined_in_order(rig: Rig) -> None:
    pieces = ["Первая часть длинного сообщения, ", "вторая часть; ", "и третья."]
    for i, piece in enumerate(pieces):
        rig.line.send(receive(2000 + i, piece))
        assert await rig.line.answer() == f"RECEIVE {2000 + i} OK"
    rig.line.send(receive(3000, "another sender", sender="+79990000000"))
    assert await rig.line.answer() == "RECEIVE 3000 OK"
    found = await rig.wait_messages(2)
    texts = {m.phone_from: m.text for m in found}
    assert texts == {"+79005556677": "".join(pieces), "+79990000000": "another sender"}


async def test_retransmission_after_a_lost_ack_is_acknowledged_again_not_taken_twice(
    rig: Rig,
) -> None:
    rig.line.send(receive(4000, "code 1111"))
    assert await rig.line.answer() == "RECEIVE 4000 OK"
    rig.line.send(receive(4000, "code 1111"))  # our first ack was lost: same recvid again
    assert await rig.line.answer() == "RECEIVE 4000 OK"
    (m,) = await rig.wait_messages(1)
    assert m.text == "code 1111"
    rig.line.send(receive(4000, "code 1111"))  # and again after the message was joined
    assert await rig.line.answer() == "RECEIVE 4000 OK"  # answered once the part is committed
    assert len(await rig.outbox.list_messages()) == 1


async def test_retransmission_reaching_a_restarted_server_is_not_a_second_message(
    rig: Rig,
) -> None:
    rig.line.send(receive(5000, "before restart"))
    assert await rig.line.answer() == "RECEIVE 5000 OK"
    await rig.wait_messages(1)
    await rig.stop()
    rig.line.close()
    rig.line = Line()
    await rig.start()
    rig.line.send(receive(5000, "before restart"))
    assert await rig.line.answer() == "RECEIVE 5000 OK"  # answered once the part is committed
    assert len(await rig.outbox.list_messages()) == 1


async def test_stop_joins_open_parts_at_once(rig: Rig) -> None:
    rig.line.send(receive(6000, "cut short by shutdown"))
    assert await rig.line.answer() == "RECEIVE 6000 OK"
    await rig.server.stop()
    (m,) = await rig.outbox.list_messages()
    assert m.text == "cut short by shutdown"


async def test_no_ack_while_the_store_cannot_commit(rig: Rig) -> None:
    await rig.outbox.close()
    rig.line.send(receive(7000, "lost?"))
    with pytest.raises(TimeoutError):
        await rig.line.answer(timeout=0.5)  # silence: the GoIP keeps the SMS and resends
    assert rig.server.check().details["store_errors"] == 1


async def test_phone_unknown_without_sim_entry_is_held(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.cfg = config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "goip": [{"name": "g", "id": "goip01", "password": PASSWORD, "listen": "127.0.0.1:0",
                      "quiet_period": 0.1}],
        }
    )  # fmt: skip
    await r.start()
    try:
        r.line.send(receive(8000, "hello"))
        assert await r.line.answer() == "RECEIVE 8000 OK"
        (m,) = await r.wait_messages(1)
        assert m.hold_reason is Hold.NO_PHONE
    finally:
        await r.stop()
        r.line.transport.close()  # type: ignore[union-attr]
