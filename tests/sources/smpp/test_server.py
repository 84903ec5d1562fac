"""The SMPP server over loopback with a real SQLite outbox: binds, windowed commits, garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.errors import StoreUnavailable
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Hold, Incoming, Outbox
from gateway.sources.smpp.content import TLV_RECEIPTED_MESSAGE_ID
from gateway.sources.smpp.inbound import Inbound
from gateway.sources.smpp.pdu import Command, Status
from gateway.sources.smpp.server import SmppServer
from tests.fakes.store import wait_messages
from tests.sources.smpp.config_files import secret_file, smpp_config
from tests.sources.smpp.peer import Peer, raw_pdu, sm
from tests.sources.smpp.test_kill9 import free_port

PASSWORD = "pw123456"


class Rig:
    def __init__(self, tmp_path: Path, **account: Any) -> None:
        self.cfg = config.parse(
            {
                "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
                "store": {"path": str(tmp_path / "outbox.sqlite3")},
                "smpp_server": {
                    "listen": "127.0.0.1:0",
                    "window": 10,
                    "enquire_link": 0.5,
                    "response_timeout": 0.5,
                    "account": [
                        {"system_id": "box1", "password": PASSWORD, "max_binds": 2, **account}
                    ],
                },
                "sim": [{"source": "smpp-server:box1", "port": "port3", "phone": "79001230003"}],
            }
        )
        self.metrics = Metrics()
        self.outbox: Outbox
        self.server: SmppServer
        self.peers: list[Peer] = []

    async def start(
        self, intake: Intake | None = None, *, make: Callable[[Outbox], Intake] | None = None
    ) -> None:
        """With `make`, the intake is built on the rig's own outbox."""
        self.outbox = await Outbox.open(self.cfg.store.path)
        intake = intake or (make or (lambda o: Intake(o, self.metrics)))(self.outbox)
        assert self.cfg.smpp_server is not None
        self.server = SmppServer(self.cfg.smpp_server, Inbound(intake, self.cfg.sim), self.metrics)
        await self.server.start()

    async def peer(self, bind: bool = True) -> Peer:
        p = Peer()
        await p.connect(self.server.port)
        self.peers.append(p)
        if bind:
            h = await p.bind("box1", PASSWORD)
            assert (h.command_id, h.status) == (Command.BIND_TRANSCEIVER_RESP, 0)
        return p

    async def stop(self) -> None:
        for p in self.peers:
            await p.close()
        await self.server.stop()
        await self.outbox.close()

    def counted(self, name: str, **labels: str) -> float | None:
        """A sample of box1's series in the registry (None: no such series)."""
        return self.metrics.registry.get_sample_value(
            name, {"source": "smpp-server:box1", **labels}
        )

    def sessions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.server.check().details["accounts"]["box1"]["sessions"]
        return found


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the server has no event to wait on
            await asyncio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, allow=["127.0.0.0/8"])
    await r.start()
    yield r
    await r.stop()


async def test_submit_sm_is_answered_with_a_message_id_after_commit(rig: Rig) -> None:
    p = await rig.peer()
    p.send_message(sm(7, b"Code 1234"))
    h, body = await p.read_until(Command.SUBMIT_SM_RESP)
    assert (h.seq, h.status) == (7, Status.ROK) and len(body) > 1
    (m,) = await wait_messages(rig.outbox, 1)
    assert (m.source, m.phone, m.phone_from, m.text) == (
        "smpp-server:box1", "79001230001", "79005556677", "Code 1234",
    )  # fmt: skip


async def test_deliver_sm_from_a_box_maps_its_port_to_the_sim_phone(rig: Rig) -> None:
    p = await rig.peer()
    p.send_message(sm(1, b"hi", dst="port3", command=Command.DELIVER_SM))
    h, _ = await p.read_until(Command.DELIVER_SM_RESP)
    assert h.status == Status.ROK
    (m,) = await wait_messages(rig.outbox, 1)
    assert m.phone == "79001230003"


async def test_data_sm_is_stored_and_answered_data_sm_resp_after_commit(rig: Rig) -> None:
    """Some SMSCs and boxes hand MO as data_sm, the text in message_payload."""
    p = await rig.peer()
    text = "Код 5678 🙂".encode("utf-16-be")
    m = sm(11, b"", data_coding=8, tlvs=((0x0424, text),), command=Command.DATA_SM)
    for _ in range(2):  # the second is a retransmission: the same answer, stored once
        p.send_message(m)
        h, body = await p.read_until(Command.DATA_SM_RESP)
        assert (h.seq, h.status) == (11, Status.ROK) and len(body) > 1
    (stored,) = await wait_messages(rig.outbox, 1)
    assert (stored.text, stored.phone, stored.phone_from) == (
        "Код 5678 🙂", "79001230001", "79005556677",
    )  # fmt: skip
    await until(
        lambda: (
            rig.counted("sms_gateway_smpp_messages_total", bind="box1#1", outcome="duplicate") == 1
        )
    )


async def test_a_retransmitted_pdu_is_one_message(rig: Rig) -> None:
    p = await rig.peer()
    for _ in range(3):
        p.send_message(sm(42, b"same"))
        h, _ = await p.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK
    p.send_message(sm(43, b"same"))  # another sequence number: another message
    await p.read_until(Command.SUBMIT_SM_RESP)
    assert len(await rig.outbox.list_messages()) == 2


async def test_many_pdus_in_flight_are_each_answered(rig: Rig) -> None:
    p = await rig.peer()
    for seq in range(1, 201):
        p.send_message(sm(seq, f"m{seq}".encode()))
    seen: set[int] = set()
    while len(seen) < 200:
        h, _ = await p.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK
        seen.add(h.seq)
    assert seen == set(range(1, 201))
    assert len(await rig.outbox.list_messages(limit=1000)) == 200


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [("box1", "wrong", Status.RINVPASWD), ("nobody", PASSWORD, Status.RINVSYSID)],
)
async def test_a_refused_bind_gets_the_smpp_error_and_stores_nothing(
    rig: Rig, system_id: str, password: str, status: Status
) -> None:
    p = await rig.peer(bind=False)
    h = await p.bind(system_id, password)
    assert h.status == status
    assert await p.closed()
    assert rig.server.check().details["binds_refused"] == 1


async def test_too_many_binds_are_refused(rig: Rig) -> None:
    await rig.peer()
    await rig.peer()
    p = await rig.peer(bind=False)
    assert (await p.bind("box1", PASSWORD)).status == Status.RBINDFAIL


async def test_a_disallowed_address_is_refused(tmp_path: Path) -> None:
    r = Rig(tmp_path, allow=["192.0.2.0/24"])
    await r.start()
    try:
        p = await r.peer(bind=False)
        assert (await p.bind("box1", PASSWORD)).status == Status.RBINDFAIL
    finally:
        await r.stop()


async def test_enquire_link_both_ways(rig: Rig) -> None:
    p = await rig.peer()
    p.send_raw(raw_pdu(Command.ENQUIRE_LINK, 99))
    h, _ = await p.read()
    assert (h.command_id, h.seq) == (Command.ENQUIRE_LINK_RESP, 99)
    h, _ = await p.read(timeout=3)  # our silence makes the server ask
    assert h.command_id == Command.ENQUIRE_LINK


async def test_a_silent_peer_is_dropped(rig: Rig) -> None:
    p = await rig.peer()
    assert await p.closed(timeout=5)  # never answers enquire_link


async def test_garbage_gets_generic_nack_or_a_close_and_other_binds_carry_on(rig: Rig) -> None:
    good = await rig.peer()
    bad = await rig.peer()
    bad.send_raw(raw_pdu(0x00001234, 5))  # unknown command
    h, _ = await bad.read()
    assert (h.command_id, h.seq, h.status) == (Command.GENERIC_NACK, 5, Status.RINVCMDID)
    bad.send_raw(raw_pdu(Command.SUBMIT_SM, 6, b"\x00\x01"))  # truncated body
    h, _ = await bad.read()
    assert (h.command_id, h.seq) == (Command.GENERIC_NACK, 6)
    bad.send_raw(raw_pdu(Command.SUBMIT_SM, 7, length=9))  # impossible length
    h, _ = await bad.read()
    assert h.command_id == Command.GENERIC_NACK
    assert await bad.closed()
    good.send_message(sm(1, b"still here"))
    h, _ = await good.read_until(Command.SUBMIT_SM_RESP)
    assert h.status == Status.ROK


async def test_a_store_that_cannot_commit_answers_a_temporary_error(tmp_path: Path) -> None:
    class Down(Intake):
        async def accept(self, items: Any) -> Any:
            raise StoreUnavailable("disk full")

    r = Rig(tmp_path)
    r.outbox = await Outbox.open(r.cfg.store.path)
    await r.start(Down(r.outbox))
    try:
        p = await r.peer()
        p.send_message(sm(3, b"x"))
        h, body = await p.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.RX_T_APPN and body == b""  # 4.4.2: no body on an error
        for command in (Command.DELIVER_SM, Command.DATA_SM):  # their message_id is mandatory
            payload = ((0x0424, b"x"),) if command is Command.DATA_SM else ()
            p.send_message(sm(4, b"" if payload else b"x", tlvs=payload, command=command))
            h, body = await p.read_until(command | 0x80000000)
            assert (h.status, body) == (Status.RX_T_APPN, b"\0")
    finally:
        await r.stop()


async def test_receipts_are_kept_not_pushed(rig: Rig) -> None:
    p = await rig.peer()
    p.send_message(sm(1, b"id:1 stat:DELIVRD", esm_class=0x04, command=Command.DELIVER_SM))
    await p.read_until(Command.DELIVER_SM_RESP)
    (m,) = await wait_messages(rig.outbox, 1)
    assert m.hold_reason == Hold.NOT_TEXT


async def test_shuffled_udh_and_sar_parts_join(rig: Rig) -> None:
    p = await rig.peer()
    parts = [(3, b"C"), (1, b"A"), (2, b"B")]
    for seq, text in parts:
        udh = bytes([0x06, 0x08, 0x04, 0x12, 0x34, 3, seq])
        p.send_message(sm(10 + seq, udh + text, esm_class=0x40))
    for seq, text in [(2, "ä".encode("utf-16-be")), (1, "ö".encode("utf-16-be"))]:
        tlvs = ((0x020C, b"\x00\x07"), (0x020E, b"\x02"), (0x020F, bytes([seq])))
        p.send_message(sm(20 + seq, text, data_coding=8, tlvs=tlvs))
    for _ in range(5):
        await p.read_until(Command.SUBMIT_SM_RESP)
    found = await wait_messages(rig.outbox, 2)
    assert sorted(m.text for m in found) == ["ABC", "öä"]


async def test_a_receipt_sent_again_under_a_new_sequence_number_is_one_message(rig: Rig) -> None:
    """A receipt names its message id (receipted_message_id): that is its identity, whatever
    sequence number the redelivery carries; another id is another receipt."""
    p = await rig.peer()
    for seq, msg_id in ((1, b"abc123\0"), (2, b"abc123\0"), (3, b"def456\0")):
        tlvs = ((TLV_RECEIPTED_MESSAGE_ID, msg_id),)
        receipt = sm(seq, b"id:x stat:DELIVRD", esm_class=4, command=Command.DELIVER_SM, tlvs=tlvs)
        p.send_message(receipt)
        h, _ = await p.read_until(Command.DELIVER_SM_RESP)
        assert h.status == Status.ROK
    found = await rig.outbox.list_messages()  # each answer followed its commit: all are there
    assert [m.hold_reason for m in found] == [Hold.NOT_TEXT, Hold.NOT_TEXT]


async def send_and_answer(p: Peer, *seqs: int) -> None:
    for seq in seqs:
        p.send_message(sm(seq, f"from {seq}".encode()))
    for _ in seqs:
        h, _ = await p.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK


async def test_two_binds_of_one_account_are_slots_1_and_2_each_counted_apart(rig: Rig) -> None:
    first = await rig.peer()
    second = await rig.peer()
    assert [s["bind"] for s in rig.sessions()] == ["box1#1", "box1#2"]
    await send_and_answer(first, 1)
    await send_and_answer(second, 2, 3)
    messages = "sms_gateway_smpp_messages_total"
    assert rig.counted(messages, bind="box1#1", outcome="stored") == 1
    assert rig.counted(messages, bind="box1#2", outcome="stored") == 2
    assert rig.counted(messages, bind="box1#2", outcome="duplicate") == 0  # shown from the bind
    assert [s["messages"] for s in rig.sessions()] == [1, 2]
    assert rig.counted("sms_gateway_smpp_binds") == 2
    # garbage on the second bind is its error, not the first one's
    second.send_raw(raw_pdu(0x00001234, 9))
    await second.read_until(Command.GENERIC_NACK)
    errors = "sms_gateway_smpp_errors_total"
    assert rig.counted(errors, bind="box1#2", kind="unknown_command") == 1
    assert rig.counted(errors, bind="box1#1", kind="unknown_command") is None
    assert [s["errors"] for s in rig.sessions()] == [0, 1]


async def test_a_freed_slot_is_taken_again_by_the_next_bind(rig: Rig) -> None:
    first = await rig.peer()
    second = await rig.peer()
    await send_and_answer(first, 1)
    await first.close()
    await until(lambda: rig.server.binds("box1") == 1)
    assert [s["bind"] for s in rig.sessions()] == ["box1#2"]
    assert rig.counted("sms_gateway_smpp_binds") == 1
    third = await rig.peer()  # the lowest free slot: #1 again, not #3
    assert [s["bind"] for s in rig.sessions()] == ["box1#1", "box1#2"]
    await send_and_answer(third, 2)
    assert rig.counted("sms_gateway_smpp_messages_total", bind="box1#1", outcome="stored") == 2
    assert rig.counted("sms_gateway_smpp_in_flight", bind="box1#3") is None
    await send_and_answer(second, 3)
    assert rig.counted("sms_gateway_smpp_messages_total", bind="box1#2", outcome="stored") == 1


async def test_a_bind_refused_before_it_had_a_slot_counts_under_the_account_name(
    rig: Rig,
) -> None:
    errors = "sms_gateway_smpp_errors_total"
    # 0 before any refusal: the first one is an increase an alert's rate() sees
    assert rig.counted(errors, bind="box1", kind="bind_refused") == 0
    await rig.peer()
    await rig.peer()
    late = await rig.peer(bind=False)
    assert (await late.bind("box1", PASSWORD)).status == Status.RBINDFAIL  # max_binds = 2
    wrong = await rig.peer(bind=False)
    assert (await wrong.bind("box1", "wrong")).status == Status.RINVPASWD
    assert rig.counted(errors, bind="box1", kind="bind_refused") == 2
    assert rig.counted(errors, bind="box1#1", kind="bind_refused") is None
    assert [s["bind"] for s in rig.sessions()] == ["box1#1", "box1#2"]


async def test_in_flight_shows_one_binds_pdus_waiting_for_their_commit(tmp_path: Path) -> None:
    class Gated(Intake):
        """Commits only once the gate opens: the PDUs stay in flight until then."""

        gate = asyncio.Event()

        async def accept(self, items: Sequence[Incoming]) -> Any:
            await self.gate.wait()
            return await super().accept(items)

    r = Rig(tmp_path)
    r.outbox = await Outbox.open(r.cfg.store.path)
    intake = Gated(r.outbox, r.metrics)
    await r.start(intake)
    try:
        idle = await r.peer()
        busy = await r.peer()
        for seq in (1, 2, 3):
            busy.send_message(sm(seq, b"waiting"))
        in_flight = "sms_gateway_smpp_in_flight"
        await until(lambda: r.counted(in_flight, bind="box1#2") == 3)
        assert r.counted(in_flight, bind="box1#1") == 0
        assert [s["in_flight"] for s in r.sessions()] == [0, 3]
        intake.gate.set()
        for _ in range(3):
            h, _ = await busy.read_until(Command.SUBMIT_SM_RESP)
            assert h.status == Status.ROK
        assert r.counted(in_flight, bind="box1#2") == 0
        await busy.close()
        await until(lambda: r.server.binds("box1") == 1)
        assert r.counted(in_flight, bind="box1#2") == 0  # the slot's series stays, at 0
        await idle.close()
    finally:
        await r.stop()


async def test_an_accounts_password_file_is_read_and_checked_at_bind(tmp_path: Path) -> None:
    """From a config file on disk, as the daemon reads it: `password_file` relative to it."""
    secret_file(tmp_path / "box1.password", "fromfile")  # the trailing newline is not part of it
    port = free_port()
    path = smpp_config(
        tmp_path,
        port,
        """
[[smpp_server.account]]
system_id = "box1"
password_file = "box1.password"
""",
    )
    cfg = config.load(path)
    assert cfg.warnings == ()  # 0600: not readable by others
    assert cfg.smpp_server is not None
    outbox = await Outbox.open(cfg.store.path)
    server = SmppServer(cfg.smpp_server, Inbound(Intake(outbox)), Metrics())
    await server.start()
    peers = [Peer(), Peer()]
    try:
        for p in peers:
            await p.connect(port)
        assert (await peers[0].bind("box1", "wrong")).status == Status.RINVPASWD
        assert await peers[0].closed()
        assert (await peers[1].bind("box1", "fromfile")).status == Status.ROK
        peers[1].send_message(sm(1, b"bound with the file's password"))
        h, _ = await peers[1].read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK
        assert "fromfile" not in str(server.check().details)
    finally:
        for p in peers:
            await p.close()
        await server.stop()
        await outbox.close()
