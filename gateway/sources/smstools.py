"""Turn one smstools3 incoming message file (what its eventhandler gets with ``RECEIVED``) into the
message the Intake takes. Pure: bytes in, ``Incoming`` out.

Reference: the SMS file format of SMS Server Tools 3 (doc/fileformat.html, "Received messages")
and ``received2file`` in its src/smsd.c: header lines ``Key: value``, a blank line, then the text
in the alphabet the ``Alphabet`` header names: ISO (ISO-8859-15), GSM (raw GSM 7-bit characters
when ``cs_convert = no``), UCS2 (UCS-2 big-endian), UTF-8 (``incoming_utf8 = yes``) or binary.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import HookConfig
from gateway.errors import DecodeError
from gateway.fields import MAX_TEXT, device_time, normalize_phone
from gateway.outbox.models import Hold, Incoming
from gateway.sources.dedup import digest
from gateway.sources.hookfile import read_spool_file
from gateway.sources.modem.pdu import gsm7_decode

__all__ = ["FIELD_NAMES", "SOURCE", "message_from_smstools", "read_message_file"]

SOURCE = "smstools"
MAX_FILE = 256 * 1024
DATE_FORMAT = "%y-%m-%d %H:%M:%S"  # smstools' default datetime_format, this host's time
# What the hook's user knows a refused field as (`ingest` names it so); the rules are
# gateway.fields'.
FIELD_NAMES = {"phone_from": "From", "phone": "--phone"}
_YES = ("yes", "true", "on", "1")


@dataclass(frozen=True)
class _File:
    headers: dict[str, str]
    body: bytes


def read_message_file(name: str) -> bytes:
    """The incoming file smstools named: a regular file, not a symbolic link (which could
    lead out of the spool directory), read no further than ``MAX_FILE`` + 1 bytes. Raises
    ``DecodeError`` for those, ``OSError`` when it cannot be read."""
    return read_spool_file(name, MAX_FILE)


def message_from_smstools(
    data: bytes, cfg: HookConfig, phone: str | None, now: float, file_name: str
) -> Incoming:
    """The message in an smstools3 incoming file; raises ``DecodeError`` naming the problem.

    The phone is ``phone`` (``--phone``), else ``cfg.phones`` for the ``Modem`` (or ``Subject``)
    name, else the ``Number`` smstools was configured with for that modem; with none the message
    is kept held (``Hold.NO_PHONE``). Status reports, binary data and files smstools marks with
    ``Error`` are recorded held, never pushed.
    """
    f = _split(data, file_name)
    sender = f.headers.get("From")
    if sender is None:
        raise DecodeError(f"{file_name}: no From header; not an smstools incoming message file")
    text, hold, raw = _decode(f, file_name)
    if len(text) > MAX_TEXT:
        raise DecodeError(f"{file_name}: text is {len(text)} characters; at most {MAX_TEXT}")
    modem = f.headers.get("Modem") or f.headers.get("Subject") or ""
    resolved = _resolve_phone(phone, cfg, f.headers)
    if hold is None and resolved is None:
        hold = Hold.NO_PHONE
    return Incoming(
        source=SOURCE,
        phone=resolved or "",
        phone_from=_sender(sender, f.headers.get("From_TOA", "")),
        text=text,
        received_at=device_time(f.headers.get("Received", ""), now, fmt=DATE_FORMAT, source=SOURCE),
        source_ref="|".join(
            (
                f.headers.get("IMSI") or modem or "-",
                sender,
                f.headers.get("Sent") or "-",
                digest(f.body),
            )
        ),
        hold=hold,
        raw=raw,
        partial=f.headers.get("Incomplete", "").strip().lower() in _YES,
    )


def _split(data: bytes, file_name: str) -> _File:
    if len(data) > MAX_FILE:
        raise DecodeError(f"{file_name}: {len(data)} bytes; an SMS file is far smaller")
    ends = [(i, len(sep)) for sep in (b"\n\n", b"\r\n\r\n") if (i := data.find(sep)) >= 0]
    if not ends:
        raise DecodeError(f"{file_name}: no blank line between the header lines and the text")
    at, size = min(ends)
    head, body = data[:at].replace(b"\r", b""), data[at + size :]
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\n"):
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise DecodeError(f"{file_name}: header line {line[:60]!r} is not 'Key: value'")
        headers.setdefault(key.strip(), value.strip())
    return _File(headers, body)


def _decode(f: _File, file_name: str) -> tuple[str, Hold | None, str | None]:
    if "Error" in f.headers:  # smstools could not decode the PDU; the body says why
        return f.body.decode("latin-1"), Hold.UNDECODABLE, f.body.hex().upper()
    alphabet = f.headers.get("Alphabet", "ISO").strip()
    kind = alphabet[:3].upper()
    if kind in ("UCS", "CHI", "UNI"):  # smstools checks only the first 3 characters
        if len(f.body) % 2:
            raise DecodeError(f"{file_name}: UCS2 text of odd length {len(f.body)} bytes")
        text = f.body.decode("utf-16-be", "replace")
    elif kind == "UTF":
        try:
            text = f.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"{file_name}: Alphabet UTF-8 but byte {e.start} is not") from None
    elif kind in ("ISO", "LAT", "ANS"):
        text = _iso_or_utf8(f.body)
    elif kind == "GSM":
        if any(b > 0x7F for b in f.body):
            raise DecodeError(f"{file_name}: Alphabet GSM but bytes above 0x7F in the text")
        text = gsm7_decode(f.body)
    elif kind == "BIN":
        return "", Hold.NOT_TEXT, f.body.hex().upper()
    else:
        raise DecodeError(f"{file_name}: unknown Alphabet {alphabet[:20]!r}")
    if text.startswith("SMS STATUS REPORT"):
        return text, Hold.NOT_TEXT, None
    return text, None, None


def _iso_or_utf8(body: bytes) -> str:
    """ISO-8859-15 as declared, unless the bytes are valid UTF-8 beyond ASCII: a conversion
    script (smstools' eventhandler-utf-8 example) rewrites the text but not the header."""
    if any(b > 0x7F for b in body):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return body.decode("iso-8859-15")


def _sender(sender: str, toa: str) -> str:
    """As the modem source reports it: international numbers with their '+'."""
    if toa.startswith("91") and sender.isdigit():
        return "+" + sender
    return sender


def _resolve_phone(phone: str | None, cfg: HookConfig, headers: dict[str, str]) -> str | None:
    if phone:
        digits = normalize_phone(phone)
        if digits is None:
            raise DecodeError(f"--phone: {phone!r} is not a phone number (3 to 20 digits)")
        return digits
    for key in ("Modem", "Subject"):
        name = headers.get(key)
        if name and name in cfg.phones:
            return cfg.phones[name]
    number = headers.get("Number")
    return normalize_phone(number) if number else None
