"""Pure USSD helpers: the request in its text or GSM-7 packed form, ``+CUSD`` replies decoded,
and the own number picked out of an operator's answer.

``AT+CUSD=1,"<str>",<dcs>`` (3GPP 27.007) carries the request; most modems take the code as
text (``AT+CUSD=1,"*111#",15``), some (older Huawei E1550/E160 firmware) want it GSM-7 packed
and hex encoded (``AT+CUSD=1,"AA180C3602",15``). Replies come back as ``+CUSD: <m>[,<str>,<dcs>]``
where ``<str>`` is, depending on the modem and its ``+CSCS``, plain text, the GSM-7 septets
packed into hex, or UCS-2 as hex; ``<dcs>`` follows the CBS data coding scheme of 3GPP 23.038
section 5 (15 = GSM-7 unspecified language, 72 = 0x48 = UCS-2, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import DecodeError
from gateway.sources.modem.answers import split_result
from gateway.sources.modem.pdu import gsm7_decode, gsm7_encode, pack_septets, unpack_septets

__all__ = [
    "CUSD_STATUS",
    "UssdReply",
    "decode_ussd_text",
    "number_in",
    "pack_request",
    "parse_cusd",
    "unpack_request",
]

#: 27.007 ``+CUSD`` ``<m>``: what the network says about the session.
CUSD_STATUS = {
    0: "no further action required",
    1: "further action required",
    2: "terminated by the network",
    3: "another local client has responded",
    4: "operation not supported",
    5: "network time out",
}
_CR = 0x0D
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_MAX_REPLY = 4096  # characters of <str>; a USSD page is at most 182 characters (160 octets)


@dataclass(frozen=True)
class UssdReply:
    """One ``+CUSD`` line: ``status`` (``<m>``), the text (``None`` without ``<str>``), ``dcs``."""

    status: int
    text: str | None = None
    dcs: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in (0, 1)

    @property
    def meaning(self) -> str:
        return CUSD_STATUS.get(self.status, f"status {self.status}")


def pack_request(code: str) -> str:
    """The packed-request form: ``code`` as GSM-7 septets packed into octets, upper-case hex.

    When the last octet would end with seven spare bits, a CR fills them (23.038 6.1.2.3.1), so
    the network does not read an ``@``. ValueError when ``code`` is not GSM-7.
    """
    septets = gsm7_encode(code)
    if len(septets) % 8 == 7:
        septets.append(_CR)
    return pack_septets(septets).hex().upper()


def unpack_request(packed: str) -> str:
    """The inverse of :func:`pack_request` (what a modem does with it); DecodeError for junk."""
    if not _HEX.fullmatch(packed):
        raise DecodeError(f"not packed hex: {packed[:40]!r}")
    return _unpack_gsm7(bytes.fromhex(packed))


def _unpack_gsm7(data: bytes) -> str:
    count = len(data) * 8 // 7
    septets = unpack_septets(data, count)
    if len(data) * 8 % 7 == 0 and septets and septets[-1] == _CR:
        septets.pop()  # the filler CR of a last octet with seven spare bits
    elif len(data) * 8 % 7 == 0 and septets and septets[-1] == 0 and len(septets) % 8 == 0:
        septets.pop()  # senders that fill with zeros instead: not a real '@'
    return gsm7_decode(septets)


def _alphabet(dcs: int) -> str:
    """``"gsm7"``, ``"ucs2"``, ``"ucs2-lang"`` (two language characters first) or ``"8bit"``
    for a CBS data coding scheme (23.038 section 5); unknown groups are read as GSM-7."""
    group = dcs >> 4
    if group in (0x0, 0x2, 0x3) or dcs == 0x10:
        return "gsm7"
    if dcs == 0x11:
        return "ucs2-lang"
    if group in (0x4, 0x5, 0x6, 0x7, 0x9):  # general data coding (0x9: with a header)
        return {0: "gsm7", 1: "8bit", 2: "ucs2"}.get((dcs >> 2) & 0x3, "gsm7")
    if group == 0xF:
        return "8bit" if dcs & 0x04 else "gsm7"
    return "gsm7"


def decode_ussd_text(text: str, dcs: int | None) -> str:
    """The readable text of a ``+CUSD`` ``<str>``.

    UCS-2 schemes: hex with a multiple of four digits is decoded, anything else is taken as
    already decoded by the modem. GSM-7 schemes: a string of decimal digits is text (an answer
    that is only a number); other hex (even length) is packed septets; the rest is text the
    modem decoded. 8-bit data as hex is read as Latin-1. Raises DecodeError only for hex that
    claims to be UCS-2 and is not (a lone surrogate).
    """
    alphabet = _alphabet(dcs) if dcs is not None else "gsm7"
    is_hex = _HEX.fullmatch(text) is not None
    if alphabet in ("ucs2", "ucs2-lang"):
        if is_hex and len(text) % 4 == 0:
            data = bytes.fromhex(text)
            if alphabet == "ucs2-lang" and len(data) >= 2:
                data = data[2:]  # two GSM-7 language characters packed into two octets
            try:
                return data.decode("utf-16-be")
            except UnicodeDecodeError as exc:
                raise DecodeError(f"+CUSD: bad UCS-2 text: {exc}") from None
        return text
    if alphabet == "8bit":
        return bytes.fromhex(text).decode("latin-1") if is_hex else text
    if is_hex and not text.isdigit():
        if len(text) % 4 == 0 and _looks_like_ucs2(text):
            return bytes.fromhex(text).decode("utf-16-be")  # a modem set to +CSCS="UCS2"
        return _unpack_gsm7(bytes.fromhex(text))
    return text


def _looks_like_ucs2(text: str) -> bool:
    """Hex that is UCS-2 of Latin or Cyrillic text: every high octet 00 or 04."""
    data = bytes.fromhex(text)
    highs = data[0::2]
    if not all(h in (0x00, 0x04) for h in highs):
        return False
    try:
        decoded = data.decode("utf-16-be")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n" for ch in decoded)


def parse_cusd(line: str) -> UssdReply:
    """``+CUSD: 0,"Your number 79001234567",15`` -> ``UssdReply(0, "Your number ...", 15)``.

    Takes the line with or without its ``+CUSD:`` name. DecodeError for anything that is not
    a ``+CUSD`` reply (garbage in: a clear error, never another exception).
    """
    name, args = split_result(line)
    if name != line and name.upper() != "+CUSD":
        raise DecodeError(f"not a +CUSD line: {line[:40]!r}")
    body = args if name != line else line
    body = body.strip()
    head, _, rest = body.partition(",")
    head = head.strip()
    if not (head.isascii() and head.isdigit() and len(head) <= 2):
        raise DecodeError(f"+CUSD: bad status {head[:20]!r}")
    status = int(head)
    rest = rest.strip()
    if not rest:
        return UssdReply(status)
    if rest.startswith('"'):
        end = rest.rfind('"')
        if end == 0:
            raise DecodeError("+CUSD: unterminated string")
        raw, tail = rest[1:end], rest[end + 1 :].strip()
    else:  # unquoted <str> (some firmwares)
        raw, _, tail = rest.rpartition(",") if "," in rest else (rest, "", "")
        tail = tail.strip()
        raw = raw.strip()
    if len(raw) > _MAX_REPLY:
        raise DecodeError(f"+CUSD: reply of {len(raw)} characters")
    dcs: int | None = None
    if tail:
        value = tail.lstrip(",").strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 255):
            raise DecodeError(f"+CUSD: bad dcs {value[:20]!r}")
        dcs = int(value)
    return UssdReply(status, decode_ussd_text(raw, dcs), dcs)


def number_in(text: str, pattern: str | re.Pattern[str], prefix: str = "") -> str | None:
    """The number an operator's answer holds: the pattern's first group (else its whole match),
    digits only, with ``prefix`` (the country code an operator leaves out) put before it;
    ``None`` when the pattern does not match or the result is not 6-15 digits."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    m = compiled.search(text)
    if m is None:
        return None
    found = m.group(1) if compiled.groups >= 1 else m.group(0)
    digits = "".join(ch for ch in found or "" if ch.isascii() and ch.isdigit())
    if not digits:
        return None
    digits = prefix + digits
    return digits if 6 <= len(digits) <= 15 else None
