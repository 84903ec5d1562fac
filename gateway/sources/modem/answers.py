"""Parsers for modem answers (AT+CSQ, +CMGL, ICCID forms, ...): pure, and garbage raises
AtDecodeError and nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from gateway.errors import DecodeError

__all__ = [
    "HEX_LINE",
    "ICCID_PREFIXES",
    "AtDecodeError",
    "parse_cgmi",
    "parse_cgmm",
    "parse_cgsn",
    "parse_cimi",
    "parse_cmgl",
    "parse_cmgr",
    "parse_cmgs",
    "parse_cmti",
    "parse_cnum",
    "parse_cops",
    "parse_cpbr",
    "parse_cpbs",
    "parse_cpin",
    "parse_cpms",
    "parse_creg",
    "parse_creg_urc",
    "parse_csq",
    "parse_iccid",
    "rssi_to_dbm",
    "split_result",
]


class AtDecodeError(DecodeError):
    """A modem answer could not be understood."""


# --------------------------------------------------------------------------------------------
# Parsers

HEX_LINE = re.compile(r"[0-9A-Fa-f]+")
_NAME = re.compile(r"([+^$%#*]?[A-Za-z][A-Za-z0-9_ ]*?)\s*:\s?(.*)", re.DOTALL)


def split_result(text: str) -> tuple[str, str]:
    """``"+CMTI: \\"SM\\",3"`` -> ``("+CMTI", "\\"SM\\",3")``; a bare word -> ``(word, "")``."""
    if text[:1] in "+^$%#*" or text.startswith("DST:"):
        m = _NAME.fullmatch(text)
        if m is not None:
            return m.group(1).strip(), m.group(2).strip()
    return text, ""


def _fields(args: str) -> list[str]:
    """Split a comma-separated result list; quoted fields keep commas; quotes removed."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in args:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise AtDecodeError(f"unbalanced quotes in {args!r}")
    out.append("".join(cur).strip())
    return out


def _int(value: str, what: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise AtDecodeError(f"{what}: expected a number, got {value!r}")
    n = int(value)
    if not lo <= n <= hi:
        raise AtDecodeError(f"{what}: {n} is out of range {lo}..{hi}")
    return n


def _prefixed(lines: Sequence[str], prefix: str) -> list[str]:
    out: list[str] = []
    for text in lines:
        name, args = split_result(text)
        if name.upper() == prefix:
            out.append(args)
    return out


def _one_prefixed(lines: Sequence[str], prefix: str) -> str:
    values = _prefixed(lines, prefix)
    if not values:
        raise AtDecodeError(f"no {prefix} line in {_show(lines)}")
    return values[0]


def _show(lines: Iterable[str]) -> str:
    text = repr(list(lines))
    return text if len(text) <= 120 else text[:117] + "..."


def _pdu(text: str, what: str) -> str:
    text = text.strip()
    if not text or len(text) % 2 or not HEX_LINE.fullmatch(text):
        raise AtDecodeError(f"{what}: not a PDU (hex, even length): {text[:40]!r}")
    return text.upper()


def parse_cmti(args: str) -> tuple[str, int]:
    """``"SM",3`` (the arguments of ``+CMTI:``/``+CDSI:``) -> ``("SM", 3)``."""
    parts = _fields(args)
    if len(parts) != 2:
        raise AtDecodeError(f"+CMTI: expected <mem>,<index>, got {args!r}")
    storage = parts[0].upper()
    if not storage.isascii() or not storage.isalnum() or len(storage) > 8:
        raise AtDecodeError(f"+CMTI: bad storage {parts[0]!r}")
    return storage, _int(parts[1], "+CMTI index", 0, 65535)


def _stat(value: str, what: str) -> int:
    return _int(value, f"{what} stat", 0, 4)


def parse_cmgl(lines: Sequence[str]) -> list[tuple[int, int, str]]:
    """``+CMGL: <index>,<stat>,[<alpha>],<length>`` + PDU line, repeated -> ``[(idx, stat, pdu)]``.

    Lines that are neither a ``+CMGL:`` header nor the PDU after one are an error.
    """
    out: list[tuple[int, int, str]] = []
    header: tuple[int, int] | None = None
    for text in lines:
        if header is not None:
            out.append((header[0], header[1], _pdu(text, "+CMGL")))
            header = None
            continue
        name, args = split_result(text)
        if name.upper() != "+CMGL":
            raise AtDecodeError(f"+CMGL: unexpected line {text[:40]!r}")
        parts = _fields(args)
        if len(parts) < 3:
            raise AtDecodeError(f"+CMGL: expected <index>,<stat>,,<length>, got {args!r}")
        _int(parts[-1], "+CMGL length", 0, 255)
        header = (_int(parts[0], "+CMGL index", 0, 65535), _stat(parts[1], "+CMGL"))
    if header is not None:
        raise AtDecodeError(f"+CMGL: header for index {header[0]} without a PDU line")
    return out


def parse_cmgr(lines: Sequence[str]) -> tuple[int, str] | None:
    """``+CMGR: <stat>,[<alpha>],<length>`` + PDU line -> ``(stat, pdu)``; no lines (an empty
    slot on most modems) or a zero-length answer -> ``None``."""
    if not lines:
        return None
    name, args = split_result(lines[0])
    if name.upper() != "+CMGR":
        raise AtDecodeError(f"+CMGR: unexpected line {lines[0][:40]!r}")
    parts = _fields(args)
    if len(parts) < 2:
        raise AtDecodeError(f"+CMGR: expected <stat>,,<length>, got {args!r}")
    stat = _stat(parts[0], "+CMGR")
    length = _int(parts[-1], "+CMGR length", 0, 255)
    if len(lines) < 2:
        if length == 0:
            return None
        raise AtDecodeError("+CMGR: header without a PDU line")
    if len(lines) > 2:
        raise AtDecodeError(f"+CMGR: unexpected extra lines {_show(lines[2:])}")
    pdu = _pdu(lines[1], "+CMGR")
    if length == 0 and pdu == "00":
        return None
    return stat, pdu


def parse_cmgs(lines: Sequence[str]) -> int:
    """``+CMGS: <mr>`` -> the message reference."""
    parts = _fields(_one_prefixed(lines, "+CMGS"))
    return _int(parts[0], "+CMGS reference", 0, 255)


def parse_cpms(lines: Sequence[str]) -> list[tuple[int, int]]:
    """``+CPMS: "SM",3,30,"SM",3,30,...`` (query) or ``+CPMS: 3,30,3,30,...`` (set) ->
    ``[(used, total), ...]`` per storage."""
    args = _one_prefixed(lines, "+CPMS")
    numbers: list[str] = []
    for part in _fields(args):
        if part.isascii() and part.isdigit():
            numbers.append(part)
        elif part.isascii() and part.isalnum() and not part.isdigit() and len(part) <= 8:
            continue  # a storage name ("SM", "ME", "MT", "SR")
        else:
            raise AtDecodeError(f"+CPMS: bad field {part!r} in {args!r}")
    if not numbers or len(numbers) % 2:
        raise AtDecodeError(f"+CPMS: expected <used>,<total> pairs, got {args!r}")
    out: list[tuple[int, int]] = []
    for used_s, total_s in zip(numbers[::2], numbers[1::2], strict=True):
        used = _int(used_s, "+CPMS used", 0, 65535)
        total = _int(total_s, "+CPMS total", 0, 65535)
        if used > total:
            raise AtDecodeError(f"+CPMS: used {used} > total {total}")
        out.append((used, total))
    return out


def parse_csq(lines: Sequence[str]) -> tuple[int | None, int | None]:
    """``+CSQ: <rssi>,<ber>`` -> ``(rssi 0..31, ber 0..7)``, ``None`` for 99 (unknown)."""
    parts = _fields(_one_prefixed(lines, "+CSQ"))
    if len(parts) != 2:
        raise AtDecodeError(f"+CSQ: expected <rssi>,<ber>, got {parts!r}")
    rssi = _int(parts[0], "+CSQ rssi", 0, 99)
    ber = _int(parts[1], "+CSQ ber", 0, 99)
    if 31 < rssi < 99:
        raise AtDecodeError(f"+CSQ: rssi {rssi} out of range")
    if 7 < ber < 99:
        raise AtDecodeError(f"+CSQ: ber {ber} out of range")
    return (None if rssi == 99 else rssi), (None if ber == 99 else ber)


def rssi_to_dbm(rssi: int) -> int:
    """27.007 ``+CSQ`` rssi 0..31 -> dBm (0 is -113 dBm or less, 31 is -51 dBm or more)."""
    if not 0 <= rssi <= 31:
        raise ValueError(f"rssi {rssi} out of range 0..31")
    return -113 + 2 * rssi


def parse_creg(lines: Sequence[str]) -> tuple[int, int]:
    """``+CREG: <n>,<stat>[,<lac>,<ci>[,<act>]]`` (the answer to ``AT+CREG?``) -> ``(n, stat)``."""
    parts = _fields(_one_prefixed(lines, "+CREG"))
    if len(parts) < 2:
        raise AtDecodeError(f"+CREG: expected <n>,<stat>, got {parts!r}")
    return _int(parts[0], "+CREG n", 0, 3), _int(parts[1], "+CREG stat", 0, 11)


def parse_creg_urc(args: str) -> int:
    """The arguments of an unsolicited ``+CREG: <stat>[,<lac>,<ci>[,<act>]]`` -> ``stat``."""
    parts = _fields(args)
    return _int(parts[0], "+CREG stat", 0, 11)


def parse_cnum(lines: Sequence[str]) -> str | None:
    """``+CNUM: ["alpha"],"<number>",<type>`` -> the first number (``None`` if there is none)."""
    for args in _prefixed(lines, "+CNUM"):
        parts = _fields(args)
        if len(parts) < 2:
            raise AtDecodeError(f"+CNUM: expected [alpha],<number>,<type>, got {args!r}")
        number = parts[1].replace(" ", "")
        if not number:
            continue
        digits = number[1:] if number.startswith("+") else number
        if not digits.isascii() or not digits.isdigit() or not 3 <= len(digits) <= 20:
            raise AtDecodeError(f"+CNUM: bad number {parts[1]!r}")
        if len(parts) >= 3 and parts[2] == "145" and not number.startswith("+"):
            number = "+" + number
        return number
    if lines and not _prefixed(lines, "+CNUM"):
        raise AtDecodeError(f"+CNUM: unexpected lines {_show(lines)}")
    return None


def parse_cpbr(lines: Sequence[str]) -> str | None:
    """``+CPBR: <index>,"<number>",<type>,"<text>"`` lines -> the first usable number (``+``
    kept for type 145), ``None`` when no entry holds one. Entries that are not numbers are
    skipped: a phonebook is user data."""
    for args in _prefixed(lines, "+CPBR"):
        parts = _fields(args)
        if len(parts) < 2:
            continue
        number = parts[1].replace(" ", "").replace("-", "")
        digits = number[1:] if number.startswith("+") else number
        if not (digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 15):
            continue
        if len(parts) >= 3 and parts[2] == "145" and not number.startswith("+"):
            number = "+" + number
        return number
    return None


def parse_cpbs(lines: Sequence[str]) -> tuple[str, int, int] | None:
    """``+CPBS: "ON",1,4`` -> ``("ON", 1, 4)``; ``None`` when used/total are not given."""
    values = _prefixed(lines, "+CPBS")
    if not values:
        return None
    parts = _fields(values[0])
    if len(parts) < 3 or not all(p.isascii() and p.isdigit() for p in parts[1:3]):
        return None
    return parts[0].upper(), int(parts[1]), int(parts[2])


_CPIN = re.compile(r"[A-Z][A-Z0-9 -]{0,20}")


def parse_cpin(lines: Sequence[str]) -> str:
    """``+CPIN: READY`` -> ``"READY"`` (or ``"SIM PIN"``, ``"SIM PUK"``, ``"NOT READY"``...)."""
    value = _one_prefixed(lines, "+CPIN").strip().strip('"').strip().upper()
    if not _CPIN.fullmatch(value):
        raise AtDecodeError(f"+CPIN: bad state {value[:40]!r}")
    return value


#: The answer prefixes of the makers' ICCID commands (some answer AT+CCID with +ICCID:).
ICCID_PREFIXES = ("+CCID", "^ICCID", "+QCCID", "+ICCID", "#CCID", "+CICCID", "^SCID", "+ZGETICCID")


def _unswap(value: str) -> str:
    chars = list(value)
    for i in range(0, len(chars) - 1, 2):
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def parse_iccid(lines: Sequence[str]) -> str:
    """The SIM's ICCID from ``+CCID:``, ``^ICCID:``, ``+QCCID:``, ``+ICCID:``, ``#CCID:`` or a
    bare line of digits. An ICCID always starts with 89 (ITU-T E.118), so one starting with 98 is
    nibble-swapped (as Huawei's ``^ICCID`` gives it) and is swapped back. A trailing filler ``F``
    is dropped."""
    for text in lines:
        name, args = split_result(text)
        if name != text:
            if name.upper() not in ICCID_PREFIXES:
                continue
            value = args
        else:
            value = text
        value = value.strip().strip('"').strip().upper()
        if value.startswith("98"):
            value = _unswap(value)
        value = value.rstrip("F")
        if not value.isascii() or not value.isdigit():
            raise AtDecodeError(f"ICCID: not digits: {value[:40]!r}")
        if not 18 <= len(value) <= 22:
            raise AtDecodeError(f"ICCID: {len(value)} digits, expected 18..22")
        if not value.startswith("89"):
            raise AtDecodeError(f"ICCID: does not start with 89: {value!r}")
        return value
    raise AtDecodeError(f"ICCID: no ICCID line in {_show(lines)}")


def parse_cops(lines: Sequence[str]) -> str | None:
    """``+COPS: <mode>[,<format>,"<oper>"[,<act>]]`` -> the operator, ``None`` if not registered."""
    parts = _fields(_one_prefixed(lines, "+COPS"))
    _int(parts[0], "+COPS mode", 0, 4)
    if len(parts) < 3:
        return None
    _int(parts[1], "+COPS format", 0, 2)
    name = parts[2].strip()
    if not name:
        return None
    if not name.isprintable() or len(name) > 64:
        raise AtDecodeError(f"+COPS: bad operator {name[:40]!r}")
    return name


def _identity(lines: Sequence[str], prefix: str, what: str) -> str:
    for text in lines:
        name, args = split_result(text)
        value = args if name.upper() == prefix else text
        value = value.strip().strip('"').strip()
        if value:
            if not value.isprintable() or len(value) > 128:
                raise AtDecodeError(f"{what}: bad value {value[:40]!r}")
            return value
    raise AtDecodeError(f"{what}: empty answer")


def parse_cgmi(lines: Sequence[str]) -> str:
    """The manufacturer from ``AT+CGMI`` (``+CGMI:`` prefix stripped if the maker adds one)."""
    return _identity(lines, "+CGMI", "manufacturer")


def parse_cgmm(lines: Sequence[str]) -> str:
    """The model from ``AT+CGMM`` (``+CGMM:`` prefix stripped if the maker adds one)."""
    return _identity(lines, "+CGMM", "model")


def parse_cgsn(lines: Sequence[str]) -> str:
    """The IMEI from ``AT+CGSN`` (``+CGSN:`` prefix and quotes stripped): 14..17 digits."""
    value = _identity(lines, "+CGSN", "IMEI")
    if not value.isascii() or not value.isdigit() or not 14 <= len(value) <= 17:
        raise AtDecodeError(f"IMEI: expected 14..17 digits, got {value[:40]!r}")
    return value


def parse_cimi(lines: Sequence[str]) -> str:
    """The IMSI from ``AT+CIMI``: 6..15 digits."""
    value = _identity(lines, "+CIMI", "IMSI")
    if not value.isascii() or not value.isdigit() or not 6 <= len(value) <= 15:
        raise AtDecodeError(f"IMSI: expected 6..15 digits, got {value[:40]!r}")
    return value
