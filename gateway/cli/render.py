"""Turn values into text for people: TOML for config, aligned tables, ages and times.

Every human-facing line the CLI prints about stored data goes through `visible`: sender and
text come from anyone who can send an SMS, and a raw escape sequence would reach the
operator's terminal. `--json` output is exact instead (json.dumps escapes what it must).
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the effective config: tables of scalars and lists.

    An optional table left out of the file (None: the feature is off) is a comment, as an empty
    array of tables is: TOML has no null, and the output must load as TOML again.
    """
    out: list[str] = []
    for section, values in data.items():
        if values is None:
            out.append(f"# no [{section}]")
            out.append("")
        elif isinstance(values, list) and values and all(isinstance(v, Mapping) for v in values):
            for table in values:
                out.append(f"[[{section}]]")
                out.extend(f"{k} = {_value(v)}" for k, v in table.items())
                out.append("")
        elif isinstance(values, list) and not values:
            out.append(f"# no [[{section}]]")
            out.append("")
        elif isinstance(values, Mapping):
            out.append(f"[{section}]")
            out.extend(f"{k} = {_value(v)}" for k, v in values.items())
            out.append("")
        else:
            out.insert(0, f"{section} = {_value(values)}")
    return "\n".join(out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, Sequence) and not isinstance(v, str):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)


# Format characters that do no harm and that real text needs: zero-width (non-)joiners join
# emoji sequences and Persian/Indic letters; tags U+E0020-E007F spell subdivision flags.
_HARMLESS_FORMAT = frozenset("\u200c\u200d") | frozenset(map(chr, range(0xE0020, 0xE0080)))
# Cc: C0, DEL, C1 (escape sequences, CR, BS, NEL...); Cf: bidi overrides and isolates, zero-width
# spaces; Zl/Zp: line and paragraph separators; Cs: lone surrogates (print would fail on them).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """`text` with every character that could move the cursor, change the terminal, reorder a
    line or start a new one written as a Python-style escape (`\\x1b`, `\\n`, `\\u202e`).

    The result is all printable, so a stored SMS cannot retitle, clear or forge lines on the
    operator's terminal; applying it twice changes nothing.
    """
    if text.isprintable():  # the common case; isprintable() is False for every unsafe one
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in _UNSAFE_CATEGORIES and c not in _HARMLESS_FORMAT


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns; every cell through `visible`, so each row stays one line."""
    cells = [[visible(str(h)) for h in headers]] + [
        ["" if c is None else visible(str(c)) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    s = max(0.0, (now if now is not None else time.time()) - ts)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def one_line(text: str, width: int = 40) -> str:
    """`text` made `visible` (newlines shown as `\\n`) and cut to `width` characters."""
    flat = visible(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)
