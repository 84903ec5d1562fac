"""smstools3 incoming files become messages.

Fixed cases: the received-message examples of SMS Server Tools 3 (doc/fileformat.html and
examples/received_sms.sms, received_report.sms), and files smstools 3.1.21 (Debian bookworm)
wrote when run against the simulated modem (see test_real_hooks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import HookConfig
from gateway.errors import DecodeError
from gateway.outbox.models import Hold
from gateway.sources.smstools import MAX_FILE, SOURCE, message_from_smstools, read_message_file

NOW = time.time()
CFG = HookConfig(phones={"GSM1": "79001234567"})

# examples/received_sms.sms as shipped with smstools3
DOC_EXAMPLE = (
    b"From: 491721234567\nFrom_SMSC: 491722270333\nSent: 02-01-21 22:26:23\n"
    b"Received: 02-01-21 22:26:25\nSubject: GSM1\nAlphabet: ISO8859-15\n\n"
    b"This is the Text that I sent with my mobile phone."
)


def real_file(alphabet: str, body: bytes, **extra: str) -> bytes:
    """The header smstools 3.1.21 wrote for the simulated modem, with ``extra`` lines added."""
    head = (
        "From: 79001112233\nFrom_TOA: 91 international, ISDN/telephone\n"
        "From_SMSC: 79000000000\nSent: 26-11-27 16:20:37\nReceived: 26-11-27 16:20:39\n"
        "Subject: GSM1\nModem: GSM1\nIMSI: 250991234567890\nIMEI: 866123045678906\n"
        f"Report: no\nAlphabet: {alphabet}\nLength: {len(body)}\n"
    )
    head += "".join(f"{k}: {v}\n" for k, v in extra.items())
    return head.encode("latin-1") + b"\n" + body


def test_documented_example() -> None:
    m = message_from_smstools(DOC_EXAMPLE, CFG, None, NOW, "GSM1.xyzxyz")
    assert m.source == SOURCE == "smstools"
    assert m.text == "This is the Text that I sent with my mobile phone."
    assert (m.phone, m.phone_from, m.hold) == ("79001234567", "491721234567", None)
    assert m.received_at == NOW  # 2002 is implausible for a message received now


def test_ucs2_text_as_smstools_wrote_it() -> None:
    m = message_from_smstools(
        real_file("UCS2", "Привет, мир! hello".encode("utf-16-be")), CFG, None, NOW, "GSM1.a"
    )
    assert m.text == "Привет, мир! hello"
    assert m.phone_from == "+79001112233"  # international, as the modem source reports it


def test_iso_text_is_latin9() -> None:
    m = message_from_smstools(real_file("ISO", b"Plain ascii \xe9\xe8 \xa4"), CFG, None, NOW, "f")
    assert m.text == "Plain ascii éè €"


@pytest.mark.parametrize("alphabet", ["UTF-8", "ISO"])
def test_utf8_text(alphabet: str) -> None:
    """incoming_utf8 = yes writes Alphabet: UTF-8; a conversion script may leave ISO."""
    m = message_from_smstools(real_file(alphabet, "Grüße, мир".encode()), CFG, None, NOW, "f")
    assert m.text == "Grüße, мир"


def test_raw_gsm_alphabet() -> None:
    """cs_convert = no: the GSM 7-bit characters unpacked, one per byte (0x1B escapes)."""
    m = message_from_smstools(real_file("GSM", b"Hi \x00 \x1b\x65"), CFG, None, NOW, "f")
    assert m.text == "Hi @ €"


def test_status_report_is_recorded_but_never_pushed() -> None:
    report = (
        b"From: 491721234567\nFrom_SMSC: 491722270333\nSent: 02-01-21 22:26:23\n"
        b"Received: 02-01-21 22:26:25\nSubject: GSM1\n\nSMS STATUS REPORT\nMessage_id: 117\n"
        b"Discharge_timestamp: 02-01-21 22:27:02\nStatus: 0,Ok,short message received by the SME"
    )
    m = message_from_smstools(report, CFG, None, NOW, "GSM1.r")
    assert m.hold is Hold.NOT_TEXT


def test_binary_and_undecodable_files_are_held() -> None:
    binary = message_from_smstools(real_file("binary", b"\x00\xff\x10"), CFG, None, NOW, "f")
    assert binary.hold is Hold.NOT_TEXT and binary.raw == "00FF10"
    broken = real_file("ISO", b"Position 12: bad PDU", Error="Cannot decode PDU")
    assert message_from_smstools(broken, CFG, None, NOW, "f").hold is Hold.UNDECODABLE


def test_incomplete_multipart_is_marked_partial() -> None:
    data = real_file("ISO", b"first part", Incomplete="yes")
    assert message_from_smstools(data, CFG, None, NOW, "f").partial


def test_phone_order_option_then_modem_table_then_number_header() -> None:
    data = real_file("ISO", b"x", Number="+7 900 111-22-33")
    assert message_from_smstools(data, CFG, "79005554433", NOW, "f").phone == "79005554433"
    assert message_from_smstools(data, CFG, None, NOW, "f").phone == "79001234567"
    assert message_from_smstools(data, HookConfig(), None, NOW, "f").phone == "79001112233"
    bare = message_from_smstools(real_file("ISO", b"x"), HookConfig(), None, NOW, "f")
    assert bare.hold is Hold.NO_PHONE and bare.phone == ""


def test_received_time_is_read_as_local_time() -> None:
    stamp = time.strftime("%y-%m-%d %H:%M:%S", time.localtime(NOW - 60))
    data = DOC_EXAMPLE.replace(b"Received: 02-01-21 22:26:25", f"Received: {stamp}".encode())
    assert abs(message_from_smstools(data, CFG, None, NOW, "f").received_at - (NOW - 60)) < 1


def test_crlf_files_are_read() -> None:
    m = message_from_smstools(DOC_EXAMPLE.replace(b"\n", b"\r\n"), CFG, None, NOW, "f")
    assert m.text == "This is the Text that I sent with my mobile phone."


def test_dedup_key_is_stable_for_the_same_sms_and_differs_otherwise() -> None:
    a = message_from_smstools(real_file("ISO", b"code 1234"), CFG, None, NOW, "GSM1.aaaaaa")
    b = message_from_smstools(real_file("ISO", b"code 1234"), CFG, None, NOW + 9, "GSM1.bbbbbb")
    c = message_from_smstools(real_file("ISO", b"code 9999"), CFG, None, NOW, "GSM1.cccccc")
    assert a.source_ref == b.source_ref != c.source_ref
    assert a.source_ref and a.source_ref.startswith("250991234567890|79001112233|")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"From: 1\nAlphabet: ISO", "no blank line"),
        (b"Subject: GSM1\n\ntext", "no From header"),
        (b"From: 1\nnot a header\n\ntext", "not 'Key: value'"),
        (b"From: 1\nAlphabet: UCS2\n\n\x04", "odd length"),
        (b"From: 1\nAlphabet: UTF-8\n\n\xff", "not"),
        (b"From: 1\nAlphabet: GSM\n\n\xff", "above 0x7F"),
        (b"From: 1\nAlphabet: KOI8\n\ntext", "unknown Alphabet"),
        (b"From: 1\n\n" + b"x" * 300_000, "far smaller"),
    ],
)
def test_malformed_files_are_refused_with_a_clear_reason(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        message_from_smstools(data, CFG, None, NOW, "GSM1.bad")


_HEADER = st.sampled_from(
    ["From", "Alphabet", "Modem", "Subject", "Sent", "Received", "IMSI", "Error", "Incomplete"]
)
_ALPHABETS = st.sampled_from(["ISO", "UCS2", "UTF-8", "GSM", "binary", "unknown", "", "ucs"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_give_a_message_or_a_decode_error(data: bytes) -> None:
    try:
        m = message_from_smstools(data, CFG, None, NOW, "f")
    except DecodeError:
        return
    m.text.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(_HEADER, st.text(max_size=20).filter(lambda v: "\n" not in v)),
    alphabet=_ALPHABETS,
    body=st.binary(max_size=200),
)
def test_random_files_give_a_message_or_a_decode_error(
    headers: dict[str, str], alphabet: str, body: bytes
) -> None:
    lines = [f"{k}: {v}" for k, v in {**headers, "Alphabet": alphabet}.items()]
    data = "\n".join(lines).encode("utf-8") + b"\n\n" + body
    try:
        m = message_from_smstools(data, CFG, None, NOW, "f")
    except DecodeError:
        return
    m.text.encode("utf-8")
    assert m.source_ref


# -- reading the file the eventhandler names -----------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def gateway_config(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[upstream]\nurl = "http://127.0.0.1:9/push"\napi_key = "k"\n'
        f'[store]\npath = "{tmp_path / "outbox.sqlite3"}"\n',
        encoding="utf-8",
    )
    return config


def ingest_argv(tmp_path: Path, name: str) -> list[str]:
    config = gateway_config(tmp_path)
    return [sys.executable, "-m", "gateway", "ingest", "-c", str(config), "--smstools", name]


def ingest_smstools(tmp_path: Path, name: str) -> tuple[int, str]:
    """``sms-gateway ingest --smstools NAME`` in a subprocess, bounded to 60 s: exit status and
    stderr."""
    return run_bounded(ingest_argv(tmp_path, name))


def run_bounded(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{argv} still running after 60 s") from None
    return done.returncode, done.stderr.decode(errors="replace")


# The child's data segment capped below what reading the whole file would need: ru_maxrss
# cannot be used, because a child started by vfork inherits the parent's (pytest's) high-water
# mark, which in a full run is hundreds of MB whatever the child does.
DATA_LIMIT = 200 * 1024 * 1024


def test_reading_stops_one_byte_past_the_limit(tmp_path: Path) -> None:
    """A 1 GiB (sparse) file used to be read whole before the size check."""
    big = tmp_path / "GSM1.big"
    with open(big, "wb") as f:
        f.truncate(1024**3)
    argv = ["prlimit", f"--data={DATA_LIMIT}", *ingest_argv(tmp_path, str(big))]
    status, stderr = run_bounded(argv)
    assert status == 2, stderr  # refused for its size, not a MemoryError (exit 1)
    assert "MemoryError" not in stderr


def test_a_file_growing_past_the_limit_is_refused_having_read_at_most_limit_plus_one(
    tmp_path: Path,
) -> None:
    name = tmp_path / "GSM1.grown"
    name.write_bytes(DOC_EXAMPLE + b"x" * MAX_FILE)
    with pytest.raises(DecodeError, match=f"at most {MAX_FILE}"):
        read_message_file(str(name))
    name.write_bytes(DOC_EXAMPLE)
    assert read_message_file(str(name)) == DOC_EXAMPLE


def test_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    status, stderr = ingest_smstools(tmp_path, "/dev/zero")
    assert status == 2 and "not a regular file (a device)" in stderr
    with pytest.raises(DecodeError, match="not a regular file"):
        read_message_file("/dev/zero")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "GSM1.fifo"
    os.mkfifo(fifo)
    status, stderr = ingest_smstools(tmp_path, str(fifo))
    assert status == 2 and "not a regular file (a FIFO)" in stderr


def test_a_symlink_out_of_the_spool_is_not_followed(tmp_path: Path) -> None:
    spool = tmp_path / "incoming"
    spool.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(DOC_EXAMPLE)  # a readable SMS file, yet reached through a link
    (spool / "GSM1.link").symlink_to(secret)
    status, stderr = ingest_smstools(tmp_path, str(spool / "GSM1.link"))
    assert status == 2 and "a symbolic link" in stderr


def test_a_spool_directory_reached_through_a_link_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "real-incoming"
    real.mkdir()
    (real / "GSM1.AbCdEf").write_bytes(DOC_EXAMPLE)
    (tmp_path / "incoming").symlink_to(real)
    data = read_message_file(str(tmp_path / "incoming" / "GSM1.AbCdEf"))
    assert message_from_smstools(data, CFG, None, NOW, "GSM1.AbCdEf").text.startswith("This is")


def test_a_field_the_rules_refuse_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    """A From header longer than the field rules take: exit 2 naming it, not 1, store untouched."""
    name = tmp_path / "GSM1.long"
    name.write_bytes(b"From: " + b"7" * 300 + b"\nAlphabet: ISO\n\nhello")
    status, stderr = ingest_smstools(tmp_path, str(name))
    assert status == 2, stderr
    assert "From" in stderr and "longer than 256 characters" in stderr
    assert not (tmp_path / "outbox.sqlite3").exists()
