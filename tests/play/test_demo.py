"""`sms-gateway demo` end to end, as `make run` starts it: a real subprocess with its stand-in,
daemon, simulated modems and SMPP box, read until it says where to look, then stopped by
SIGINT as Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

STARTUP = 120.0  # the demo's steps until "where to look" (about 10 s on a quiet machine)
STOP = 30.0  # SIGINT to exit: the daemon stops within 5 s, the modems and stand-in at once


async def read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> list[str]:
    """Lines up to and including the first containing `marker`; fails after `timeout` s."""
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await stream.readline()
                if not raw:
                    pytest.fail("the demo's stdout ended early:\n" + "".join(lines))
                lines.append(raw.decode())
                if marker in lines[-1]:
                    return lines
    except TimeoutError:
        pytest.fail(f"no {marker!r} within {timeout:g} s; got:\n" + "".join(lines))


def one(pattern: str, text: str) -> re.Match[str]:
    found = list(re.finditer(pattern, text, re.MULTILINE))
    assert len(found) == 1, f"{pattern!r}: {len(found)} matches in\n{text}"
    return found[0]


@pytest.mark.timeout(2 * (STARTUP + STOP) + 30)
async def test_demo_shows_every_source_and_stops_on_sigint_twice_in_one_dir(
    tmp_path: Path,
) -> None:
    """`make run` twice: the second run starts from a fresh store (the first one's sale would
    otherwise keep that number from ever being offered for vk again)."""
    for run in (1, 2):
        await demo_once(tmp_path, run)


async def demo_once(tmp_path: Path, run: int) -> None:
    stderr_path = tmp_path / f"stderr-{run}.txt"
    errors = stderr_path.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--port", "0", "--dir", str(tmp_path / "demo"),
        stdout=asyncio.subprocess.PIPE, stderr=errors, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines = await read_until(proc.stdout, "where to look", STARTUP)
        out = "".join(lines)

        # The partner cycle on a modem: the order, its SMS pushed, FINISH 3.
        first = one(r"orders a number in russia for vk:\n  GET_NUMBER -> number (\d+),", out)[1]
        one(rf"PUSH_SMS smsId \d+ phone {first} from VK -> HTTP 200$", out)
        one(r"the stand-in FINISHed activation \d+ with status 3 \(sold\)$", out)
        # Nobody ordered these: kept, not pushed.
        one(r"kept, not pushed: smsId \d+ is held \(no_activation\); pushes for \d+: 0$", out)
        one(r'the same through the ingest API .*: 201 \{"smsId": \d+\}, kept as well$', out)
        # The second order's SMS, handed by a box over SMPP: ROK once committed, then pushed.
        second = one(r"in kazakhstan for tg:\n  GET_NUMBER -> number (\d+),", out)[1]
        one(r"bind_transceiver as demo-box to 127\.0\.0\.1:\d+ -> ROK", out)
        one(rf"submit_sm from Telegram to {second}: 'Telegram code \d+'$", out)
        sms_id = one(
            r"submit_sm_resp ROK, message_id [0-9a-f]+ \(answered after the commit:"
            r" smsId (\d+) was in the store\)",
            out,
        )[1]
        one(rf"PUSH_SMS smsId {sms_id} phone {second} from Telegram -> HTTP 200$", out)
        assert "Traceback" not in out

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(STOP):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        errors.close()
    stderr = stderr_path.read_text()
    assert rest.rstrip().endswith("demo stopped"), rest
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "russia vk 4 -> 3 (sold" in out and "russia wa 4 -> 4" in out  # the count, by one
    printed_commands_work(out + rest, tmp_path, first)


def printed_commands_work(output: str, tmp_path: Path, phone: str) -> None:
    """The commands the demo prints work as shown, from any directory, without .venv/bin on
    the PATH (the daemon has stopped: they read its store)."""
    [status_line] = [line for line in output.splitlines() if " status -c " in line]
    shown = subprocess.run(
        shlex.split(status_line),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "delivered 2" in shown.stdout and "held 2" in shown.stdout, shown.stdout
    [activations_line] = [line for line in output.splitlines() if " activations list " in line]
    shown = subprocess.run(
        shlex.split(activations_line), capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"\d+\s+finished\s+3 sold\s+{phone}\s+vk", shown.stdout), shown.stdout
