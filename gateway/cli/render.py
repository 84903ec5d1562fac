"""Turn values into text for people: TOML for config, aligned tables, ages and times."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the effective config: tables of scalars and lists."""
    out: list[str] = []
    for section, values in data.items():
        if isinstance(values, list) and values and all(isinstance(v, Mapping) for v in values):
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


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
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
    flat = text.replace("\r", " ").replace("\n", " ")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)
