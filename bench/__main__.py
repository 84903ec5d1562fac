"""`make bench`: every benchmark, each against a baseline taken in the same run.

Prints each figure with its target and PASS/FAIL and writes bench/results.json. A FAIL is an
honest result, not an error: the exit status is 0 unless a benchmark could not run.
`python -m bench NAME...` runs only the named ones (drain ingest latency backlog modems
gammu partner smpp status_page).
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import backlog, drain, gammu, ingest, latency, modems, partner, smpp, status_page
from bench.common import verdict

RESULTS = Path(__file__).resolve().parent / "results.json"
BENCHMARKS: dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = {
    "drain": drain.run,
    "ingest": ingest.run,
    "latency": latency.run,
    "backlog": backlog.run,
    "modems": modems.run,
    "gammu": gammu.run,  # the sixth: skipped (printed "not run") without gammu-smsd, jq or curl
    "partner": partner.run,  # GET_NUMBER and GET_SERVICES latency with 10,000 SIMs
    "smpp": smpp.run,  # deliver_sm/s over one bind, window 10, committed before each resp
    "status_page": status_page.run,  # /status.json at 10 req/s with 256 modems: added CPU
}


def figures(tree: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """Every PASS/FAIL figure: `x_pass` keys where present, else `pass`, else nested ones."""
    out: dict[str, bool] = {}
    for name, value in tree.items():
        if not isinstance(value, dict):
            continue
        label = f"{prefix}{name}"
        parts = {k[: -len("_pass")]: v for k, v in value.items() if k.endswith("_pass")}
        if parts:
            out.update({f"{label}.{k}": bool(v) for k, v in parts.items()})
        elif "pass" in value:
            out[label] = bool(value["pass"])
        else:
            out.update(figures(value, f"{label}."))
    return out


def main() -> int:
    wanted = sys.argv[1:] or list(BENCHMARKS)
    unknown = [w for w in wanted if w not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {unknown}; choose from {list(BENCHMARKS)}")
        return 2
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "benchmarks": {},
    }
    failed_to_run = False
    t_all = time.perf_counter()
    for name in wanted:
        t0 = time.perf_counter()
        try:
            result: dict[str, Any] = asyncio.run(BENCHMARKS[name]())
        except Exception as e:
            traceback.print_exc()
            print(f"{name}: could not run: {e}", flush=True)
            result = {"error": str(e), "pass": False}
            failed_to_run = True
        result["seconds"] = round(time.perf_counter() - t0, 1)
        results["benchmarks"][name] = result
        print(f"  ({name} took {result['seconds']} s)", flush=True)
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    verdicts = figures(results["benchmarks"])
    results["summary"] = verdicts
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    passed = sum(1 for v in verdicts.values() if v)
    print(
        f"total {results['total_seconds']} s; {passed}/{len(verdicts)} figures pass"
        f" ({', '.join(f'{k} {verdict(v)}' for k, v in verdicts.items())});"
        f" results in {RESULTS}",
        flush=True,
    )
    return 1 if failed_to_run else 0


if __name__ == "__main__":
    sys.exit(main())
