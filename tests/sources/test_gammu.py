"""gammu-smsd RunOnReceive: its environment and inbox files become one message.

Fixed cases follow gammu-smsd-run(7) (https://docs.gammu.org/smsd/run.html) and what gammu-smsd
1.42 (Debian bookworm) really set when run against the simulated modem (see test_real_hooks.py):
``DECODED_PARTS=0`` for a single SMS, ``DECODED_1_TEXT`` with the whole text of a joined one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import HookConfig
from gateway.errors import DecodeError
from gateway.outbox.models import Hold
from gateway.sources.gammu import SOURCE, messages_from_gammu

NOW = 1_700_000_000.0
CFG = HookConfig(phones={"modem1": "79001234567"})
SINGLE = {
    "SMS_MESSAGES": "1",
    "DECODED_PARTS": "0",
    "PHONE_ID": "modem1",
    "SMS_1_CLASS": "-1",
    "SMS_1_NUMBER": "+79001112233",
    "SMS_1_REFERENCE": "0",
    "SMS_1_TEXT": "Привет, мир! hello",
}
JOINED = {
    "SMS_MESSAGES": "3",
    "DECODED_PARTS": "1",
    "PHONE_ID": "modem1",
    "DECODED_1_TEXT": "Long message " * 30,
    **{f"SMS_{i}_NUMBER": "+79005556677" for i in (1, 2, 3)},
    **{f"SMS_{i}_CLASS": "-1" for i in (1, 2, 3)},
    "SMS_1_TEXT": ("Long message " * 30)[:153],
    "SMS_2_TEXT": ("Long message " * 30)[153:306],
    "SMS_3_TEXT": ("Long message " * 30)[306:],
}
INBOX_NAME = "IN20261127_161916_00_+79001112233_00.txt"


def test_single_sms_from_the_environment() -> None:
    (m,) = messages_from_gammu(SINGLE, [INBOX_NAME], CFG, None, NOW)
    assert m.source == SOURCE == "gammu"
    assert (m.phone, m.phone_from, m.text) == ("79001234567", "+79001112233", "Привет, мир! hello")
    assert m.hold is None and m.received_at == NOW
    assert m.source_ref and "modem1" in m.source_ref


def test_multipart_uses_the_text_gammu_joined() -> None:
    (m,) = messages_from_gammu(JOINED, [], CFG, None, NOW)
    assert m.text == "Long message " * 30


def test_parts_are_joined_in_order_when_gammu_did_not_decode_them() -> None:
    env = {k: v for k, v in JOINED.items() if not k.startswith("DECODED")}
    (m,) = messages_from_gammu(env, [], CFG, None, NOW)
    assert m.text == "Long message " * 30


def test_phone_option_wins_over_the_phone_id_table() -> None:
    (m,) = messages_from_gammu(SINGLE, [], CFG, "+7 (900) 765-43-21", NOW)
    assert m.phone == "79007654321" and m.hold is None


def test_unknown_phone_id_is_held_for_want_of_a_phone() -> None:
    env = {**SINGLE, "PHONE_ID": "other"}
    (m,) = messages_from_gammu(env, [], CFG, None, NOW)
    assert m.hold is Hold.NO_PHONE and m.phone == ""


def test_malformed_phone_option_is_refused() -> None:
    with pytest.raises(DecodeError, match="--phone"):
        messages_from_gammu(SINGLE, [], CFG, "not-a-number", NOW)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SMS_MESSAGES is not set"),
        ({**SINGLE, "SMS_MESSAGES": "many"}, "SMS_MESSAGES is 'many'"),
        ({**SINGLE, "SMS_MESSAGES": "0"}, "from 1 to 255"),
        ({k: v for k, v in SINGLE.items() if k != "SMS_1_NUMBER"}, "SMS_1_NUMBER"),
        ({k: v for k, v in SINGLE.items() if k != "SMS_1_TEXT"}, "no inbox file"),
    ],
)
def test_malformed_environment_is_refused_with_a_clear_reason(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        messages_from_gammu(env, [], CFG, None, NOW)


def test_the_same_sms_saved_twice_has_one_dedup_key() -> None:
    """gammu re-reading an SMS (after a crash, or listed in two memories) writes a second file
    that differs only in its serial: both runs must be one message."""
    first = messages_from_gammu(SINGLE, [INBOX_NAME], CFG, None, NOW)[0]
    again = messages_from_gammu(SINGLE, [INBOX_NAME.replace("_00_+", "_01_+")], CFG, None, NOW)
    other = messages_from_gammu({**SINGLE, "SMS_1_TEXT": "hi"}, [INBOX_NAME], CFG, None, NOW)
    assert first.source_ref == again[0].source_ref != other[0].source_ref


def test_without_files_only_a_run_in_the_same_second_is_the_same_message() -> None:
    a = messages_from_gammu(SINGLE, [], CFG, None, NOW)[0]
    b = messages_from_gammu(SINGLE, [], CFG, None, NOW + 0.5)[0]
    c = messages_from_gammu(SINGLE, [], CFG, None, NOW + 5)[0]
    assert a.source_ref == b.source_ref != c.source_ref


def test_text_is_read_from_unicode_inbox_files_when_the_environment_lacks_it(
    tmp_path: Path,
) -> None:
    """InboxFormat = unicode: a BOM then UCS-2 big-endian (smsd/services/files.c)."""
    names = []
    for i, piece in enumerate(["Длинное ", "сообщение"]):
        name = tmp_path / f"IN20261127_161916_00_+79005556677_{i:02}.txt"
        name.write_bytes(b"\xfe\xff" + piece.encode("utf-16-be"))
        names.append(str(name))
    env = {"SMS_MESSAGES": "2", "PHONE_ID": "modem1", "SMS_1_NUMBER": "+79005556677"}
    (m,) = messages_from_gammu(env, names, CFG, None, NOW)
    assert m.text == "Длинное сообщение" and m.hold is None


def test_unicode_inbox_files_win_over_a_lossy_environment(tmp_path: Path) -> None:
    """Under the C locale gammu-smsd 1.42 put '??????, ???! hello' in SMS_1_TEXT (seen for real);
    InboxFormat = unicode files keep every character."""
    name = tmp_path / INBOX_NAME
    name.write_bytes(b"\xfe\xff" + "Привет, мир! hello".encode("utf-16-be"))
    env = {**SINGLE, "SMS_1_TEXT": "??????, ???! hello"}
    (m,) = messages_from_gammu(env, [str(name)], CFG, None, NOW)
    assert m.text == "Привет, мир! hello"
    (fallback,) = messages_from_gammu(env, [str(tmp_path / "gone.txt")], CFG, None, NOW)
    assert fallback.text == "??????, ???! hello"  # an unreadable file: the environment still serves


def test_standard_and_detail_inbox_files(tmp_path: Path) -> None:
    standard = tmp_path / "IN20261127_161916_00_+79005556677_00.txt"
    standard.write_bytes("Привет ".encode())
    detail = tmp_path / "IN20261127_161916_00_+79005556677_01.txt"
    detail.write_text(
        "; This file format was designed by Gammu and is compatible with Gammu+\n"
        '[SMSBackup000]\nNumber = "+79005556677"\n'
        f"Text00 = {'мир'.encode('utf-16-be').hex().upper()}\n",
        encoding="ascii",
    )
    env = {"SMS_MESSAGES": "2", "PHONE_ID": "modem1", "SMS_1_NUMBER": "+79005556677"}
    (m,) = messages_from_gammu(env, [str(standard), str(detail)], CFG, None, NOW)
    assert m.text == "Привет мир"


def test_binary_data_is_recorded_but_never_pushed(tmp_path: Path) -> None:
    name = tmp_path / "IN20261127_161916_00_+79005556677_00.bin"
    name.write_bytes(b"\x06\x05\x04\x0b\x84\x23\xf0")
    env = {"SMS_MESSAGES": "1", "PHONE_ID": "modem1", "SMS_1_NUMBER": "+79005556677"}
    (m,) = messages_from_gammu(env, [str(name)], CFG, None, NOW)
    assert m.hold is Hold.NOT_TEXT and m.raw == "0605040B8423F0"


def test_files_left_in_the_inbox_can_be_ingested_by_hand(tmp_path: Path) -> None:
    """Without gammu's environment the sender comes from the file name; PHONE_ID may be given
    by hand so the dedup key is the one the hook would have used."""
    name = tmp_path / INBOX_NAME
    name.write_bytes("Привет, мир! hello".encode())
    (by_hand,) = messages_from_gammu({"PHONE_ID": "modem1"}, [str(name)], CFG, None, NOW)
    (hook,) = messages_from_gammu(SINGLE, [str(name)], CFG, None, NOW)
    assert (by_hand.phone_from, by_hand.text) == ("+79001112233", "Привет, мир! hello")
    assert by_hand.source_ref == hook.source_ref
    with pytest.raises(DecodeError, match="not gammu's"):
        messages_from_gammu({}, [str(tmp_path / "other.txt")], CFG, None, NOW)


def test_missing_inbox_file_names_the_file(tmp_path: Path) -> None:
    env = {"SMS_MESSAGES": "1", "SMS_1_NUMBER": "+7900"}
    with pytest.raises(DecodeError, match="cannot read the inbox file"):
        messages_from_gammu(env, [str(tmp_path / "IN_missing.txt")], CFG, None, NOW)


def test_mms_notification_is_recorded_but_not_pushed() -> None:
    env = {
        "SMS_MESSAGES": "1",
        "SMS_1_NUMBER": "+79001112233",
        "DECODED_PARTS": "1",
        "DECODED_1_MMS_ADDRESS": "http://mms.example/x",
        "DECODED_1_MMS_TITLE": "Photo",
        "PHONE_ID": "modem1",
    }
    (m,) = messages_from_gammu(env, [], CFG, None, NOW)
    assert m.hold is Hold.NOT_TEXT and "http://mms.example/x" in m.text


def test_bytes_that_are_not_utf8_in_the_environment_are_read_as_latin1() -> None:
    """Python keeps undecodable environment bytes as lone surrogates (surrogateescape)."""
    raw = "Grüße".encode("latin-1").decode("utf-8", "surrogateescape")
    (m,) = messages_from_gammu({**SINGLE, "SMS_1_TEXT": raw}, [], CFG, None, NOW)
    assert m.text == "Grüße"


_KEYS = st.sampled_from(
    [
        "SMS_MESSAGES",
        "DECODED_PARTS",
        "PHONE_ID",
        "SMS_1_NUMBER",
        "SMS_1_TEXT",
        "SMS_2_TEXT",
        "SMS_2_NUMBER",
        "DECODED_1_TEXT",
        "DECODED_1_MMS_ADDRESS",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=["Cs", "L"]), max_size=10),
    st.integers(-5, 300).map(str),
)


@settings(max_examples=300, deadline=None)
@given(
    env=st.dictionaries(_KEYS, _VALUES, max_size=9),
    contents=st.lists(st.binary(max_size=200), max_size=3),
    suffixes=st.lists(st.sampled_from([".txt", ".bin"]), min_size=3, max_size=3),
    phone=st.one_of(st.none(), st.text(max_size=12)),
)
def test_garbage_gives_a_message_or_a_decode_error(
    env: dict[str, str], contents: list[bytes], suffixes: list[str], phone: str | None
) -> None:
    with tempfile.TemporaryDirectory() as d:
        names = []
        for i, data in enumerate(contents):
            name = os.path.join(d, f"IN20260101_000000_00_+7900_{i:02}{suffixes[i]}")
            Path(name).write_bytes(data)
            names.append(name)
        try:
            result = messages_from_gammu(env, names, CFG, phone, NOW)
        except DecodeError as e:
            error = str(e)
        else:
            error = ""
    if error:
        return
    (m,) = result
    m.text.encode("utf-8")  # storable
    assert m.source_ref


def test_a_symlink_in_the_inbox_is_not_followed(tmp_path: Path) -> None:
    """A link planted in the inbox used to send the file it points at (/etc/passwd) upstream."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    link = inbox / INBOX_NAME
    link.symlink_to(secret)
    with pytest.raises(DecodeError, match="symbolic link"):
        messages_from_gammu({"PHONE_ID": "modem1"}, [str(link)], CFG, None, NOW)
    env = {"SMS_MESSAGES": "1", "PHONE_ID": "modem1", "SMS_1_NUMBER": "+79001112233"}
    with pytest.raises(DecodeError, match="symbolic link"):
        messages_from_gammu(env, [str(link)], CFG, None, NOW)
    (m,) = messages_from_gammu(SINGLE, [str(link)], CFG, None, NOW)
    assert m.text == SINGLE["SMS_1_TEXT"]  # the environment's text; the link is not read


@pytest.mark.timeout(10)
def test_a_fifo_or_device_in_the_inbox_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / INBOX_NAME
    os.mkfifo(fifo)
    for name in (str(fifo), "/dev/zero"):
        with pytest.raises(DecodeError, match="not a regular file"):
            messages_from_gammu({"PHONE_ID": "modem1", "SMS_MESSAGES": "1",
                                 "SMS_1_NUMBER": "+7900"}, [name], CFG, None, NOW)  # fmt: skip


def test_an_oversized_inbox_file_is_refused(tmp_path: Path) -> None:
    name = tmp_path / INBOX_NAME
    with open(name, "wb") as f:
        f.truncate(1024**3)
    with pytest.raises(DecodeError, match="at most 65536"):
        messages_from_gammu({"PHONE_ID": "modem1"}, [str(name)], CFG, None, NOW)


CYRILLIC = "Привет, мир! Это сообщение пришло через gammu."  # 46 characters, 32 not ASCII


def gammu_142_unicode_file(text: str, past_the_text: bytes | None = None) -> bytes:
    """What gammu-smsd 1.42's files service writes for InboxFormat = unicode under a UTF-8
    locale: a BOM, then ``strlen(utf-8 text) * 2`` bytes of the UCS-2 buffer, i.e. the text and
    two bytes per extra UTF-8 byte from past its end (zeroed memory as a rule)."""
    ucs2 = text.encode("utf-16-be")
    extra = 2 * len(text.encode("utf-8")) - len(ucs2)
    tail = past_the_text if past_the_text is not None else b"\0" * extra
    assert len(tail) == extra
    return b"\xfe\xff" + ucs2 + tail


def test_nul_padding_of_a_unicode_file_is_stripped(tmp_path: Path) -> None:
    """Seen with the real gammu-smsd 1.42 under LANG=C.UTF-8: one NUL per non-ASCII character."""
    name = tmp_path / INBOX_NAME
    name.write_bytes(gammu_142_unicode_file(CYRILLIC))
    assert name.read_bytes().endswith(b"\0" * 2 * 32)
    (by_hand,) = messages_from_gammu({"PHONE_ID": "modem1"}, [str(name)], CFG, None, NOW)
    assert by_hand.text == CYRILLIC
    env = {"SMS_MESSAGES": "1", "PHONE_ID": "modem1", "SMS_1_NUMBER": "+79001112233"}
    (hook,) = messages_from_gammu(env, [str(name)], CFG, None, NOW)
    assert hook.text == CYRILLIC and "\0" not in hook.text
    assert hook.source_ref == by_hand.source_ref


def test_unicode_file_parts_are_cut_to_the_length_the_environment_gives(tmp_path: Path) -> None:
    """Bytes past the text need not be NULs; each part's SMS_<n>_TEXT gives its true length,
    whether gammu wrote it exactly (UTF-8 locale) or with '?' (C locale)."""
    pieces = ["Первая часть ", "и вторая"]
    names = []
    for i, piece in enumerate(pieces):
        name = tmp_path / f"IN20261127_161916_00_+79005556677_{i:02}.txt"
        extra = 2 * len(piece.encode("utf-8")) - 2 * len(piece)
        name.write_bytes(gammu_142_unicode_file(piece, bytes(range(0x41, 0x41 + extra))))
        names.append(str(name))
    base = {"SMS_MESSAGES": "2", "PHONE_ID": "modem1", "SMS_1_NUMBER": "+79005556677"}
    utf8 = {**base, "SMS_1_TEXT": pieces[0], "SMS_2_TEXT": pieces[1]}
    c_locale = {k: "".join(c if c.isascii() else "?" for c in v) for k, v in utf8.items()}
    for env in (utf8, c_locale):
        (m,) = messages_from_gammu(env, names, CFG, None, NOW)
        assert m.text == "Первая часть и вторая"


# -- the hook as gammu-smsd runs it -------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def run_hook(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``sms-gateway ingest --gammu`` in a subprocess with gammu's environment, bounded."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[upstream]\nurl = "http://127.0.0.1:9/push"\napi_key = "k"\n'
        f'[store]\npath = "{tmp_path / "outbox.sqlite3"}"\n',
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", "-c", str(config), "--gammu", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_field_the_rules_refuse_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    """A sender longer than the field rules take: exit 2 (gammu-smsd keeps the file, and a
    person must look), not 1 (a store failure worth retrying), and the store is not touched."""
    env = {**SINGLE, "SMS_1_NUMBER": "+7" + "9" * 300}
    done = run_hook(tmp_path, env, "--phone", "79001234567")
    assert done.returncode == 2, done.stderr
    assert "SMS_1_NUMBER" in done.stderr and "longer than 256 characters" in done.stderr
    assert not (tmp_path / "outbox.sqlite3").exists()
    assert run_hook(tmp_path, SINGLE, "--phone", "79001234567").returncode == 0
