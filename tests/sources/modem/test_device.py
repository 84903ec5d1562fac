"""One Modem against the simulated modem (a real pty) and a real SQLite outbox (fixtures in
conftest.py)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.config import SimConfig
from gateway.metrics import Metrics
from gateway.outbox import Outbox, State
from gateway.outbox.models import Hold
from gateway.play.modem import PROFILES
from gateway.play.pdu import encode_status_report, split_deliver
from gateway.sources.modem import device
from gateway.sources.modem.channel import AtChannel, AtTimeout
from gateway.sources.modem.serial_link import open_serial_link
from gateway.sources.modem.session import Session, SimNotReady, Storage
from tests.sources.modem.conftest import (
    PHONE,
    PIN,
    SCANNING,
    WAIT,
    FakeFactory,
    LogWatch,
    ModemFactory,
    SlowToStopLink,
    StoreWatch,
    ready,
    sms,
)

ICCID_COMMAND = {
    "simcom": "AT+CCID",
    "huawei": "AT^ICCID?",
    "huawei-e1550": "AT^ICCID?",
    "quectel": "AT+QCCID",
    "wavecom": "AT+CCID",
    "telit": "AT+ICCID",
}


# --- start-up ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_each_maker_starts_up_identifies_and_delivers(
    profile: str, fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes(profile)
    modem = modems(fake)
    await ready(fake)
    commands = fake.commands
    for expected in ("ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CMGF=0", 'AT+CPMS="SM","SM","SM"'):
        assert expected in commands
    assert "AT+CNMI=2,1,0,0,0" in commands
    assert ICCID_COMMAND[profile] in commands
    status = modem.status()
    assert status.iccid == fake.iccid  # Huawei's swapped digits come back in order
    assert (status.imei, status.imsi) == (fake.imei, fake.imsi)
    assert (status.maker, status.model) == (fake.profile.manufacturer, fake.profile.model)
    assert status.phone == PHONE and status.up and status.registered
    assert (status.operator, status.signal_dbm, status.storage_total) == ("MegaFon", -73, 30)
    identified = await logs.wait("modem.identified", modem=modem.name)
    assert identified["iccid"] == fake.iccid

    fake.deliver(sms())
    (message,) = await store.count(1)
    assert (message.phone, message.phone_from, message.text) == (PHONE, "Instagram", "code 1234")
    assert message.source == f"modem:{modem.name}" and message.state is State.QUEUED
    await fake.wait_until(lambda: fake.used == 0)


async def test_pin_is_entered_when_the_sim_asks_and_never_logged(
    fakes: FakeFactory, modems: ModemFactory, logs: LogWatch
) -> None:
    fake = fakes(pin=PIN)
    modem = modems(fake, pin=PIN)
    await ready(fake)
    assert f'AT+CPIN="{PIN}"' in fake.commands
    assert modem.status().sim_state == "READY"
    assert (await logs.wait("modem.sim_ready"))["pin_entered"] is True
    assert not [e for e in logs.entries if PIN in repr(e)]


async def test_a_refused_pin_is_entered_once_only(
    fakes: FakeFactory, modems: ModemFactory, logs: LogWatch
) -> None:
    fake = fakes(pin=PIN)
    modem = modems(fake, pin="0000")
    await fake.wait_until(lambda: fake.commands.count("AT+CPIN?") >= 3)
    assert fake.commands.count('AT+CPIN="0000"') == 1  # a third wrong PIN would lock the SIM
    assert fake.pin_locked
    status = modem.status()
    assert status.sim_state == "SIM PIN" and not status.up
    assert "refused" in (status.last_error or "")
    await logs.wait("modem.sim_not_ready", modem=modem.name)


async def test_a_sim_asking_for_a_pin_that_is_not_configured_is_reported(
    fakes: FakeFactory, modems: ModemFactory
) -> None:
    fake = fakes(pin=PIN)
    modem = modems(fake)
    await fake.wait_until(lambda: fake.commands.count("AT+CPIN?") >= 2)
    assert not [c for c in fake.commands if c.startswith("AT+CPIN=")]
    assert modem.status().sim_state == "SIM PIN"
    assert "set pin" in (modem.status().last_error or "")


class ScriptedPort:
    """A port whose modem answers from a table: for firmware quirks the simulator lacks.
    Commands not in the table answer ``ERROR``; ``None`` in the table: no answer at all."""

    def __init__(self, answers: dict[str, str | None]) -> None:
        self.name = "scripted"
        self.commands: list[str] = []
        self._answers = answers
        self._out: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> bytes:
        return await self._out.get()

    def write(self, data: bytes) -> None:
        command = data.decode().strip()
        self.commands.append(command)
        answer = self._answers.get(command, "ERROR")
        if answer is not None:
            self._out.put_nowait(f"\r\n{answer}\r\n".encode())

    async def close(self) -> None:
        self._out.put_nowait(b"")


async def scripted(
    answers: dict[str, str | None], timeout: float = 1
) -> tuple[Session, ScriptedPort]:
    port = ScriptedPort(answers)
    channel = AtChannel(port, on_urc=lambda urc: None)
    channel.start()
    return Session(channel, timeout=timeout), port


async def test_storage_and_indications_fall_back_to_what_the_firmware_takes() -> None:
    session, port = await scripted(
        {
            "AT+CMGF=0": "OK",
            'AT+CPMS="SM","SM","SM"': "+CMS ERROR: 302",
            'AT+CPMS="ME","ME","ME"': "+CPMS: 2,50,2,50,2,50\r\n\r\nOK",
            "AT+CNMI=2,1,0,1,0": "OK",
        }
    )
    storage, indications = await session.setup_sms()
    assert storage == Storage("ME", 2, 50) and indications == "2,1,0,1,0"
    assert port.commands.index("AT+CNMI=2,1,0,0,0") < port.commands.index("AT+CNMI=2,1,0,1,0")
    await session.channel.close()


async def test_iccid_is_read_from_the_sim_file_when_no_maker_command_works() -> None:
    session, port = await scripted(
        {"AT+CRSM=176,12258,0,0,10": '+CRSM: 144,0,"980791193254769810F2"\r\n\r\nOK'}
    )
    assert await session.iccid("Unknown Maker") == "8970199123456789012"
    assert port.commands[:4] == ["AT+CCID", "AT^ICCID?", "AT+QCCID", "AT+ICCID"]
    await session.channel.close()


@pytest.mark.parametrize(
    ("answer", "state"),
    [("+CPIN: SIM PUK\r\n\r\nOK", "SIM PUK"), ("+CME ERROR: 10", "NOT INSERTED")],
)
async def test_a_sim_that_cannot_be_unlocked_is_not_ready(answer: str, state: str) -> None:
    session, port = await scripted({"AT+CPIN?": answer})
    with pytest.raises(SimNotReady) as caught:
        await session.unlock(PIN)
    assert caught.value.state == state and not caught.value.pin_rejected
    assert not [c for c in port.commands if c.startswith("AT+CPIN=")]
    await session.channel.close()


@pytest.mark.parametrize("answer", [None, "+CME ERROR: 16"])
async def test_the_pin_never_shows_in_errors_or_logs(answer: str | None, logs: LogWatch) -> None:
    session, _port = await scripted(
        {"AT+CPIN?": "+CPIN: SIM PIN\r\n\r\nOK", f'AT+CPIN="{PIN}"': answer}, timeout=0.2
    )
    with pytest.raises((AtTimeout, SimNotReady)) as caught:
        await session.unlock(PIN)
    assert PIN not in str(caught.value) and PIN not in str(caught.value.__cause__)
    assert not [e for e in logs.entries if PIN in repr(e)]
    await session.channel.close()


# --- receiving -----------------------------------------------------------------------------


async def test_sms_is_deleted_from_the_sim_only_after_it_is_committed(
    fakes: FakeFactory, modems: ModemFactory, outbox: Outbox, store: StoreWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    seen_at_commit: list[list[str]] = []
    outbox.on_accepted(lambda: seen_at_commit.append(list(fake.commands)))
    index = fake.deliver(sms("Your code is 800142"))
    await fake.wait_until(lambda: fake.deleted == [index])
    (message,) = await store.messages()
    assert (message.phone, message.phone_from) == (PHONE, "Instagram")
    assert message.text == "Your code is 800142"
    assert not any(c.startswith("AT+CMGD") for c in seen_at_commit[0])
    tail = [c for c in fake.commands if c.startswith(("AT+CMGR", "AT+CMGD"))]
    assert tail == [f"AT+CMGR={index}", f"AT+CMGD={index}"]


async def test_an_unknown_urc_just_before_the_read_answer_does_not_break_the_read(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes()
    modems(fake)  # scans every 30 s: only the read that +CMTI asks for can be in time
    await ready(fake)
    fake.slow = 0.3  # answers come late, URCs at once: room for one in between
    index = fake.deliver(sms("read despite the URC"))
    await fake.wait_command(f"AT+CMGR={index}")
    fake.emit_urc("+CSQN: 20,99")
    (message,) = await store.count(1)
    assert message.text == "read despite the URC"
    await fake.wait_until(lambda: fake.deleted == [index])
    assert not logs.named("modem.read_failed")
    assert fake.commands.count("AT+CMGL=4") == 1  # the start-up scan only


async def test_sms_stored_without_indication_is_found_by_the_periodic_scan(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch
) -> None:
    fake = fakes()
    modems(fake, settings=SCANNING)
    await ready(fake)
    fake.store_silently(sms("found by a scan"))
    (message,) = await store.count(1)
    assert message.text == "found by a scan"
    assert fake.commands.count("AT+CMGL=4") >= 2
    await fake.wait_until(lambda: fake.used == 0)


async def test_parts_arriving_in_any_order_are_joined(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch
) -> None:
    fake = fakes("quectel")
    modems(fake)
    await ready(fake)
    text = "Длинное сообщение из нескольких частей. " * 6
    parts = split_deliver("Bank", text, ref=42)
    assert len(parts) >= 3
    random.Random(7).shuffle(parts)
    for pdu in parts:
        fake.deliver(pdu)
    (message,) = await store.count(1)
    assert (message.text, message.phone, message.phone_from) == (text, PHONE, "Bank")
    assert not message.partial
    await fake.wait_until(lambda: len(fake.deleted) == len(parts))


async def test_message_without_a_known_phone_is_held_until_a_sim_entry_names_it(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes()
    modem = modems(fake, sims=[])
    await ready(fake)
    assert modem.status().phone is None and modem.status().held_for_no_phone
    fake.deliver(sms())
    (held,) = await store.count(1)
    assert (held.state, held.hold_reason, held.phone) == (State.HELD, Hold.NO_PHONE, "")
    await fake.wait_until(lambda: fake.used == 0)

    await modem.apply_config(modem.config, [SimConfig(phone=PHONE, iccid=fake.iccid)])
    message = await store.outbox.get_message(held.sms_id)
    assert message is not None
    assert (message.state, message.phone, message.hold_reason) == (State.QUEUED, PHONE, None)
    assert (await logs.wait("modem.held_released"))["sms_ids"] == [held.sms_id]
    assert modem.status().phone == PHONE and not modem.status().held_for_no_phone


async def test_undecodable_pdu_is_kept_held_with_its_hex_and_deleted(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    broken = "07911326040000F0040B911346610089F600002080629173140810"
    index = fake.deliver(broken)
    (message,) = await store.count(1)
    assert (message.state, message.hold_reason, message.raw) == (
        State.HELD,
        Hold.UNDECODABLE,
        broken,
    )
    await fake.wait_until(lambda: fake.deleted == [index])


async def test_status_report_is_recorded_as_not_text(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    fake.deliver(encode_status_report("+79001112233", message_ref=9))
    (message,) = await store.count(1)
    assert (message.state, message.hold_reason) == (State.HELD, Hold.NOT_TEXT)
    assert message.phone_from == "+79001112233"


async def test_direct_delivery_is_committed_then_acknowledged(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    pdu = sms("flash message")
    fake.emit_urc(f"+CMT: ,{len(pdu) // 2 - 8}\r\n{pdu}")
    (message,) = await store.count(1)
    assert message.text == "flash message"
    await fake.wait_command("AT+CNMA")


async def test_network_timestamp_is_the_received_time(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    sent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    fake.deliver(sms(timestamp=sent))
    (message,) = await store.count(1)
    assert message.received_at == sent.timestamp()


# --- staying up ----------------------------------------------------------------------------


async def test_garbage_on_the_line_is_skipped(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    fake.emit_garbage(b"\x00\xff\xfe\x81 line noise \x07\r\n~~~~\r\n" + b"\xaa" * 5000 + b"\r\n")
    fake.deliver(sms("after the noise"))
    (message,) = await store.count(1)
    assert message.text == "after the noise"
    await logs.wait("modem.garbage_skipped")


async def test_silent_modem_is_detected_reset_and_reopened(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes()
    modem = modems(fake, settings=SCANNING)
    await ready(fake)
    fake.silent = True
    fake.deliver(sms("while it hung"))  # stored; its +CMTI is lost
    await logs.wait("modem.unresponsive", modem=modem.name)
    await fake.wait_command("AT+CFUN=1,1")  # after reopening it still answered nothing
    fake.silent = False
    (message,) = await store.count(1)
    assert message.text == "while it hung"
    await fake.wait_until(lambda: fake.used == 0)
    assert modem.status().up


async def test_unplugged_modem_comes_back_with_what_arrived_meanwhile(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch, metrics: Metrics
) -> None:
    fake = fakes()
    modem = modems(fake)
    await ready(fake)
    assert metrics.registry.get_sample_value("sms_gateway_modem_up", {"modem": modem.name}) == 1
    assert (
        metrics.registry.get_sample_value("sms_gateway_modem_signal", {"modem": modem.name}) == -73
    )
    fake.unplug()
    await logs.wait("modem.port_lost", modem=modem.name)
    await logs.wait("modem.port_unavailable", modem=modem.name)
    assert not modem.status().port_open
    assert metrics.registry.get_sample_value("sms_gateway_modem_up", {"modem": modem.name}) == 0
    fake.deliver(sms("sent while unplugged"))
    fake.replug()
    (message,) = await store.count(1)
    assert message.text == "sent while unplugged"
    await fake.wait_until(lambda: fake.used == 0)


async def test_store_that_cannot_commit_leaves_the_sms_on_the_sim(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch, db_path: str
) -> None:
    fake = fakes()
    modems(fake, settings=SCANNING)
    await ready(fake)
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holding the database
    try:
        fake.deliver(sms("kept on the SIM"))
        await logs.wait("modem.store_unavailable")
        assert fake.deleted == [] and fake.used == 1
        assert not any(c.startswith("AT+CMGD") for c in fake.commands)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    (message,) = await store.count(1)
    assert message.text == "kept on the SIM"
    await fake.wait_until(lambda: fake.used == 0)


async def test_crash_between_commit_and_delete_reads_a_duplicate_not_a_new_message(
    fakes: FakeFactory, modems: ModemFactory, outbox: Outbox, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes()
    first = modems(fake)
    await ready(fake)

    def hang_after_commit() -> None:
        fake.silent = True  # the modem never runs the AT+CMGD that follows

    outbox.on_accepted(hang_after_commit)
    index = fake.deliver(sms("once only"))
    await fake.wait_command("AT+CMGD")
    await first.stop()
    (committed,) = await store.messages()
    assert fake.deleted == [] and index in fake.messages  # committed, still on the SIM

    fake.silent = False
    modems(fake, name=first.name)
    await fake.wait_until(lambda: fake.deleted == [index])
    assert [m.sms_id for m in await store.messages()] == [committed.sms_id]
    again = await logs.wait("modem.sms_received", duplicate=True)
    assert again["sms_id"] == committed.sms_id


async def test_a_modem_that_powers_up_on_its_own_is_set_up_again(
    fakes: FakeFactory, modems: ModemFactory, store: StoreWatch, logs: LogWatch
) -> None:
    fake = fakes()
    modems(fake)
    await ready(fake)
    fake.emit_urc("RDY")
    await logs.wait("modem.restarted")
    await fake.wait_until(lambda: fake.commands.count("AT+CNMI=2,1,0,0,0") == 2)
    fake.deliver(sms("after the reboot"))
    (message,) = await store.count(1)
    assert message.text == "after the reboot"


async def test_a_stop_while_the_port_closes_is_not_swallowed(
    fakes: FakeFactory, modems: ModemFactory, logs: LogWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports: list[SlowToStopLink] = []

    async def open_slow(url: str, **kw: Any) -> SlowToStopLink:
        ports.append(SlowToStopLink(await open_serial_link(url, **kw)))
        return ports[-1]

    monkeypatch.setattr(device, "open_serial_link", open_slow)
    fake = fakes()
    modem = modems(fake)
    await ready(fake)
    fake.emit_urc("RDY")  # the session ends and closes its channel, reader still running
    await asyncio.wait_for(ports[0].read_cancelled.wait(), WAIT)
    async with asyncio.timeout(WAIT):
        await modem.stop()  # lands while close() awaits the reader; returns once all ended
    assert len(ports) == 1  # not reopened
    assert not modem.status().port_open
