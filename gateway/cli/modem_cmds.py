"""`sms-gateway modems probe`: identify each modem and print a ready config snippet."""

from __future__ import annotations

import argparse
import sys

from gateway.config import Config
from gateway.sources.modem.probe import ProbeResult, probe_port, render_snippet


async def probe(args: argparse.Namespace, cfg: Config | None) -> int:
    """Probe the ports given, else the configured ones; exit 1 if none answered."""
    targets: list[tuple[str, int, str]] = [(p, args.baudrate, "") for p in args.ports]
    if not targets and cfg is not None:
        targets = [(m.port, m.baudrate, m.pin) for m in cfg.modem]
    if not targets:
        print("sms-gateway: no ports: give them (modems probe /dev/ttyUSB0 ...) "
              "or configure [[modem]] tables", file=sys.stderr)  # fmt: skip
        return 2
    results: list[ProbeResult] = []
    for port, baudrate, pin in targets:
        result = await probe_port(port, baudrate, pin=pin, timeout=args.timeout)
        results.append(result)
    print(render_snippet(results), end="")
    return 0 if any(r.error is None for r in results) else 1
