"""What an SMPP short message says: its text by data_coding, its UDH or sar_* concatenation, and
whether it is text at all (delivery receipts and binary data are kept, never pushed).

Pure functions over a decoded PDU; the session layers call `read_content` and commit the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.errors import DecodeError
from gateway.fields import MAX_TEXT
from gateway.outbox import Hold
from gateway.sources.modem.pdu import gsm7_decode

from .pdu import ShortMessage

__all__ = ["Alphabet", "Concat", "Content", "decode_text", "read_content", "split_udh"]

# How an SMSC means data_coding 0 ("SMSC default alphabet"): GSM 7-bit one septet an octet
# (the common case), or Latin-1 or IA5 (ASCII) on SMSCs configured that way.
Alphabet = Literal["gsm", "latin1", "ia5"]

TLV_MESSAGE_PAYLOAD = 0x0424
TLV_SAR_MSG_REF_NUM = 0x020C
TLV_SAR_TOTAL_SEGMENTS = 0x020E
TLV_SAR_SEGMENT_SEQNUM = 0x020F
TLV_RECEIPTED_MESSAGE_ID = 0x001E

UDHI = 0x40  # esm_class: short_message starts with a user data header
MESSAGE_TYPE = 0x3C  # esm_class bits 5..2: 0 = a short message; else a receipt or ack

# data_coding values that name a legacy character set (SMPP 3.4 section 5.2.19).
_CHARSETS = {
    1: "ascii",
    3: "latin-1",
    5: "shift_jis",
    6: "iso8859-5",
    7: "iso8859-8",
    0x0A: "iso2022_jp",
    0x0D: "shift_jis",  # Extended Kanji JIS (JIS X 0212): Shift-JIS is its common carrier
    0x0E: "euc_kr",
}


@dataclass(frozen=True)
class Concat:
    ref: int
    total: int
    seq: int
    bits: int  # 8 or 16 (UDH), 0 for sar_* TLVs


@dataclass(frozen=True)
class Content:
    text: str
    hold: Hold | None  # NOT_TEXT: a receipt or binary data; UNDECODABLE: a reserved coding
    concat: Concat | None
    raw: str  # the user data as hex, kept with held messages


def split_udh(data: bytes) -> tuple[bytes, bytes] | None:
    """(header IEs, the rest) of user data that starts with a UDH; None when its length byte
    points past the data."""
    if not data:
        return None
    length = data[0]
    if length + 1 > len(data):
        return None
    return data[1 : length + 1], data[length + 1 :]


def udh_concat(ies: bytes) -> Concat | None:
    """The concatenation IE wherever it is among the header's elements (the last one wins, as
    in 23.040); malformed elements end the walk."""
    found = None
    pos = 0
    while pos + 2 <= len(ies):
        iei, length = ies[pos], ies[pos + 1]
        value = ies[pos + 2 : pos + 2 + length]
        if len(value) < length:
            break
        if iei == 0x00 and length == 3:
            found = Concat(value[0], value[1], value[2], 8)
        elif iei == 0x08 and length == 4:
            found = Concat(value[0] << 8 | value[1], value[2], value[3], 16)
        pos += 2 + length
    return found


def _sar_concat(m: ShortMessage) -> Concat | None:
    ref, total, seq = (
        m.tlv(TLV_SAR_MSG_REF_NUM),
        m.tlv(TLV_SAR_TOTAL_SEGMENTS),
        m.tlv(TLV_SAR_SEGMENT_SEQNUM),
    )
    if ref is None or total is None or seq is None or not (ref and len(total) == len(seq) == 1):
        return None
    return Concat(int.from_bytes(ref[:2], "big"), total[0], seq[0], 0)


def _ucs2(data: bytes) -> str:
    """UTF-16BE, surrogate pairs joined; a lone half (a pair split across parts) is kept so the
    store can join it with its other half."""
    text = data[: len(data) & ~1].decode("utf-16-be", "surrogatepass")
    return text + "\ufffd" if len(data) % 2 else text


def _gsm(data: bytes) -> str:
    try:
        return gsm7_decode(data)
    except DecodeError:  # an octet above 0x7F: not unpacked GSM-7 after all
        return data.decode("latin-1")


def decode_text(data_coding: int, data: bytes, alphabet: Alphabet = "gsm") -> str | None:
    """The text of `data` by `data_coding`; None for binary (8-bit data, compressed)."""
    dc = data_coding
    if dc == 0:
        if alphabet == "latin1":
            return data.decode("latin-1")
        if alphabet == "ia5":
            return data.decode("ascii", "replace")
        return _gsm(data)
    if dc == 8:
        return _ucs2(data)
    if dc in (2, 4):
        return None
    if dc in _CHARSETS:
        return data.decode(_CHARSETS[dc], "replace")
    group = dc >> 4
    if group <= 3:  # 00xx: general data coding; bit 5 = compressed, bits 3-2 = alphabet
        if dc & 0x20:
            return None
        alpha = (dc >> 2) & 3
        if alpha == 0:
            return _gsm(data)
        if alpha == 2:
            return _ucs2(data)
        return None  # 8-bit data, or reserved
    if group in (0xC, 0xD):  # message waiting, GSM-7
        return _gsm(data)
    if group == 0xE:  # message waiting, UCS-2
        return _ucs2(data)
    if group == 0xF:  # data coding / message class: bit 2 = 8-bit data
        return None if dc & 0x04 else _gsm(data)
    raise LookupError(dc)  # reserved groups: the caller's fallback


def read_content(m: ShortMessage, alphabet: Alphabet = "gsm") -> Content:
    """The message's text and concatenation; receipts and binary held `not_text`, reserved
    data_coding values held `undecodable` with their text read as Latin-1 for a person."""
    payload = m.tlv(TLV_MESSAGE_PAYLOAD)
    data = payload if payload is not None and not m.short_message else m.short_message
    raw = data.hex()[:MAX_TEXT]  # kept with held messages; the field rules cap it
    if m.esm_class & MESSAGE_TYPE:
        return Content(data.decode("latin-1"), Hold.NOT_TEXT, None, raw)
    concat = None
    if m.esm_class & UDHI:
        split = split_udh(data)
        if split is None:
            return Content(data.decode("latin-1"), Hold.UNDECODABLE, None, raw)
        ies, data = split
        concat = udh_concat(ies)
    if concat is None:
        concat = _sar_concat(m)
    if concat is not None and not (concat.total >= 2 and 1 <= concat.seq <= concat.total):
        concat = None  # "part 1 of 1" or a broken count: the message stands alone
    try:
        text = decode_text(m.data_coding, data, alphabet)
    except LookupError:
        return Content(data.decode("latin-1"), Hold.UNDECODABLE, None, raw)
    if text is None:
        return Content("", Hold.NOT_TEXT, None, raw)
    if concat is None:  # a whole message: a lone surrogate half has no partner to wait for
        text = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")
    return Content(text, None, concat, raw)
