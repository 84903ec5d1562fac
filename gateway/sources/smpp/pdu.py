"""SMPP 3.4 PDUs as values: framing, the header, and the message PDUs through smpp34's codec.

smpp34 (Rust core) decodes and encodes submit_sm and deliver_sm with their TLVs, and checks a
PDU's length against its fields. Its Python layer exposes no encoder for the small PDUs
(binds, responses, generic_nack, enquire_link, unbind), so those are written here: each is the
16-byte header with at most a few C-strings. Its sessions are not used (see README's dependency
table): the client acknowledges deliver_sm itself, and the server offers no bind check.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum

import smpp34

__all__ = [
    "HEADER",
    "MAX_PDU",
    "MESSAGES",
    "Bind",
    "Command",
    "FrameError",
    "Header",
    "PduError",
    "ShortMessage",
    "Status",
    "bind_body",
    "decode_message",
    "encode",
    "parse_bind",
    "parse_header",
    "read_pdu",
]

HEADER = struct.Struct(">IIII")
# A PDU longer than this is refused and the connection closed: the longest legal one is a
# message_payload of 64 KiB plus the fixed fields.
MAX_PDU = 70_000
RESPONSE = 0x80000000


class Command(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_TRANSMITTER = 0x00000002
    QUERY_SM = 0x00000003
    SUBMIT_SM = 0x00000004
    DELIVER_SM = 0x00000005
    UNBIND = 0x00000006
    REPLACE_SM = 0x00000007
    CANCEL_SM = 0x00000008
    BIND_TRANSCEIVER = 0x00000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    SUBMIT_MULTI = 0x00000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM_RESP = 0x80000005
    DATA_SM_RESP = 0x80000103
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK_RESP = 0x80000015


BINDS = (Command.BIND_RECEIVER, Command.BIND_TRANSMITTER, Command.BIND_TRANSCEIVER)
# The PDUs that carry an SMS to us; each is answered with its _resp and a message id.
MESSAGES = (Command.SUBMIT_SM, Command.DELIVER_SM, Command.DATA_SM)


class Status(IntEnum):
    ROK = 0x00
    RINVMSGLEN = 0x01
    RINVCMDLEN = 0x02
    RINVCMDID = 0x03
    RINVBNDSTS = 0x04
    RALYBND = 0x05
    RSYSERR = 0x08
    RINVSRCADR = 0x0A
    RINVDSTADR = 0x0B
    RBINDFAIL = 0x0D
    RINVPASWD = 0x0E
    RINVSYSID = 0x0F
    RMSGQFUL = 0x14
    RTHROTTLED = 0x58
    RX_T_APPN = 0x64  # temporary application error: the peer retries later
    RX_P_APPN = 0x65  # permanent application error: the peer gives up on this message
    RINVOPTPARSTREAM = 0xC0
    RUNKNOWNERR = 0xFF


class PduError(ValueError):
    """A PDU that cannot be read; `status` is the error to answer it with."""

    def __init__(self, message: str, status: Status = Status.RINVCMDLEN) -> None:
        super().__init__(message)
        self.status = status


class FrameError(PduError):
    """The byte stream cannot be split into PDUs any more: the connection must close."""


@dataclass(frozen=True)
class Header:
    length: int
    command_id: int
    status: int
    seq: int

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE)


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER.size:
        raise FrameError(f"{len(data)} bytes are no PDU header")
    length, command_id, status, seq = HEADER.unpack_from(data)
    if not HEADER.size <= length <= MAX_PDU:
        raise FrameError(f"command_length {length} outside {HEADER.size}..{MAX_PDU}")
    return Header(length, command_id, status, seq)


async def read_pdu(reader: asyncio.StreamReader) -> tuple[Header, bytes]:
    """The next PDU (header and the whole PDU's bytes). EOF before a header: IncompleteReadError
    with no partial bytes; a length that breaks the framing: FrameError."""
    head = await reader.readexactly(HEADER.size)
    header = parse_header(head)
    body = await reader.readexactly(header.length - HEADER.size) if header.length > 16 else b""
    return header, head + body


def encode(command_id: int, seq: int, status: int = 0, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER.size + len(body), command_id, status, seq) + body


def cstring(value: str) -> bytes:
    return value.encode("latin-1", "replace") + b"\0"


@dataclass(frozen=True)
class Bind:
    command: Command
    system_id: str
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def __repr__(self) -> str:  # the password never shows in a log or traceback
        return f"Bind({self.command.name}, system_id={self.system_id!r})"


def _cstrings(body: bytes, pos: int, limit: int) -> tuple[str, int]:
    end = body.find(b"\0", pos, pos + limit)
    if end < 0:
        raise PduError("a C-string is unterminated or too long", Status.RINVCMDLEN)
    return body[pos:end].decode("latin-1"), end + 1


def parse_bind(command: Command, body: bytes) -> Bind:
    """The fields of a bind_* PDU's body (after the header)."""
    system_id, pos = _cstrings(body, 0, 16)
    password, pos = _cstrings(body, pos, 9)
    system_type, pos = _cstrings(body, pos, 13)
    if len(body) < pos + 3:
        raise PduError("bind body ends before addr_npi", Status.RINVCMDLEN)
    version, ton, npi = body[pos], body[pos + 1], body[pos + 2]
    address_range, pos = _cstrings(body, pos + 3, 41)
    if pos != len(body):
        raise PduError("bytes after address_range", Status.RINVCMDLEN)
    return Bind(command, system_id, password, system_type, version, ton, npi, address_range)


def bind_body(bind: Bind) -> bytes:
    return (
        cstring(bind.system_id)
        + cstring(bind.password)
        + cstring(bind.system_type)
        + bytes((bind.interface_version, bind.addr_ton, bind.addr_npi))
        + cstring(bind.address_range)
    )


@dataclass(frozen=True)
class ShortMessage:
    """A submit_sm, deliver_sm or data_sm as far as an incoming SMS needs it (a data_sm has no
    short_message: its text is in the message_payload TLV)."""

    command: Command
    seq: int
    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def tlv(self, tag: int) -> bytes | None:
        for t, value in self.tlvs:
            if t == tag:
                return value
        return None


def decode_message(header: Header, pdu: bytes) -> ShortMessage:
    """A submit_sm, deliver_sm or data_sm; PduError when its fields do not add up to its
    length."""
    if header.command_id == Command.DATA_SM:
        return decode_data_sm(header, pdu)
    try:
        m = smpp34.decode(pdu)
    except smpp34.SmppError as e:
        raise PduError(f"undecodable {Command(header.command_id).name}: {e}") from e
    if not isinstance(m, smpp34.SubmitSm | smpp34.DeliverSm):
        raise PduError(f"command {header.command_id:#x} is not a short message")
    return ShortMessage(
        Command(m.command_id),
        m.sequence_number,
        m.source_addr,
        m.destination_addr,
        m.esm_class,
        m.data_coding,
        m.short_message,
        tuple((t.tag, t.value) for t in m.tlvs),
    )


def decode_data_sm(header: Header, pdu: bytes) -> ShortMessage:
    """A data_sm (SMPP 3.4, 4.7.1): the addresses, esm_class and data_coding, the text in the
    message_payload TLV. smpp34 has no decoder for it (it returns it as a RawPdu), so it is read
    here: a few C-strings and octets, then the TLVs."""
    body = pdu[HEADER.size : header.length]
    if len(pdu) != header.length:
        raise PduError(f"data_sm of {len(pdu)} bytes says command_length {header.length}")
    _, pos = _cstrings(body, 0, 6)  # service_type
    source_addr, pos = _cstrings(body, _octets(body, pos, 2), 65)
    destination_addr, pos = _cstrings(body, _octets(body, pos, 2), 65)
    start = _octets(body, pos, 3)  # esm_class, registered_delivery, data_coding
    esm_class, data_coding = body[pos], body[pos + 2]
    return ShortMessage(
        Command.DATA_SM,
        header.seq,
        source_addr,
        destination_addr,
        esm_class,
        data_coding,
        b"",
        _tlvs(body, start),
    )


def _octets(body: bytes, pos: int, n: int) -> int:
    """The position after `n` fixed octets at `pos`; PduError when the body ends first."""
    if len(body) < pos + n:
        raise PduError("the body ends inside its fixed fields", Status.RINVCMDLEN)
    return pos + n


# More TLVs than any real PDU carries (SMPP 3.4 defines about 60 tags): a body of thousands of
# empty ones would only make us spend CPU on the event loop.
MAX_TLVS = 64


def _tlvs(body: bytes, pos: int) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    while pos < len(body):
        if len(found) == MAX_TLVS:
            raise PduError(f"more than {MAX_TLVS} TLVs", Status.RINVOPTPARSTREAM)
        if len(body) < pos + 4:
            raise PduError("a TLV header is cut short", Status.RINVCMDLEN)
        tag, length = struct.unpack_from(">HH", body, pos)
        pos += 4
        if len(body) < pos + length:
            raise PduError(f"TLV {tag:#06x} runs past the PDU's end", Status.RINVCMDLEN)
        found.append((tag, body[pos : pos + length]))
        pos += length
    return tuple(found)


def message_pdu(m: ShortMessage) -> bytes:
    """Encode a submit_sm, deliver_sm or data_sm (tests, the bench, and an SMSC double)."""
    if m.command is Command.DATA_SM:
        body = (
            b"\0"  # service_type
            + bytes((1, 1)) + cstring(m.source_addr)
            + bytes((1, 1)) + cstring(m.destination_addr)
            + bytes((m.esm_class, 0, m.data_coding))
            + b"".join(struct.pack(">HH", t, len(v)) + v for t, v in m.tlvs)
        )  # fmt: skip
        return encode(Command.DATA_SM, m.seq, 0, body)
    cls = smpp34.SubmitSm if m.command is Command.SUBMIT_SM else smpp34.DeliverSm
    return cls(
        m.source_addr,
        m.destination_addr,
        m.short_message,
        esm_class=m.esm_class,
        data_coding=m.data_coding,
        tlvs=[smpp34.Tlv(tag, value) for tag, value in m.tlvs],
        sequence_number=m.seq,
    ).encode()
