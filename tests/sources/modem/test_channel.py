"""AtChannel over a memory link: one command in flight, typed errors, URCs handed apart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.errors import GatewayError
from gateway.sources.modem.answers import ICCID_PREFIXES, parse_cmgr, parse_cmgs, parse_iccid
from gateway.sources.modem.channel import AtChannel, AtError, AtResponse, AtTimeout
from gateway.sources.modem.lines import Urc
from gateway.sources.modem.serial_link import LinkClosed
from tests.sources.modem.conftest import SlowToStopLink

WAIT = 5.0


class MemoryLink:
    """A scripted modem: ``respond(written_command) -> bytes`` answers each written line."""

    def __init__(self, respond: Callable[[bytes], bytes] | None = None) -> None:
        self.name = "memory"
        self.written: list[bytes] = []
        self.closed = False
        self._respond = respond
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.wrote = asyncio.Event()

    def push(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    async def read(self) -> bytes:
        return await self._incoming.get()

    def write(self, data: bytes) -> None:
        if self.closed:
            raise LinkClosed("memory: closed")
        self.written.append(data)
        self.wrote.set()
        if self._respond is not None:
            answer = self._respond(data)
            if answer:
                self.push(answer)

    async def close(self) -> None:
        self.closed = True


async def open_memory(
    respond: Callable[[bytes], bytes] | None = None,
) -> tuple[AtChannel, MemoryLink, list[Urc]]:
    link = MemoryLink(respond)
    urcs: list[Urc] = []
    channel = AtChannel(link, on_urc=urcs.append)
    channel.start()
    return channel, link, urcs


async def test_channel_ok_and_info_lines() -> None:
    channel, link, _ = await open_memory(lambda _: b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    response = await channel.command("AT+CSQ")
    assert response == AtResponse("AT+CSQ", ("+CSQ: 20,99",), "OK")
    assert response.first("+CSQ") == "20,99"
    assert response.first() == "+CSQ: 20,99"
    assert link.written == [b"AT+CSQ\r"]
    await channel.close()
    assert link.closed


@pytest.mark.parametrize(
    ("final", "kind", "code", "text"),
    [
        (b"ERROR", "ERROR", None, ""),
        (b"+CME ERROR: 16", "+CME ERROR", 16, "16"),
        (b"+CMS ERROR: 321", "+CMS ERROR", 321, "321"),
        (b"+CME ERROR: SIM not inserted", "+CME ERROR", None, "SIM not inserted"),
        (b"COMMAND NOT SUPPORT", "COMMAND NOT SUPPORT", None, ""),
    ],
)
async def test_channel_errors_are_typed(
    final: bytes, kind: str, code: int | None, text: str
) -> None:
    channel, _, _ = await open_memory(lambda _: b"\r\n" + final + b"\r\n")
    with pytest.raises(AtError) as info:
        await channel.command('AT+CPIN="0000"')
    assert (info.value.kind, info.value.code, info.value.text) == (kind, code, text)
    assert info.value.command == 'AT+CPIN="0000"'
    assert isinstance(info.value, GatewayError)
    await channel.close()


async def test_channel_writes_the_pdu_after_the_prompt() -> None:
    def respond(data: bytes) -> bytes:
        if data.startswith(b"AT+CMGS"):
            return b"\r\n> "
        if data.endswith(b"\x1a"):
            return b"\r\n+CMGS: 7\r\n\r\nOK\r\n"
        return b""

    channel, link, _ = await open_memory(respond)
    response = await channel.command("AT+CMGS=10", expect_pdu_prompt=b"0011AA")
    assert parse_cmgs(response.lines) == 7
    assert link.written == [b"AT+CMGS=10\r", b"0011AA\x1a"]
    await channel.close()


async def test_channel_prompt_timeout_cancels_input_with_esc() -> None:
    channel, link, _ = await open_memory()
    with pytest.raises(AtTimeout):
        await channel.command("AT+CMGS=10", timeout=0.05, expect_pdu_prompt=b"00")
    assert link.written == [b"AT+CMGS=10\r", b"\x1b"]
    await channel.close()


async def test_channel_eof_fails_the_command_and_later_ones() -> None:
    channel, link, _ = await open_memory()
    task = asyncio.create_task(channel.command("AT", timeout=5))
    await asyncio.wait_for(link.wrote.wait(), WAIT)  # the command is in flight
    link.push(b"")
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(task, 1)
    assert isinstance(await asyncio.wait_for(channel.wait_closed(), 1), LinkClosed)
    with pytest.raises(LinkClosed):
        await channel.command("AT")
    await channel.close()


async def test_channel_survives_a_failing_urc_callback() -> None:
    link = MemoryLink(lambda _: b"\r\nOK\r\n")
    seen: list[Urc] = []

    def on_urc(urc: Urc) -> None:
        seen.append(urc)
        raise RuntimeError("boom")

    async with AtChannel(link, on_urc=on_urc) as channel:
        link.push(b"\r\nRING\r\n")
        assert (await channel.command("AT")).lines == ()
        assert seen == [Urc("RING")]


async def test_channel_serialises_concurrent_commands() -> None:
    answers = {b"AT+CGMI\r": b"\r\nX\r\n\r\nOK\r\n", b"AT+CGMM\r": b"\r\nY\r\n\r\nOK\r\n"}
    channel, _, _ = await open_memory(lambda data: answers[data])
    first, second = await asyncio.gather(channel.command("AT+CGMI"), channel.command("AT+CGMM"))
    assert (first.lines, second.lines) == (("X",), ("Y",))
    await channel.close()


async def test_channel_rejects_bad_commands() -> None:
    channel, _, _ = await open_memory()
    for bad in ["CSQ", "AT\r+CSQ", "AT+CMGS=1\x1a"]:
        with pytest.raises(ValueError, match="not a single AT command"):
            await channel.command(bad)
    await channel.close()


async def test_an_unknown_urc_before_the_answer_goes_to_on_urc_not_into_the_answer() -> None:
    pdu = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
    answer = f"\r\n+CSQN: 20,99\r\n\r\n+CMGR: 0,,39\r\n^BOOT:1,0,0,0,75\r\n{pdu}\r\n\r\nOK\r\n"
    channel, _, urcs = await open_memory(lambda _: answer.encode())
    response = await channel.command("AT+CMGR=3")
    assert parse_cmgr(response.lines) == (0, pdu)
    assert urcs == [Urc("+CSQN", "20,99"), Urc("^BOOT", "1,0,0,0,75")]
    await channel.close()


async def test_answer_prefixes_named_by_the_caller_belong_to_the_answer() -> None:
    channel, _, urcs = await open_memory(lambda _: b"\r\n+ICCID: 8970199123456789012\r\nOK\r\n")
    response = await channel.command("AT+CCID", answers=ICCID_PREFIXES)
    assert parse_iccid(response.lines) == "8970199123456789012" and urcs == []
    await channel.close()


async def test_a_cancel_while_close_awaits_the_reader_is_not_swallowed() -> None:
    memory = MemoryLink()
    link = SlowToStopLink(memory)
    channel = AtChannel(link, on_urc=lambda urc: None)
    channel.start()
    closer = asyncio.create_task(channel.close())
    await asyncio.wait_for(link.read_cancelled.wait(), WAIT)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(closer, WAIT)
    assert memory.closed  # the port is released all the same
    assert channel.closed
