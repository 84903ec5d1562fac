"""Encode SMS-DELIVER and status-report PDUs, as a network would hand them to a modem.

Play code: the simulated modem, the demo, tests and benchmarks use it; the product only
decodes (`gateway.sources.modem.pdu`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from gateway.sources.modem.pdu import (
    GSM7_CHARACTERS,
    MAX_OCTETS,
    MAX_SEPTETS,
    Concat,
    Encoding,
    gsm7_encode,
    pack_septets,
)

__all__ = ["encode_deliver", "encode_status_report", "split_deliver"]

_NUMBER = re.compile(r"\+?[0-9]{1,20}")


def _encode_semi_octets(digits: str) -> bytes:
    padded = digits + "F" * (len(digits) % 2)
    return bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))


def _encode_smsc(smsc: str) -> bytes:
    if not smsc:
        return b"\x00"
    if not _NUMBER.fullmatch(smsc):
        raise ValueError(f"SMSC {smsc!r} must be digits with an optional +")
    body = bytes([0x91 if smsc[0] == "+" else 0x81]) + _encode_semi_octets(smsc.lstrip("+"))
    return bytes([len(body)]) + body


def _encode_address(address: str) -> bytes:
    """Numbers as BCD (TON international with a leading +), anything else as TON 101 GSM-7."""
    if not address:
        return b"\x00\x81"
    if _NUMBER.fullmatch(address):
        digits = address.lstrip("+")
        toa = 0x91 if address[0] == "+" else 0x81
        return bytes([len(digits), toa]) + _encode_semi_octets(digits)
    septets = gsm7_encode(address)
    if len(septets) > 11:
        raise ValueError(f"alphanumeric address {address!r} is longer than 11 septets")
    return bytes([(len(septets) * 7 + 3) // 4, 0xD0]) + pack_septets(septets)


def _encode_timestamp(when: datetime) -> bytes:
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("timestamp must be timezone-aware")
    quarters, rest = divmod(int(offset.total_seconds()), 900)
    if rest or abs(quarters) > 79 or not 1990 <= when.year <= 2089:
        raise ValueError(f"{when} cannot be written as TP-SCTS")
    fields = [when.year % 100, when.month, when.day, when.hour, when.minute, when.second]
    octets = [(v % 10) << 4 | v // 10 for v in fields]
    tz = abs(quarters)
    octets.append((tz % 10) << 4 | tz // 10 | (0x08 if quarters < 0 else 0))
    return bytes(octets)


def _units(text: str, encoding: Encoding) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) the text takes."""
    if encoding is Encoding.GSM7:
        return len(gsm7_encode(text))
    return len(text.encode("utf-16-be", "surrogatepass")) // 2


def _choose_encoding(text: str) -> Encoding:
    return Encoding.GSM7 if all(ch in GSM7_CHARACTERS for ch in text) else Encoding.UCS2


def _concat_header(concat: Concat) -> bytes:
    if not 1 <= concat.seq <= concat.total <= 255:
        raise ValueError(f"bad concatenation {concat}")
    if concat.ref_bits == 8 and 0 <= concat.ref <= 0xFF:
        return bytes([0x05, 0x00, 0x03, concat.ref, concat.total, concat.seq])
    if concat.ref_bits == 16 and 0 <= concat.ref <= 0xFFFF:
        ref = concat.ref.to_bytes(2, "big")
        return bytes([0x06, 0x08, 0x04, *ref, concat.total, concat.seq])
    raise ValueError(f"reference {concat.ref} does not fit {concat.ref_bits} bits")


def _user_data(text: str, encoding: Encoding, header: bytes) -> tuple[int, bytes]:
    """(TP-UDL, TP-UD) for the text after `header` (which includes its length octet)."""
    if encoding is Encoding.GSM7:
        header_septets = (len(header) * 8 + 6) // 7
        septets = gsm7_encode(text)
        udl = header_septets + len(septets)
        if udl > MAX_SEPTETS:
            raise ValueError(f"{udl} septets do not fit one SMS; use split_deliver")
        return udl, header + pack_septets(septets, header_septets * 7 - len(header) * 8)
    if encoding is Encoding.UCS2:
        ud = header + text.encode("utf-16-be", "surrogatepass")
        if len(ud) > MAX_OCTETS:
            raise ValueError(f"{len(ud)} octets do not fit one SMS; use split_deliver")
        return len(ud), ud
    raise ValueError("encode_deliver writes text only (GSM7 or UCS2)")


def encode_deliver(
    sender: str,
    text: str,
    *,
    smsc: str = "+79000000000",
    timestamp: datetime | None = None,
    encoding: Encoding | None = None,
    concat: Concat | None = None,
) -> str:
    """An SMS-DELIVER as a modem would print it (uppercase hex with the SMSC part). Encoding
    defaults to GSM-7 when every character fits, else UCS-2 (which keeps lone surrogates, so
    tests can reproduce networks that split an emoji between parts)."""
    encoding = encoding or _choose_encoding(text)
    header = _concat_header(concat) if concat else b""
    udl, ud = _user_data(text, encoding, header)
    first = 0x44 if header else 0x04  # TP-MMS set: no more messages waiting
    dcs = 0x00 if encoding is Encoding.GSM7 else 0x08
    when = _encode_timestamp(timestamp or datetime.now(UTC).replace(microsecond=0))
    tpdu = bytes([first]) + _encode_address(sender) + bytes([0x00, dcs]) + when + bytes([udl])
    return (_encode_smsc(smsc) + tpdu + ud).hex().upper()


def split_deliver(
    sender: str,
    text: str,
    *,
    ref: int,
    smsc: str = "+79000000000",
    timestamp: datetime | None = None,
    encoding: Encoding | None = None,
) -> list[str]:
    """The PDUs a network delivers for `text`: one plain PDU when it fits, else concatenated
    parts of 153 septets (152 with a 16-bit ref) or 67 UCS-2 units (66), never splitting an
    escape sequence or a surrogate pair. A ref above 255 uses the 16-bit reference IE."""
    encoding = encoding or _choose_encoding(text)
    if encoding is Encoding.BINARY8:
        raise ValueError("split_deliver writes text only (GSM7 or UCS2)")
    if not 0 <= ref <= 0xFFFF:
        raise ValueError(f"reference {ref} is not 0..65535")
    timestamp = timestamp or datetime.now(UTC).replace(microsecond=0)
    single = MAX_SEPTETS if encoding is Encoding.GSM7 else MAX_OCTETS // 2
    if _units(text, encoding) <= single:
        return [encode_deliver(sender, text, smsc=smsc, timestamp=timestamp, encoding=encoding)]
    ref_bits: Literal[8, 16] = 16 if ref > 0xFF else 8
    header_len = 6 if ref_bits == 8 else 7  # UDHL + IE 0x00 (5 octets) or IE 0x08 (6 octets)
    if encoding is Encoding.GSM7:
        capacity = MAX_SEPTETS - (header_len * 8 + 6) // 7
    else:
        capacity = (MAX_OCTETS - header_len) // 2
    chunks: list[str] = []
    current, used = "", 0
    for ch in text:
        cost = _units(ch, encoding)
        if used + cost > capacity:
            chunks.append(current)
            current, used = "", 0
        current, used = current + ch, used + cost
    chunks.append(current)
    if len(chunks) > 255:
        raise ValueError(f"text needs {len(chunks)} parts; at most 255 exist")
    return [
        encode_deliver(
            sender,
            chunk,
            smsc=smsc,
            timestamp=timestamp,
            encoding=encoding,
            concat=Concat(ref, len(chunks), seq, ref_bits),
        )
        for seq, chunk in enumerate(chunks, 1)
    ]


def encode_status_report(
    recipient: str,
    *,
    message_ref: int = 0,
    status: int = 0,
    smsc: str = "+79000000000",
    timestamp: datetime | None = None,
    discharge_time: datetime | None = None,
) -> str:
    """A minimal SMS-STATUS-REPORT (no optional fields), uppercase hex with the SMSC part."""
    if not (0 <= message_ref <= 0xFF and 0 <= status <= 0xFF):
        raise ValueError("message_ref and status are single octets")
    timestamp = timestamp or datetime.now(UTC).replace(microsecond=0)
    tpdu = (
        bytes([0x06, message_ref])
        + _encode_address(recipient)
        + _encode_timestamp(timestamp)
        + _encode_timestamp(discharge_time or timestamp)
        + bytes([status])
    )
    return (_encode_smsc(smsc) + tpdu).hex().upper()
