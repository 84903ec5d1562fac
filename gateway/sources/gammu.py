"""Turn what gammu-smsd's RunOnReceive hands over (its environment, and the inbox files named on
the command line) into the message the Intake takes. Pure: no I/O but reading the named files.

References: gammu-smsd-run(7) (https://docs.gammu.org/smsd/run.html) and, for the exact
variables, ``SMSD_RunOnReceiveEnvironment`` in gammu's smsd/core.c; the files backend names its
inbox files ``IN<yyyymmdd>_<hhmmss>_<serial>_<sender>_<part>.txt`` (``.bin`` for 8-bit data) in
smsd/services/files.c. Gammu joins a multi-part SMS before it calls the hook: ``DECODED_1_TEXT``
then holds the whole text, ``SMS_<n>_TEXT`` each part's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from gateway.config import HookConfig
from gateway.errors import DecodeError
from gateway.fields import MAX_TEXT, normalize_phone
from gateway.outbox.models import Hold, Incoming
from gateway.sources.dedup import digest
from gateway.sources.hookfile import read_spool_file

__all__ = ["FIELD_NAMES", "SOURCE", "messages_from_gammu"]

SOURCE = "gammu"
MAX_MESSAGES = 255  # parts of one concatenated SMS at most
MAX_FILE = 64 * 1024
# What the hook's user knows a refused field as (`ingest` names it so); the rules are
# gateway.fields'.
FIELD_NAMES = {"phone_from": "SMS_1_NUMBER (the sender)", "phone": "--phone"}
_INBOX_NAME = re.compile(r"^IN(\d{8}_\d{6})_\d{2}_(.*)_\d{2}\.(txt|bin)$")
_BACKUP_TEXT = re.compile(r"^Text\d+\s*=\s*([0-9A-Fa-f]*)\s*$", re.MULTILINE)


def messages_from_gammu(
    environ: Mapping[str, str],
    files: Sequence[str],
    cfg: HookConfig,
    phone: str | None,
    now: float,
) -> list[Incoming]:
    """The message gammu-smsd received, from its RunOnReceive environment and inbox files.

    ``phone`` (``--phone``) wins over ``cfg.phones[PHONE_ID]``; with neither the message is kept
    held (``Hold.NO_PHONE``). The text comes from ``files`` saved as InboxFormat unicode (exact
    whatever gammu's locale), else from the environment, else from the other files; relative
    names are taken from the current directory, so the hook runs in gammu's inbox directory.
    Without gammu's environment (a run by hand for files left in the inbox) the sender comes
    from the file name. Raises ``DecodeError`` saying what is missing or malformed.
    """
    if "SMS_MESSAGES" not in environ and files:
        sender, (text, hold, raw) = _sender_from_name(files[0]), _from_files(files)
    else:
        count = _number(environ, "SMS_MESSAGES", 1, MAX_MESSAGES)
        number = _env_text(environ, "SMS_1_NUMBER")
        if number is None:
            raise DecodeError("SMS_1_NUMBER is not set; is this run by gammu-smsd's RunOnReceive?")
        sender, (text, hold, raw) = number, _content(environ, count, files)
    phone_id = _env_text(environ, "PHONE_ID") or ""
    if len(text) > MAX_TEXT:
        raise DecodeError(f"text is {len(text)} characters; at most {MAX_TEXT} are taken")
    resolved = _resolve_phone(phone, cfg, phone_id)
    if hold is None and resolved is None:
        hold = Hold.NO_PHONE
    return [
        Incoming(
            source=SOURCE,
            phone=resolved or "",
            phone_from=sender.strip(),
            text=text,
            received_at=now,
            source_ref=_source_ref(phone_id, sender, text, raw, files, now),
            hold=hold,
            raw=raw,
        )
    ]


def _sender_from_name(name: str) -> str:
    match = _INBOX_NAME.match(os.path.basename(name))
    if match is None:
        raise DecodeError(
            f"{name}: SMS_MESSAGES is not set and the name is not gammu's "
            "IN<date>_<time>_<serial>_<sender>_<part>.txt; give gammu's environment"
        )
    return match.group(2)


def _number(environ: Mapping[str, str], key: str, lo: int, hi: int) -> int:
    value = environ.get(key)
    if value is None:
        raise DecodeError(f"{key} is not set; is this run by gammu-smsd's RunOnReceive?")
    if not (value.strip().isascii() and value.strip().isdigit() and lo <= int(value) <= hi):
        raise DecodeError(f"{key} is {value[:20]!r}; expected a number from {lo} to {hi}")
    return int(value)


def _env_text(environ: Mapping[str, str], key: str) -> str | None:
    """A variable as text. Python maps bytes that are not UTF-8 to lone surrogates; gammu under
    a non-UTF-8 locale writes Latin-1, so those bytes are read as Latin-1."""
    value = environ.get(key)
    if value is None:
        return None
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoding made: not from os.environ
        data = value.encode("utf-8", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _content(
    environ: Mapping[str, str], count: int, files: Sequence[str]
) -> tuple[str, Hold | None, str | None]:
    """(text, hold, raw): from InboxFormat=unicode files when named (lossless whatever gammu's
    locale: under the C locale gammu writes '?' for every non-ASCII character in the environment
    and in standard files), else the text gammu joined, else each part's, else the files."""
    lossless = _unicode_files(files)
    if lossless is not None:
        return "".join(_cross_check(lossless, environ, count)), None, None
    parts_value = environ.get("DECODED_PARTS", "0").strip()
    decoded_parts = int(parts_value) if parts_value.isdigit() else 0
    decoded = [
        t
        for i in range(1, min(decoded_parts, MAX_MESSAGES) + 1)
        if (t := _env_text(environ, f"DECODED_{i}_TEXT")) is not None
    ]
    if decoded:
        return "".join(decoded), None, None
    mms = _mms(environ, decoded_parts)
    if mms is not None:
        return mms, Hold.NOT_TEXT, None
    texts = [_env_text(environ, f"SMS_{i}_TEXT") for i in range(1, count + 1)]
    if all(t is not None for t in texts):
        return "".join(t for t in texts if t is not None), None, None
    if not files:
        raise DecodeError(
            "SMS_<n>_TEXT is not set (8-bit data?) and no inbox file was named; "
            "give the file names gammu appends to the RunOnReceive command"
        )
    return _from_files(files)


def _mms(environ: Mapping[str, str], decoded_parts: int) -> str | None:
    for i in range(1, min(decoded_parts, MAX_MESSAGES) + 1):
        address = _env_text(environ, f"DECODED_{i}_MMS_ADDRESS")
        if address is not None:
            title = _env_text(environ, f"DECODED_{i}_MMS_TITLE") or ""
            return f"MMS notification: {title} {address}".strip()
    return None


def _from_files(files: Sequence[str]) -> tuple[str, Hold | None, str | None]:
    texts: list[str] = []
    binary = bytearray()
    for name in files:
        data = _read(name)
        if name.endswith(".bin"):
            binary += data
        else:
            texts.append(_file_text(name, data))
    if binary:  # 8-bit data (WAP push, ringtones...): recorded, never pushed
        return "", Hold.NOT_TEXT, binary.hex().upper()
    return "".join(texts), None, None


def _cross_check(parts: list[str], environ: Mapping[str, str], count: int) -> list[str]:
    """Each unicode file's text checked against the same part's ``SMS_<n>_TEXT`` when gammu named
    one file per part. gammu 1.42 writes ``strlen(text in its locale) * 2`` bytes of UCS-2, so
    under a UTF-8 locale every non-ASCII character adds two bytes read past the text: NULs as a
    rule (stripped in ``_file_text``), though nothing makes that memory zero. The environment
    has the part's exact length in any locale (under the C locale ``?`` for every character the
    locale lacks, the characters themselves under a UTF-8 one), so it bounds the file's text;
    where the two disagree otherwise, the environment wins unless it is the lossy one."""
    if len(parts) != count:
        return parts
    checked = []
    for n, text in enumerate(parts, start=1):
        env = _env_text(environ, f"SMS_{n}_TEXT")
        if env is None or _agrees(text, env):
            checked.append(text)
        elif _agrees(text[: len(env)], env):
            checked.append(text[: len(env)])
        else:
            checked.append(text if "?" in env else env)
    return checked


def _agrees(text: str, env: str) -> bool:
    """``env`` is ``text`` as gammu wrote it in its locale: equal, or ``?`` where the locale
    has no such character."""
    return len(text) == len(env) and all(
        e == t or (e == "?" and not t.isascii()) for t, e in zip(text, env, strict=True)
    )


def _unicode_files(files: Sequence[str]) -> list[str] | None:
    """The text of each of ``files`` when every one is in a lossless format; ``None`` otherwise."""
    texts = []
    for name in files:
        if not name.endswith(".txt"):
            return None
        try:
            data = _read(name)
        except DecodeError:
            return None
        head = data.lstrip()[:40]
        if not (
            data[:2] in (b"\xfe\xff", b"\xff\xfe") or head.startswith((b"[SMSBackup", b"; This"))
        ):
            return None
        try:
            texts.append(_file_text(name, data))
        except DecodeError:
            return None
    return texts or None


def _read(name: str) -> bytes:
    """A regular file, never through a symbolic link (one planted in the inbox could point
    anywhere gammu's user may read), at most ``MAX_FILE`` bytes read."""
    try:
        return read_spool_file(name, MAX_FILE)
    except OSError as e:
        raise DecodeError(
            f"{name}: cannot read the inbox file ({e.strerror}); run the hook in gammu's inbox "
            "directory (inboxpath) or pass full paths"
        ) from None


def _file_text(name: str, data: bytes) -> str:
    """InboxFormat unicode (BOM + UCS-2), standard (the locale's charset) or detail (backup)."""
    if data[:2] in (b"\xfe\xff", b"\xff\xfe"):
        codec = "utf-16-be" if data[:2] == b"\xfe\xff" else "utf-16-le"
        body = data[2:]
        if len(body) % 2:
            raise DecodeError(f"{name}: odd length for UCS-2 text; the file is cut short")
        # gammu 1.42 writes strlen(text in its locale) * 2 bytes: under a UTF-8 locale one NUL
        # character more per non-ASCII one. An SMS text never ends in U+0000.
        return body.decode(codec, "replace").rstrip("\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if text.lstrip().startswith(("[SMSBackup", "; This file format was designed by Gammu")):
        return _backup_text(name, text)
    return text


def _backup_text(name: str, text: str) -> str:
    """InboxFormat detail: gammu's SMS backup file; each TextNN line is hex of UCS-2 BE."""
    pieces = _BACKUP_TEXT.findall(text)
    if not pieces:
        raise DecodeError(f"{name}: a gammu backup file without Text lines")
    try:
        data = bytes.fromhex("".join(pieces))
    except ValueError:
        raise DecodeError(f"{name}: Text lines are not hexadecimal") from None
    if len(data) % 2:
        raise DecodeError(f"{name}: Text lines are not whole UCS-2 characters")
    return data.decode("utf-16-be", "replace")


def _resolve_phone(phone: str | None, cfg: HookConfig, phone_id: str) -> str | None:
    if phone:
        digits = normalize_phone(phone)
        if digits is None:
            raise DecodeError(f"--phone: {phone!r} is not a phone number (3 to 20 digits)")
        return digits
    return cfg.phones.get(phone_id) if phone_id else None


def _source_ref(
    phone_id: str, sender: str, text: str, raw: str | None, files: Sequence[str], now: float
) -> str:
    """Stable across a second run for the same SMS (gammu re-reading it after a crash writes a
    new file whose serial differs): the receiving phone, the service-centre time and sender the
    file name carries, and a hash of the content. Without files only a run within the same
    second is recognised, for the environment carries no timestamp."""
    body = digest(text, raw or "")
    base = os.path.basename(files[0]) if files else ""
    match = _INBOX_NAME.match(base)
    if match:
        return f"{phone_id or '-'}|{match.group(1)}|{sender}|{body}"
    if base:
        return f"{phone_id or '-'}|{base}|{sender}|{body}"
    return f"{phone_id or '-'}|{sender}|{body}|{int(now)}"
