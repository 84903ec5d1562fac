"""AT framing: a modem's byte stream -> :class:`Line` objects, the ``> `` prompt included.

Pure and synchronous (bellows' ``ash`` layer): lines end at CR or LF, the prompt of
``AT+CMGS`` has no terminator, undecodable lines are flagged and line length is capped, so
memory stays bounded whatever the port sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_LINE", "Line", "LineFramer"]

MAX_LINE = 4096
_PROMPT = b"> "
_TERMINATORS = b"\r\n"


@dataclass(frozen=True, slots=True)
class Line:
    """One line from the modem, without its terminator.

    ``text`` is the decoded, stripped line (invalid UTF-8 replaced). ``prompt`` marks the
    ``> `` prompt (``text == ">"``). ``invalid`` marks bytes that are not UTF-8 or hold control
    characters; ``truncated`` a line cut at :data:`MAX_LINE` bytes. Either makes it ``garbled``.
    """

    text: str
    raw: bytes
    prompt: bool = False
    invalid: bool = False
    truncated: bool = False

    @property
    def garbled(self) -> bool:
        return self.invalid or self.truncated


_PROMPT_LINE = Line(text=">", raw=_PROMPT, prompt=True)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _make_line(raw: bytes, *, truncated: bool = False) -> Line | None:
    invalid = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        invalid = True
    if _CONTROL.search(text):
        invalid = True
    text = text.strip()
    if not text and not invalid and not truncated:
        return None
    return Line(text=text, raw=raw, invalid=invalid, truncated=truncated)


class LineFramer:
    """Split a modem byte stream into :class:`Line` objects. Any chunking, same lines.

    * lines end at CR or LF (``\\r\\n``, bare ``\\r`` or bare ``\\n``); empty lines are dropped;
    * ``> `` at the start of a line is the SMS input prompt: it has no terminator and is
      reported at once as a prompt line;
    * a line longer than ``max_line`` bytes is reported once, truncated and flagged, and the rest
      of it up to the next terminator is discarded, so memory stays bounded on any input.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 2:
            raise ValueError("max_line must be at least 2")
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        buf = self._buf
        i, n = 0, len(data)
        while i < n:
            if self._discarding:
                j = _find_terminator(data, i)
                if j < 0:
                    return out
                self._discarding = False
                i = j + 1
                continue
            if not buf:
                if data[i] in _TERMINATORS:
                    i += 1
                    continue
                if data.startswith(_PROMPT, i):
                    out.append(_PROMPT_LINE)
                    i += len(_PROMPT)
                    continue
            elif buf == b">" and data[i] == 0x20:
                buf.clear()
                out.append(_PROMPT_LINE)
                i += 1
                continue
            j = _find_terminator(data, i)
            end = n if j < 0 else j
            room = self._max - len(buf)
            if end - i > room:
                buf += data[i : i + room]
                line = _make_line(bytes(buf), truncated=True)
                buf.clear()
                if line is not None:
                    out.append(line)
                self._discarding = True
                i += room
                continue
            buf += data[i:end]
            if j < 0:
                return out
            line = _make_line(bytes(buf))
            buf.clear()
            if line is not None:
                out.append(line)
            i = j + 1
        return out


def _find_terminator(data: bytes, start: int) -> int:
    cr = data.find(b"\r", start)
    lf = data.find(b"\n", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)
