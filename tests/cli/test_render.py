"""Human output shows untrusted SMS text without letting it act on the operator's terminal."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import render
from gateway.cli.store_cmds import list_text, show_text, status_text
from gateway.outbox import Attempt, Drop, Hold, Message, Outcome, State

# What an SMS could use against a terminal: escape sequences (title, clear screen, cursor moves),
# CR and BS to overwrite, C1 CSI/OSC/NEL, bidi overrides and isolates, line separators.
HOSTILE = [
    "\x1b]0;pwned\x07",
    "\x1b[2J",
    "\x1b[1A",
    "\r",
    "\n",
    "\b",
    "\x00",
    "\x7f",
    "\x85",
    "\x9b",
    "\x9d",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u200f",
    "\u061c",
    "\u2028",
    "\u2029",
    "\x1c",
    "\ud800",
    "\ufeff",
]
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

untrusted = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=()))),
    max_size=8,
).map("".join)


def assert_inert(out: str, lines: int) -> None:
    """No control character but the table's own newlines, no bidi control, no forged line."""
    assert [c for c in out if unicodedata.category(c) == "Cc" and c != "\n"] == []
    assert not BIDI & set(out)
    assert len(out.splitlines()) == lines  # splitlines also breaks at \x1c-\x1e, \x85, \u2028...
    out.encode("utf-8")  # no lone surrogate: print would raise


def message(sms_id: int, text: str, sender: str, code: str | None, ref: str | None) -> Message:
    return Message(
        sms_id=sms_id,
        source="http",
        source_ref=ref,
        phone="79001234567",
        phone_from=sender,
        text=text,
        received_at=1_800_000_000.0,
        accepted_at=1_800_000_000.0,
        state=State.DROPPED,
        due_at=1_800_000_000.0,
        attempts=1,
        finished_at=1_800_000_001.0,
        final_code=code,
        raw=text,
    )


def test_escapes_are_shown_as_escapes() -> None:
    assert render.visible("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"
    assert render.visible("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert render.visible("\u202eevil") == "\\u202eevil"
    assert render.visible("\x9b2J\x7f") == "\\x9b2J\\x7f"


def test_ordinary_text_is_left_alone() -> None:
    for text in ["Код подтверждения: 31337 🙂", "👨\u200d👩\u200d👧", "می\u200cخواهم", "a  b", ""]:
        assert render.visible(text) == text


@given(untrusted)
def test_visible_output_is_printable_and_stable(text: str) -> None:
    out = render.visible(text)
    assert_inert(out, lines=1 if out else 0)
    assert render.visible(out) == out


@given(st.lists(st.tuples(untrusted, untrusted, st.none() | untrusted), max_size=5))
def test_messages_list_is_one_line_per_message(rows: list[tuple[str, str, str | None]]) -> None:
    found = [
        message(i + 1, text, sender, code, None) for i, (text, sender, code) in enumerate(rows)
    ]
    assert_inert(list_text(found), lines=1 + len(rows))


@given(untrusted, untrusted, untrusted, st.lists(st.tuples(untrusted, untrusted), max_size=3))
def test_messages_show_has_one_line_per_field_and_attempt(
    text: str, sender: str, ref: str, bodies: list[tuple[str, str]]
) -> None:
    attempts = [
        Attempt(1, 1_800_000_000.0, 0.1, Outcome.RETRY, 500, code, error=code, body=body)
        for body, code in bodies
    ]
    m = message(1, text, sender, ref, ref)
    fields = len(vars(m)) - 2  # activation_id and rent_service: shown only when set
    assert_inert(show_text(m, attempts), lines=fields + 2 + len(attempts))


@given(untrusted, st.lists(st.tuples(untrusted, untrusted), max_size=4))
def test_status_has_one_line_per_drop(store: str, drops: list[tuple[str, str]]) -> None:
    recent = [
        Drop(i, "79001234567", sender, code, 1_800_000_000.0, State.DROPPED)
        for i, (sender, code) in enumerate(drops)
    ]
    counts = {s.value: 0 for s in State}
    out = status_text(store, counts, None, None, recent, 1_800_000_100.0)
    assert_inert(out, lines=4 + (1 + 1 + len(recent) if recent else 0))


def test_a_held_message_shows_why_it_is_held() -> None:
    held = Message(
        sms_id=7,
        source="modem",
        source_ref=None,
        phone="",
        phone_from="Bank",
        text="",
        received_at=1_800_000_000.0,
        accepted_at=1_800_000_000.0,
        state=State.HELD,
        due_at=1_800_000_000.0,
        attempts=0,
        finished_at=None,
        final_code=None,
        hold_reason=Hold.UNDECODABLE,
    )
    assert "undecodable" in list_text([held]).splitlines()[1]
