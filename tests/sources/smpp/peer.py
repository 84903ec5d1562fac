"""A test ESME/SMSC end over real TCP: binds, sends short messages with any sequence number and
reads the answers. Written from the SMPP 3.4 spec on top of smpp34's codec, for driving our side."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from gateway.sources.smpp.pdu import (
    HEADER,
    Bind,
    Command,
    Header,
    ShortMessage,
    bind_body,
    encode,
    message_pdu,
    parse_header,
)


class Peer:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.seq = 0

    async def connect(self, port: int, host: str = "127.0.0.1") -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def bind(
        self, system_id: str, password: str, command: Command = Command.BIND_TRANSCEIVER
    ) -> Header:
        self.writer.write(
            encode(command, self.next_seq(), 0, bind_body(Bind(command, system_id, password)))
        )
        header, _ = await self.read()
        return header

    def send_message(self, m: ShortMessage) -> None:
        self.writer.write(message_pdu(m))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, timeout: float = 5.0) -> tuple[Header, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(HEADER.size), timeout)
        h = parse_header(head)
        body = await asyncio.wait_for(self.reader.readexactly(h.length - 16), timeout)
        return h, body

    async def read_until(self, command: int, timeout: float = 5.0) -> tuple[Header, bytes]:
        """Answers enquire_link on the way."""
        while True:
            h, body = await self.read(timeout)
            if h.command_id == Command.ENQUIRE_LINK:
                self.writer.write(encode(Command.ENQUIRE_LINK_RESP, h.seq))
                continue
            if h.command_id == command:
                return h, body

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionError:
            return True
        return isinstance(data, bytes)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def sm(
    seq: int,
    data: bytes,
    *,
    src: str = "79005556677",
    dst: str = "79001230001",
    esm_class: int = 0,
    data_coding: int = 0,
    tlvs: tuple[tuple[int, bytes], ...] = (),
    command: Command = Command.SUBMIT_SM,
) -> ShortMessage:
    return ShortMessage(command, seq, src, dst, esm_class, data_coding, data, tlvs)


def raw_pdu(command_id: int, seq: int, body: bytes = b"", length: int | None = None) -> bytes:
    n = 16 + len(body) if length is None else length
    return struct.pack(">IIII", n, command_id, 0, seq) + body
