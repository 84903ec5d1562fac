"""AT framing: bytes -> lines, any chunking, bounded memory on any input."""

from __future__ import annotations

import string
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from gateway.sources.modem.framing import Line, LineFramer


def texts(lines: Sequence[Line]) -> list[str]:
    return [line.text for line in lines]


def feed_chunked(data: bytes, cuts: Sequence[int], max_line: int = 4096) -> list[Line]:
    framer = LineFramer(max_line)
    out: list[Line] = []
    start = 0
    for cut in sorted(set(cuts)):
        out += framer.feed(data[start:cut])
        start = cut
    out += framer.feed(data[start:])
    return out


# ---------------------------------------------------------------------------------- framer


def test_framer_splits_on_crlf_cr_and_lf_and_drops_empty_lines() -> None:
    framer = LineFramer()
    data = b"\r\nOK\r\n\r\n+CSQ: 20,99\rRING\nlast"
    assert texts(framer.feed(data)) == ["OK", "+CSQ: 20,99", "RING"]
    assert framer.pending == 4
    assert texts(framer.feed(b"\r\n")) == ["last"]


def test_framer_reports_the_prompt_without_terminator() -> None:
    framer = LineFramer()
    lines = framer.feed(b"AT+CMGS=23\r\r\n> ")
    assert texts(lines) == ["AT+CMGS=23", ">"]
    assert lines[1].prompt
    assert framer.pending == 0


def test_framer_prompt_split_across_chunks() -> None:
    framer = LineFramer()
    assert framer.feed(b"\r\n>") == []
    lines = framer.feed(b" ")
    assert len(lines) == 1
    assert lines[0].prompt


def test_framer_greater_than_without_space_is_a_line() -> None:
    assert texts(LineFramer().feed(b">x\r\n>\r\n")) == [">x", ">"]


def test_framer_flags_invalid_utf8_and_control_characters() -> None:
    lines = LineFramer().feed(b"\xff\xfeOK\r\n\x00\x00\r\nfine\r\n")
    assert [(line.garbled, line.invalid) for line in lines] == [
        (True, True),
        (True, True),
        (False, False),
    ]
    assert lines[0].text == "\ufffd\ufffdOK"
    assert lines[0].raw == b"\xff\xfeOK"


def test_framer_caps_line_length_and_resumes_at_next_terminator() -> None:
    framer = LineFramer(max_line=16)
    lines = framer.feed(b"A" * 40)
    assert len(lines) == 1
    assert lines[0].truncated
    assert lines[0].raw == b"A" * 16
    assert framer.pending == 0
    assert framer.feed(b"B" * 10_000) == []
    assert framer.pending == 0
    assert texts(framer.feed(b"CCC\r\nOK\r\n")) == ["OK"]


def test_framer_line_of_exactly_max_length_is_whole() -> None:
    lines = LineFramer(max_line=4).feed(b"ABCD\r\n")
    assert texts(lines) == ["ABCD"]
    assert not lines[0].truncated


_TOKENS = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"> ", b">", b" ", b"OK", b'+CMTI: "SM",3', b"\xff", b"\x00", b"A" * 20]
)
_STREAM = st.one_of(
    st.binary(max_size=300),
    st.lists(_TOKENS, max_size=40).map(b"".join),
)


@given(data=_STREAM, cuts=st.lists(st.integers(0, 300), max_size=20), max_line=st.integers(2, 64))
def test_framer_any_chunking_gives_the_same_lines(
    data: bytes, cuts: list[int], max_line: int
) -> None:
    whole = LineFramer(max_line).feed(data)
    assert feed_chunked(data, cuts, max_line) == whole
    bytewise = feed_chunked(data, list(range(len(data))), max_line)
    assert bytewise == whole


@given(chunks=st.lists(st.binary(max_size=200), max_size=30), max_line=st.integers(2, 64))
def test_framer_random_bytes_never_crash_and_memory_is_bounded(
    chunks: list[bytes], max_line: int
) -> None:
    framer = LineFramer(max_line)
    for chunk in chunks:
        for line in framer.feed(chunk):
            assert len(line.raw) <= max_line
            assert b"\r" not in line.raw
            assert b"\n" not in line.raw
            assert line.prompt or line.garbled or line.text
        assert framer.pending <= max_line


_PRINTABLE_LINE = st.text(
    alphabet=string.ascii_letters + string.digits + '+:,"^#= ', min_size=1, max_size=60
).filter(lambda s: s.strip() != "" and not s.startswith("> ") and s != ">")


@given(
    lines=st.lists(_PRINTABLE_LINE, max_size=20),
    terminators=st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"\r\n\r\n"]), min_size=1),
)
def test_framer_round_trips_printable_lines(lines: list[str], terminators: list[bytes]) -> None:
    data = b"".join(
        line.encode() + terminators[i % len(terminators)] for i, line in enumerate(lines)
    )
    out = LineFramer().feed(data)
    assert texts(out) == [line.strip() for line in lines]
    assert not any(line.garbled for line in out)
