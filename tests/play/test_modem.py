"""AtChannel over the real pseudo-terminal of the simulated modem (tests/fakes/modem.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.play.modem import UssdAnswer
from gateway.sources.modem.answers import (
    parse_cgmi,
    parse_cgmm,
    parse_cgsn,
    parse_cimi,
    parse_cmgl,
    parse_cmgr,
    parse_cmgs,
    parse_cmti,
    parse_cnum,
    parse_cops,
    parse_cpin,
    parse_cpms,
    parse_creg,
    parse_csq,
    parse_iccid,
)
from gateway.sources.modem.channel import (
    AtChannel,
    AtError,
    AtTimeout,
    LinkClosed,
    Urc,
)
from gateway.sources.modem.serial_link import LinkOpenError, open_serial_link
from gateway.sources.modem.ussd import pack_request, parse_cusd
from tests.fakes.modem import PROFILES, FakeModem

PDU = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
PDU2 = "07919730071111F1040B919771511506F00008521022414035210C041F04400438043204350442"
WAIT = 5.0


class Channel:
    """An AtChannel on a modem's port, with its URCs in a queue."""

    def __init__(self, channel: AtChannel) -> None:
        self.at = channel
        self.urcs: asyncio.Queue[Urc] = asyncio.Queue()

    async def next_urc(self, name: str | None = None, timeout: float = WAIT) -> Urc:
        """The next URC (skipping others than ``name`` if given), bounded."""

        async def take() -> Urc:
            while True:
                urc = await self.urcs.get()
                if name is None or urc.name == name:
                    return urc

        return await asyncio.wait_for(take(), timeout)


async def open_channel(modem: FakeModem) -> Channel:
    link = await open_serial_link(modem.port)
    holder: list[Channel] = []
    channel = AtChannel(link, on_urc=lambda urc: holder[0].urcs.put_nowait(urc))
    holder.append(Channel(channel))
    channel.start()
    return holder[0]


@pytest.fixture
async def modem(tmp_path: Path) -> AsyncIterator[FakeModem]:
    m = FakeModem("simcom", link_dir=tmp_path, number="+79161234567")
    m.start()
    yield m
    m.stop()


@pytest.fixture
async def chan(modem: FakeModem) -> AsyncIterator[Channel]:
    channel = await open_channel(modem)
    yield channel
    await channel.at.close()


async def startup(chan: Channel) -> None:
    for command in ("ATZ", "ATE0", "AT+CMEE=1", "AT+CMGF=0", 'AT+CPMS="SM","SM","SM"'):
        await chan.at.command(command)
    await chan.at.command("AT+CNMI=2,1,0,0,0")


# ------------------------------------------------------------------------- the basics


async def test_port_is_a_symlink_to_a_pty(modem: FakeModem, tmp_path: Path) -> None:
    assert modem.port.startswith(str(tmp_path))
    assert os.path.realpath(modem.port) == modem.tty
    assert modem.tty.startswith("/dev/pts/")


async def test_echo_is_on_at_power_up_until_ate0(modem: FakeModem) -> None:
    link = await open_serial_link(modem.tty)
    try:

        async def read_until(marker: bytes) -> bytes:
            data = b""
            while marker not in data:
                chunk = await link.read()
                assert chunk
                data += chunk
            return data

        link.write(b"AT\r")
        assert await asyncio.wait_for(read_until(b"OK\r\n"), WAIT) == b"AT\r\r\nOK\r\n"
        link.write(b"ATE0\r")
        assert await asyncio.wait_for(read_until(b"OK\r\n"), WAIT) == b"ATE0\r\r\nOK\r\n"
        link.write(b"AT+CSQ\r")
        answer = await asyncio.wait_for(read_until(b"OK\r\n"), WAIT)
        assert answer == b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    finally:
        await link.close()
    assert not modem.echo


async def test_echo_is_dropped_by_the_channel(chan: Channel, modem: FakeModem) -> None:
    assert modem.echo
    response = await chan.at.command("AT+CGMI")
    assert response.lines == ("SIMCOM_Ltd",)


async def test_startup_sequence_answers(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    assert modem.commands[:6] == [
        "ATZ",
        "ATE0",
        "AT+CMEE=1",
        "AT+CMGF=0",
        'AT+CPMS="SM","SM","SM"',
        "AT+CNMI=2,1,0,0,0",
    ]
    command = chan.at.command
    assert parse_cpin((await command("AT+CPIN?")).lines) == "READY"
    assert parse_cgmi((await command("AT+CGMI")).lines) == "SIMCOM_Ltd"
    assert parse_cgmm((await command("AT+CGMM")).lines) == "SIMCOM_SIM800L"
    assert parse_cgsn((await command("AT+CGSN")).lines) == modem.imei
    assert parse_cimi((await command("AT+CIMI")).lines) == modem.imsi
    assert parse_iccid((await command("AT+CCID")).lines) == modem.iccid
    assert parse_cnum((await command("AT+CNUM")).lines) == "+79161234567"
    assert parse_creg((await command("AT+CREG?")).lines) == (0, 1)
    assert parse_cops((await command("AT+COPS?")).lines) == "MegaFon"
    assert parse_csq((await command("AT+CSQ")).lines) == (20, None)
    assert parse_cpms((await command("AT+CPMS?")).lines) == [(0, 30)] * 3
    assert (await command("AT+CMGL=4")).lines == ()
    with pytest.raises(AtError) as info:
        await command("AT+BOGUS")
    assert info.value.kind == "ERROR"


@pytest.mark.parametrize(
    ("profile", "iccid_command", "unsupported"),
    [
        ("simcom", "AT+CCID", "AT+QCCID"),
        ("huawei", "AT^ICCID?", "AT+CCID"),
        ("quectel", "AT+QCCID", "AT^ICCID?"),
        ("wavecom", "AT+CCID", "AT#CCID"),
        ("telit", "AT#CCID", "AT+QCCID"),
    ],
)
async def test_maker_profiles(profile: str, iccid_command: str, unsupported: str) -> None:
    async with FakeModem(profile) as modem:
        chan = await open_channel(modem)
        try:
            assert parse_iccid((await chan.at.command(iccid_command)).lines) == modem.iccid
            with pytest.raises(AtError):
                await chan.at.command(unsupported)
            assert parse_cgsn((await chan.at.command("AT+CGSN")).lines) == modem.imei
            assert parse_cgmi((await chan.at.command("AT+CGMI")).lines) == (
                PROFILES[profile].manufacturer
            )
        finally:
            await chan.at.close()


async def test_cnum_without_number_and_cops_unregistered() -> None:
    async with FakeModem("quectel", operator=None) as modem:
        chan = await open_channel(modem)
        try:
            assert parse_cnum((await chan.at.command("AT+CNUM")).lines) is None
            assert parse_cops((await chan.at.command("AT+COPS?")).lines) is None
        finally:
            await chan.at.close()


async def test_sim_pin_flow() -> None:
    async with FakeModem("simcom", pin="1234") as modem:
        chan = await open_channel(modem)
        try:
            await chan.at.command("AT+CMEE=1")
            assert parse_cpin((await chan.at.command("AT+CPIN?")).lines) == "SIM PIN"
            with pytest.raises(AtError) as info:
                await chan.at.command("AT+CPMS?")
            assert (info.value.kind, info.value.code) == ("+CMS ERROR", 311)
            with pytest.raises(AtError) as info:
                await chan.at.command('AT+CPIN="0000"')
            assert (info.value.kind, info.value.code) == ("+CME ERROR", 16)
            assert (await chan.at.command('AT+CPIN="1234"')).lines == ()
            # the modem announces readiness as URCs after the OK
            urc = await chan.next_urc("+CPIN")
            assert urc.args == "READY"
            await chan.next_urc("SMS Ready")
            assert parse_cpin((await chan.at.command("AT+CPIN?")).lines) == "READY"
            await chan.at.command("AT+CMEE=2")
            with pytest.raises(AtError) as info:
                await chan.at.command("AT+CMGR=99")
            assert info.value.text == "invalid memory index"
            assert info.value.code is None
        finally:
            await chan.at.close()


# --------------------------------------------------------------------------- SMS flow


async def test_cmti_arrives_while_a_command_is_in_flight(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    modem.slow = 1.0  # margin for a loaded machine: the URC must come well before the answer
    task = asyncio.create_task(chan.at.command("AT+CSQ"))
    await modem.wait_command("AT+CSQ", WAIT)
    index = modem.deliver(PDU)
    urc = await chan.next_urc("+CMTI")
    assert not task.done()  # the URC overtook the answer
    assert parse_cmti(urc.args) == ("SM", index)
    response = await asyncio.wait_for(task, WAIT)
    assert response.lines == ("+CSQ: 20,99",)
    modem.slow = 0.0
    listing = parse_cmgl((await chan.at.command("AT+CMGL=4")).lines)
    assert listing == [(index, 0, PDU)]
    assert parse_cmgr((await chan.at.command(f"AT+CMGR={index}")).lines) == (1, PDU)


async def test_direct_delivery_with_cmt(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    await chan.at.command("AT+CNMI=2,2,0,0,0")
    assert modem.deliver(PDU) is None
    urc = await chan.next_urc("+CMT")
    assert urc.pdu == PDU
    assert urc.args == ",30"
    assert modem.used == 0


async def test_cpms_counts_change_after_cmgd(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    first = modem.deliver(PDU)
    second = modem.deliver(PDU2)
    assert (first, second) == (1, 2)
    await chan.next_urc("+CMTI")
    await chan.next_urc("+CMTI")
    assert parse_cpms((await chan.at.command("AT+CPMS?")).lines)[0] == (2, 30)
    await chan.at.command("AT+CMGD=1")
    assert parse_cpms((await chan.at.command("AT+CPMS?")).lines)[0] == (1, 30)
    assert modem.deleted == [1]
    assert parse_cmgr((await chan.at.command("AT+CMGR=1")).lines) is None
    await chan.at.command("AT+CMGL=4")  # marks the rest read
    await chan.at.command("AT+CMGD=1,1")  # delete all read
    assert modem.deleted == [1, 2]
    assert parse_cpms((await chan.at.command('AT+CPMS="SM","SM","SM"')).lines) == [(0, 30)] * 3


async def test_full_storage_keeps_the_sms_pending_until_space_frees(tmp_path: Path) -> None:
    async with FakeModem("huawei", capacity=2) as modem:
        chan = await open_channel(modem)
        try:
            await startup(chan)
            assert [modem.deliver(PDU), modem.deliver(PDU), modem.deliver(PDU2)] == [0, 1, None]
            assert [parse_cmti((await chan.next_urc("+CMTI")).args)[1] for _ in range(2)] == [0, 1]
            assert modem.pending == [PDU2]
            assert parse_cpms((await chan.at.command("AT+CPMS?")).lines)[0] == (2, 2)
            await chan.at.command("AT+CMGD=0")
            urc = await chan.next_urc("+CMTI")
            assert parse_cmti(urc.args) == ("SM", 0)
            assert modem.messages[0] == (0, PDU2)
            assert modem.pending == []
        finally:
            await chan.at.close()


async def test_store_silently_gives_no_indication(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    index = modem.store_silently(PDU)
    modem.emit_urc("RING")  # a marker: the URC queue is ordered
    assert (await chan.next_urc()).name == "RING"
    assert parse_cmgl((await chan.at.command("AT+CMGL=4")).lines) == [(index, 0, PDU)]


async def test_sending_with_the_prompt(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    pdu = "0011000B919771511506F00000AA05C8329BFD06"
    response = await chan.at.command("AT+CMGS=19", expect_pdu_prompt=pdu.encode())
    assert parse_cmgs(response.lines) == 1
    assert modem.sent == [pdu]


async def test_creg_urc_and_boot_banner_after_cfun_reset(chan: Channel, modem: FakeModem) -> None:
    await chan.at.command("AT+CREG=1")
    modem.set_registration(5)
    assert (await chan.next_urc("+CREG")).args == "5"
    await chan.at.command("AT+CFUN=1,1")
    names = [(await chan.next_urc()).name for _ in PROFILES["simcom"].banner]
    assert names == ["RDY", "+CFUN", "+CPIN", "Call Ready", "SMS Ready"]
    assert modem.echo  # a reset brings echo back


# ---------------------------------------------------------------------------- faults


async def test_timeout_when_silent_and_recovery(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    modem.silent = True
    started = time.monotonic()
    with pytest.raises(AtTimeout):
        await chan.at.command("AT", timeout=0.2)
    assert 0.19 <= time.monotonic() - started < 2
    with pytest.raises(AtTimeout):
        await chan.at.command("ATZ", timeout=0.2)  # a hung modem does not reset itself
    assert modem.commands[-2:] == ["AT", "ATZ"]
    modem.silent = False
    assert (await chan.at.command("AT+CSQ")).lines == ("+CSQ: 20,99",)


async def test_unplug_gives_link_closed_and_replug_works(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    index = modem.deliver(PDU)
    assert index is not None
    await chan.next_urc("+CMTI")
    modem.slow = 5.0
    task = asyncio.create_task(chan.at.command("AT+CSQ", timeout=10))
    await modem.wait_command("AT+CSQ", WAIT)
    modem.unplug()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(task, WAIT)
    assert isinstance(await asyncio.wait_for(chan.at.wait_closed(), WAIT), LinkClosed)
    assert not os.path.lexists(modem.port)
    with pytest.raises(LinkOpenError):
        await open_serial_link(modem.port)
    modem.deliver(PDU2)  # arrives while unplugged: pending
    await chan.at.close()

    modem.replug()
    assert os.path.realpath(modem.port) == modem.tty
    modem.slow = 0.0  # a test knob, not modem state: kept across replug
    new = await open_channel(modem)
    try:
        assert new.at.port == chan.at.port
        assert modem.echo
        listing = parse_cmgl((await new.at.command("AT+CMGL=4")).lines)
        assert [(i, p) for i, _, p in listing] == [(index, PDU), (index + 1, PDU2)]
    finally:
        await new.at.close()


async def test_a_port_cannot_be_opened_twice(chan: Channel, modem: FakeModem) -> None:
    with pytest.raises(LinkOpenError):
        await open_serial_link(modem.port)
    assert (await chan.at.command("AT")).lines == ()


async def test_closing_the_channel_does_not_disturb_the_modem(modem: FakeModem) -> None:
    for _ in range(3):
        chan = await open_channel(modem)
        assert (await chan.at.command("AT+CSQ")).lines == ("+CSQ: 20,99",)
        await chan.at.close()
        assert chan.at.closed


async def test_garbage_is_skipped_and_the_next_command_works(
    chan: Channel, modem: FakeModem
) -> None:
    await startup(chan)
    with capture_logs() as logs:
        modem.emit_garbage(b"\xff\xfe\x00\x81junk\r\n" + b"Z" * 10_000 + b"\r\n")
        modem.emit_urc("RING")
        assert (await chan.next_urc()).name == "RING"
        assert (await chan.at.command("AT+CSQ")).lines == ("+CSQ: 20,99",)
    skipped = [entry for entry in logs if entry["event"] == "modem.garbage_skipped"]
    assert len(skipped) == 2
    assert skipped[0]["port"] == modem.port
    assert "\\xff\\xfe" in skipped[0]["first_bytes"]
    assert skipped[1]["truncated"] is True


async def test_garbage_in_the_middle_of_an_answer(chan: Channel, modem: FakeModem) -> None:
    await startup(chan)
    modem.slow = 0.2
    task = asyncio.create_task(chan.at.command("AT+CGSN"))
    await modem.wait_command("AT+CGSN", WAIT)
    modem.emit_garbage(b"\r\n\x00\x00\x00\r\n")
    assert (await asyncio.wait_for(task, WAIT)).lines == (modem.imei,)


def _fd_budget(wanted: int) -> int:
    """Raise the soft fd limit towards ``wanted`` if allowed; return what is available."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return wanted if soft == resource.RLIM_INFINITY else min(wanted, soft)


async def test_many_modems_at_once(tmp_path: Path) -> None:
    # 160 modems with their channels use ~1100 descriptors: past select()'s FD_SETSIZE of 1024
    count = max(10, min(160, (_fd_budget(2048) - 100) // 8))
    modems = [
        FakeModem("quectel", link_dir=tmp_path, imei=f"86612304{i:07d}") for i in range(count)
    ]
    for m in modems:
        m.start()
    try:
        assert len({m.port for m in modems}) == count
        channels = [await open_channel(m) for m in modems]
        try:
            for m in modems:
                m.deliver(PDU)
            answers = await asyncio.wait_for(
                asyncio.gather(*(c.at.command("AT+CGSN") for c in channels)), 30
            )
            assert [parse_cgsn(a.lines) for a in answers] == [m.imei for m in modems]
            listings = await asyncio.wait_for(
                asyncio.gather(*(c.at.command("AT+CMGL=4") for c in channels)), 30
            )
            assert all(parse_cmgl(x.lines) == [(0, 0, PDU)] for x in listings)
        finally:
            await asyncio.gather(*(c.at.close() for c in channels))
    finally:
        for m in modems:
            m.stop()


# ------------------------------------------------------------------ own number and USSD


async def test_the_own_number_phonebook(chan: Channel, modem: FakeModem) -> None:
    modem.own_numbers = ["+79261234567"]
    await startup(chan)
    await chan.at.command('AT+CPBS="ON"')
    assert (await chan.at.command("AT+CPBS?")).lines == ('+CPBS: "ON",1,4',)
    answer = await chan.at.command("AT+CPBR=1,4")
    assert answer.lines == ('+CPBR: 1,"+79261234567",145,"Own number"',)


@pytest.mark.parametrize("form", ["text", "ucs2", "packed"])
async def test_ussd_answers_come_as_a_urc_after_ok_in_each_form(
    chan: Channel, modem: FakeModem, form: str
) -> None:
    modem.ussd["*205#"] = UssdAnswer("Nomer 79261234567", form)
    await startup(chan)
    assert (await chan.at.command('AT+CUSD=1,"*205#",15')).lines == ()
    urc = await chan.next_urc("+CUSD")
    assert parse_cusd(f"+CUSD: {urc.args}").text == "Nomer 79261234567"
    await chan.at.command('AT+CUSD=1,"*999#",15')
    assert (await chan.next_urc("+CUSD")).args == "2"  # unknown code: terminated


async def test_a_packed_only_modem_refuses_the_text_form_and_sends_the_operator_sms(
    tmp_path: Path,
) -> None:
    answer = UssdAnswer("OK", sms_from="MTS", sms_text="Vash nomer 79261234567")
    async with FakeModem("huawei-e1550", link_dir=tmp_path, ussd={"*111#": answer}) as fake:
        chan = await open_channel(fake)
        try:
            await startup(chan)
            with pytest.raises(AtError):
                await chan.at.command('AT+CUSD=1,"*111#",15')
            await chan.at.command(f'AT+CUSD=1,"{pack_request("*111#")}",15')
            await chan.next_urc("+CUSD")
            await chan.next_urc("+CMTI")  # the operator's SMS, a moment later
            assert fake.ussd_asked == ["*111#"] and fake.used == 1
        finally:
            await chan.at.close()
