"""Decode SMS PDUs as GSM modems print them (the encoder of the play modem: `gateway.play.pdu`).

A modem in PDU mode (AT+CMGF=0) answers +CMGR/+CMGL/+CMT with a hex string: the SMSC
information (a length octet, then the address) followed by the TPDU of 3GPP TS 23.040, whose
text uses the alphabets of 3GPP TS 23.038. Everything here is a pure function over str/bytes.
`decode_pdu` never raises anything but `DecodeError`, whatever it is given. National language
shift tables (IEs 0x24/0x25) are not supported: such texts decode with the default tables.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from gateway.errors import DecodeError

__all__ = [
    "GSM7_CHARACTERS",
    "MAX_OCTETS",
    "MAX_SEPTETS",
    "Concat",
    "Encoding",
    "PduKind",
    "Report",
    "Sms",
    "decode_pdu",
    "gsm7_decode",
    "gsm7_encode",
    "join_parts",
    "pack_septets",
    "unpack_septets",
]

# 3GPP TS 23.038 6.2.1: the default alphabet; index = septet value. 0x1B is the escape.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_ESC = 0x1B
# 23.038 6.2.1.1: the default extension table, reached by ESC.
_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}  # fmt: skip
_TO_SEPTETS: dict[str, tuple[int, ...]] = {
    **{ch: (i,) for i, ch in enumerate(_BASIC) if i != _ESC},
    **{ch: (_ESC, code) for code, ch in _EXTENSION.items()},
}
GSM7_CHARACTERS = frozenset(_TO_SEPTETS)
"""Every character the GSM-7 default alphabet and its extension table can carry."""

_HEX = re.compile(r"[0-9A-Fa-f]*")
_BCD = "0123456789*#abc"  # 23.040 9.1.2.3; 0xF is the filler
# TP-PID values that carry no text for a person: Type 0 ("silent") and data download / R-DATA.
_NON_TEXT_PIDS = frozenset({0x40, 0x7C, 0x7D, 0x7E, 0x7F})
MAX_SEPTETS, MAX_OCTETS = 160, 140
"""What one SMS carries: 160 septets of GSM-7 or 140 octets."""


class PduKind(enum.Enum):
    """What the caller should do: push DELIVER, record the others."""

    DELIVER = "deliver"  # an SMS-DELIVER with text for a person
    STATUS_REPORT = "status_report"
    OTHER = "other"  # binary/port-addressed/silent SMS, SUBMIT, reserved types


class Encoding(enum.Enum):
    """The user-data alphabet the DCS announces (23.038 section 4)."""

    GSM7 = "gsm7"
    BINARY8 = "binary8"
    UCS2 = "ucs2"


@dataclass(frozen=True)
class Concat:
    """The concatenation IE: part `seq` of `total` of the message numbered `ref`."""

    ref: int
    total: int
    seq: int
    ref_bits: Literal[8, 16] = 8


@dataclass(frozen=True)
class Report:
    """What an SMS-STATUS-REPORT says about the message we sent with reference `message_ref`."""

    message_ref: int
    status: int  # TP-ST: 0x00-0x1F delivered, 0x20-0x3F still trying, 0x40+ failed
    discharge_time: datetime | None


@dataclass(frozen=True, kw_only=True)
class Sms:
    """One decoded PDU. For a status report `sender` is the recipient the report is about."""

    kind: PduKind
    smsc: str = ""
    sender: str = ""
    sender_is_alphanumeric: bool = False
    timestamp: datetime | None = None  # also None when the network sent an impossible date
    pid: int = 0
    dcs: int = 0
    encoding: Encoding = Encoding.GSM7
    text: str = ""
    concat: Concat | None = None
    ports: tuple[int, int] | None = None  # (destination, origin) application ports
    raw: str = ""  # the PDU as given, uppercase
    data: bytes = b""  # the user data after the header, as sent (to keep binary payloads)
    reason: str = ""  # why kind is not DELIVER, for the record
    report: Report | None = None


# --- GSM-7 ---------------------------------------------------------------------------------


def gsm7_encode(text: str) -> list[int]:
    """Septets for `text`; extension characters take two. ValueError names a character that
    does not fit, so callers can fall back to UCS-2."""
    septets: list[int] = []
    for ch in text:
        code = _TO_SEPTETS.get(ch)
        if code is None:
            raise ValueError(f"{ch!r} is not in the GSM-7 alphabet")
        septets.extend(code)
    return septets


def gsm7_decode(septets: Iterable[int]) -> str:
    """Text for septets. Per 23.038 an escape before a code the extension table lacks shows the
    basic character, ESC ESC shows a space, and so does a lone escape at the end."""
    out: list[str] = []
    escaped = False
    for septet in septets:
        if not 0 <= septet <= 0x7F:
            raise DecodeError(f"invalid GSM-7 septet {septet}")
        if escaped:
            escaped = False
            out.append(_EXTENSION.get(septet, " " if septet == _ESC else _BASIC[septet]))
        elif septet == _ESC:
            escaped = True
        else:
            out.append(_BASIC[septet])
    if escaped:
        out.append(" ")
    return "".join(out)


def pack_septets(septets: Iterable[int], fill_bits: int = 0) -> bytes:
    """Pack septets LSB first after `fill_bits` zero bits (the padding that aligns GSM-7 text
    on a septet boundary after a user-data header)."""
    values = list(septets)
    if not 0 <= fill_bits <= 6 or any(not 0 <= s <= 0x7F for s in values):
        raise ValueError("septets must be 0..127 and fill_bits 0..6")
    bits = 0
    for i, septet in enumerate(values):
        bits |= septet << (fill_bits + 7 * i)
    return bits.to_bytes((fill_bits + 7 * len(values) + 7) // 8, "little")


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    """The first `count` septets packed in `data` after `fill_bits` padding bits."""
    if not 0 <= fill_bits <= 6 or count < 0:
        raise DecodeError(f"bad septet layout: count {count}, fill bits {fill_bits}")
    if fill_bits + 7 * count > 8 * len(data):
        raise DecodeError(f"{len(data)} octets cannot hold {count} septets")
    bits = int.from_bytes(data, "little") >> fill_bits
    return [(bits >> (7 * i)) & 0x7F for i in range(count)]


# --- decoding ------------------------------------------------------------------------------


class _Reader:
    """Walks the octets; running out is a DecodeError naming the field."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"PDU truncated in {what} at octet {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        chunk, self.pos = self.data[self.pos :], len(self.data)
        return chunk


def _semi_octets(octets: bytes) -> str:
    """BCD digits, low nibble first; 0xF fillers are skipped rather than fatal."""
    nibbles = (n for b in octets for n in (b & 0x0F, b >> 4))
    return "".join(_BCD[n] for n in nibbles if n != 0xF)


def _read_smsc(r: _Reader) -> str:
    length = r.byte("SMSC length")
    if length == 0:
        return ""
    if length > 12:
        raise DecodeError(f"SMSC length {length} is too long (PDU without SMSC part?)")
    toa, digits = r.byte("SMSC type"), _semi_octets(r.take(length - 1, "SMSC address"))
    return "+" + digits if (toa >> 4) & 7 == 1 and digits else digits


def _read_address(r: _Reader, what: str) -> tuple[str, bool]:
    """(address, is_alphanumeric). The length octet counts semi-octets (23.040 9.1.2.5)."""
    length = r.byte(f"{what} length")
    if length > 20:  # 10 octets: 20 digits or 11 septets
        raise DecodeError(f"{what} length {length} exceeds 20 semi-octets")
    toa = r.byte(f"{what} type")
    octets = r.take((length + 1) // 2, what)
    if (toa >> 4) & 7 == 5:
        return gsm7_decode(unpack_septets(octets, length * 4 // 7)), True
    digits = _semi_octets(octets)[:length]
    return ("+" + digits if (toa >> 4) & 7 == 1 and digits else digits), False


def _decode_timestamp(octets: bytes) -> datetime | None:
    """TP-SCTS: swapped BCD YYMMDDhhmmss, then quarter hours whose bit 3 is the sign."""
    pairs = [(b & 0x0F, b >> 4) for b in octets]  # (tens, units)
    if any(t > 9 or u > 9 for t, u in pairs[:6]) or pairs[6][1] > 9:
        return None
    yy, mo, dd, hh, mi, ss = (t * 10 + u for t, u in pairs[:6])
    quarters = (pairs[6][0] & 7) * 10 + pairs[6][1]
    offset = timedelta(minutes=-15 * quarters if pairs[6][0] & 8 else 15 * quarters)
    year = yy + (1900 if yy >= 90 else 2000)  # GSM began in 1991: 90-99 are the 1990s
    try:
        return datetime(year, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError:
        return None


def _compressed(dcs: int) -> bool:
    return dcs < 0x80 and bool(dcs & 0x20)


def _dcs_meaning(dcs: int) -> tuple[Encoding, str]:
    """(alphabet, reason it is not text or ""), per 23.038 section 4; reserved codings are read
    as GSM-7 as the spec tells receivers to."""
    group = dcs >> 4
    if group < 0x8:  # general data coding, with or without automatic deletion
        encoding = (Encoding.GSM7, Encoding.BINARY8, Encoding.UCS2, Encoding.GSM7)[(dcs >> 2) & 3]
        if _compressed(dcs):
            return encoding, "compressed user data"
    elif group == 0xC:
        return Encoding.GSM7, "message waiting indication (discard)"
    elif group == 0xE:
        encoding = Encoding.UCS2
    elif group == 0xF:
        encoding = Encoding.BINARY8 if dcs & 0x04 else Encoding.GSM7
    else:  # 0x8-0xB reserved, 0xD message waiting (store, GSM-7)
        encoding = Encoding.GSM7
    return encoding, "8-bit data" if encoding is Encoding.BINARY8 else ""


def _parse_header(header: bytes) -> tuple[Concat | None, tuple[int, int] | None]:
    """Concatenation and port IEs from a user-data header; other IEs are skipped and a
    malformed concatenation IE is ignored, as 23.040 9.2.3.24.1 asks."""
    concat: Concat | None = None
    ports: tuple[int, int] | None = None
    i = 0
    while i < len(header):
        if i + 2 > len(header) or i + 2 + header[i + 1] > len(header):
            raise DecodeError(f"user data header truncated in the IE at offset {i}")
        iei, value = header[i], header[i + 2 : i + 2 + header[i + 1]]
        i += 2 + len(value)
        if iei == 0x00 and len(value) == 3 and 1 <= value[2] <= value[1]:
            concat = Concat(value[0], value[1], value[2], 8)
        elif iei == 0x08 and len(value) == 4 and 1 <= value[3] <= value[2]:
            concat = Concat(value[0] << 8 | value[1], value[2], value[3], 16)
        elif iei == 0x04 and len(value) == 2:
            ports = (value[0], value[1])
        elif iei == 0x05 and len(value) == 4:
            ports = (value[0] << 8 | value[1], value[2] << 8 | value[3])
    return concat, ports


def _ucs2_with_lone_surrogates(data: bytes) -> str:
    text = data[: len(data) & ~1].decode("utf-16-be", "surrogatepass")
    return text + "\ufffd" if len(data) % 2 else text


def _mend_surrogates(text: str) -> str:
    """Join surrogate halves into their character; a half left alone becomes U+FFFD."""
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")


def _decode_deliver(r: _Reader, first: int, smsc: str, raw: str) -> Sms:
    sender, alphanumeric = _read_address(r, "originating address")
    pid, dcs = r.byte("TP-PID"), r.byte("TP-DCS")
    timestamp = _decode_timestamp(r.take(7, "TP-SCTS"))
    udl, ud = r.byte("TP-UDL"), r.rest()
    encoding, reason = _dcs_meaning(dcs)
    gsm7 = encoding is Encoding.GSM7
    limit, needed = (MAX_SEPTETS, (udl * 7 + 7) // 8) if gsm7 else (MAX_OCTETS, udl)
    if udl > limit:
        raise DecodeError(f"TP-UDL {udl} exceeds {limit}")
    if len(ud) < needed:
        raise DecodeError(f"TP-UDL {udl} needs {needed} octets of user data, got {len(ud)}")
    # 23.040 9.2.3.16: octets past what TP-UDL covers are ignored (a SIM slot's stale tail,
    # modem padding); they never reach the text or the data.
    ud = ud[:needed]
    concat, ports, start = None, None, 0
    if first & 0x40:  # TP-UDHI
        start = ud[0] + 1 if ud else 1
        header_units = (start * 8 + 6) // 7 if gsm7 else start
        if header_units > udl:
            raise DecodeError(f"user data header of {start} octets exceeds TP-UDL {udl}")
        concat, ports = _parse_header(ud[1:start])
    data, text = ud[start:], ""
    if gsm7 and not _compressed(dcs):
        header_septets = (start * 8 + 6) // 7
        fill = header_septets * 7 - start * 8
        text = gsm7_decode(unpack_septets(data, udl - header_septets, fill))
    elif encoding is Encoding.UCS2 and not _compressed(dcs):
        text = _mend_surrogates(_ucs2_with_lone_surrogates(data))
    if pid in _NON_TEXT_PIDS:
        reason = f"TP-PID 0x{pid:02X} carries no text for a person"
    elif ports is not None and not reason:
        reason = f"addressed to application port {ports[0]}"
    return Sms(
        kind=PduKind.OTHER if reason else PduKind.DELIVER,
        smsc=smsc,
        sender=sender,
        sender_is_alphanumeric=alphanumeric,
        timestamp=timestamp,
        pid=pid,
        dcs=dcs,
        encoding=encoding,
        text=text,
        concat=concat,
        ports=ports,
        raw=raw,
        data=data,
        reason=reason,
    )


def _decode_status_report(r: _Reader, smsc: str, raw: str) -> Sms:
    message_ref = r.byte("TP-MR")
    recipient, alphanumeric = _read_address(r, "recipient address")
    timestamp = _decode_timestamp(r.take(7, "TP-SCTS"))
    discharge = _decode_timestamp(r.take(7, "TP-DT"))
    status = r.byte("TP-ST")
    return Sms(
        kind=PduKind.STATUS_REPORT,
        smsc=smsc,
        sender=recipient,
        sender_is_alphanumeric=alphanumeric,
        timestamp=timestamp,
        raw=raw,
        data=r.rest(),  # optional TP-PI and what it announces, not interpreted
        reason="status report",
        report=Report(message_ref, status, discharge),
    )


def decode_pdu(hex_str: str, *, with_smsc: bool = True) -> Sms:
    """Decode one PDU as a modem prints it. `with_smsc=False` is for modems that print the TPDU
    alone. Anything malformed raises DecodeError with the reason."""
    if not isinstance(hex_str, str):
        raise DecodeError(f"PDU must be a hex string, not {type(hex_str).__name__}")
    raw = hex_str.strip()
    if not raw:
        raise DecodeError("empty PDU")
    if len(raw) % 2 or not _HEX.fullmatch(raw):
        raise DecodeError(f"PDU is not an even number of hex digits (length {len(raw)})")
    raw = raw.upper()
    r = _Reader(bytes.fromhex(raw))
    smsc = _read_smsc(r) if with_smsc else ""
    first = r.byte("first octet")
    if first & 0x03 == 0x00:
        return _decode_deliver(r, first, smsc, raw)
    if first & 0x03 == 0x02:
        return _decode_status_report(r, smsc, raw)
    reason = "SMS-SUBMIT or SUBMIT-REPORT" if first & 0x03 == 0x01 else "reserved message type"
    return Sms(
        kind=PduKind.OTHER,
        smsc=smsc,
        encoding=Encoding.BINARY8,
        raw=raw,
        data=r.rest(),
        reason=reason,
    )


def join_parts(parts: Iterable[Sms]) -> str:
    """The full text of a concatenated message, parts taken in `seq` order. UCS-2 parts are
    re-read from their data so that an emoji whose surrogate pair a network split between two
    parts comes back whole."""
    ordered = sorted(parts, key=lambda p: p.concat.seq if p.concat else 0)
    pieces = (
        _ucs2_with_lone_surrogates(p.data)
        if p.encoding is Encoding.UCS2 and not _compressed(p.dcs)
        else p.text
        for p in ordered
    )
    return _mend_surrogates("".join(pieces))
