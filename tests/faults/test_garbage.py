"""Garbage in (modem line noise, random HTTP bodies, random config files): no crash, no 500."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.play.standin import StandIn
from tests.fakes.daemon import INGEST_TOKEN, DaemonProcess
from tests.sources.modem.conftest import FakeFactory, fakes, sms
from tests.sources.modem.test_modem_e2e import modem_config, pushes_for

__all__ = ["fakes"]  # fixture

# --- (a) line noise on a modem ---------------------------------------------------------------


async def test_line_noise_on_a_modem_neither_kills_the_daemon_nor_loses_the_next_sms(
    fakes: FakeFactory, daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    rng = random.Random(7)
    fake = fakes("simcom")
    daemon: DaemonProcess = await daemon_factory(extra=modem_config(fake, with_sim=True))
    await fake.wait_command("AT+CNMI", timeout=10)
    noise = [
        rng.randbytes(2000),
        b'\r\n+CMTI: "SM",\r\n+CMTI: "SM",99999999999999999999\r\n',
        b"\r\n+CMT: ,9999\r\nZZZZ-not-hex\r\n",
        b"\r\n+CMGL: 1,0,,\r\n\xff\xfe\x00\r\nOK\r\nERROR\r\n",
        b"\x00" * 500 + b"\r\n",
        rng.randbytes(6000),  # longer than any line the host should buffer, no newline
        b"\r\n" + bytes(rng.randrange(256) for _ in range(300)) + b"\r\n",
    ]
    for chunk in noise:
        fake.emit_garbage(chunk)
        assert daemon.proc is not None and daemon.proc.poll() is None
    fake.emit_garbage(b"\r\n")
    fake.deliver(sms("code 2468 after the noise", sender="Bank"))
    await standin.wait_for(lambda s: len(pushes_for(s, "code 2468 after the noise")) == 1, 20)
    (push,) = pushes_for(standin, "code 2468 after the noise")
    assert push["phoneFrom"] == "Bank"
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert await daemon.stop() == 0


# --- (b) random HTTP bodies -------------------------------------------------------------------

FIELDS = ("phone", "phoneFrom", "text", "receivedAt", "id")


def random_scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            rng.randint(-(2**70), 2**70),
            rng.uniform(-1e300, 1e300),
            "",
            "+7 (900) 123-45-67",
            "79001234567",
            "2026-11-27T10:00:00Z",
            "not-a-date",
            "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(30))),
            "\ud800",  # a lone surrogate, as JSON "\ud800"
        ]
    )


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(4 if depth < 4 else 1)
    if kind == 0:
        return random_scalar(rng)
    if kind == 1:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 2:
        keys = [*FIELDS, "", "smsId", "x" * 300]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    return random_message(rng)


def random_message(rng: random.Random) -> dict[str, Any]:
    """An object with mostly the right fields, each of a random type or value."""
    message: dict[str, Any] = {}
    for field in FIELDS:
        if rng.random() < 0.85:
            message[field] = rng.choice(
                [random_scalar(rng), random_scalar(rng), [], {}, "x" * rng.randrange(0, 300)]
            )
    if rng.random() < 0.1:
        message["text"] = "t" * 100_001  # just over the text limit
    return message


def random_body(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(200))
    if kind == 1:
        return json.dumps(random_json(rng), ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )
    if kind == 2:
        items = [random_message(rng) for _ in range(rng.choice([0, 1, 3, 1001]))]
        return json.dumps(items).encode()
    if kind == 3:
        text = json.dumps(random_message(rng))
        return text[: rng.randrange(len(text) + 1)].encode()  # cut short
    if kind == 4:
        return b'{"phone": "79001234567", "phoneFrom": "S", "text": "' + b"\xff\xfe" + b'"}'
    if kind == 5:
        return json.dumps(rng.choice([math.inf, -math.inf, math.nan, 1e400])).encode()
    if kind == 6:  # a valid message with random text: must be taken
        text = "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(200)))
        return json.dumps({"phone": "79001234567", "phoneFrom": "Fuzz", "text": text}).encode()
    return b"[" + b" " * (1024 * 1024) + b"]"  # over the 1 MiB body limit


async def test_random_http_bodies_get_a_4xx_or_2xx_and_never_a_500(
    daemon: DaemonProcess,
) -> None:
    rng = random.Random(20261127)
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    answers: list[tuple[int, bytes]] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(200):
            body = random_body(rng)
            async with session.post(daemon.base + "/v1/sms", data=body, headers=headers) as r:
                await r.read()
                answers.append((r.status, body[:200]))
    unexpected = [(s, b) for s, b in answers if s not in (200, 201, 400, 413)]
    assert unexpected == []
    assert {s for s, _ in answers} >= {201, 400, 413}  # the generator reached every branch
    assert daemon.proc is not None and daemon.proc.poll() is None
    status, _ = await daemon.health()
    assert status == 200


@pytest.mark.parametrize("depth", [1000, 100_000])
async def test_deeply_nested_json_is_a_400_not_a_500(daemon: DaemonProcess, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    status, answer = await daemon.request("POST", "/v1/sms", data=body)
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert status == 400, (status, answer)


# --- (c) random config files --------------------------------------------------------------------

SECTIONS = ["upstream", "store", "ids", "http", "log", "modems", "gammu", "smstools", "zzz"]
ARRAYS = ["modem", "sim", "dinstar", "ejoin", "goip", "yeastar"]
KEYS = [
    "url", "api_key", "retry_interval", "timeout", "concurrency", "max_age", "drop_on",
    "circuit_after", "bearer_header", "phone_type", "path", "keep_finished", "node", "nodes",
    "listen", "ingest_token", "level", "format", "scan_interval", "port", "name", "baudrate",
    "pin", "phone", "iccid", "imsi", "source", "token", "allow", "id", "password", "host",
    "username", "phones", "api_key_file", "quiet_period",
]  # fmt: skip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "https://h/v1/PUSH_SMS",
            "127.0.0.1:0",
            "[::1]:99999",
            "string",
            "integer",
            "debug",
            "json",
            "/dev/null",
            "/nonexistent/x",
            "",
            "79001234567",
            "10.0.0.0/8",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)
tables = st.dictionaries(keys, values, max_size=6)


def toml_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    lines: list[str] = []
    if draw(st.booleans()):
        lines += ["[upstream]", 'url = "https://h/v1/PUSH_SMS"', 'api_key = "k"']
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in draw(tables).items()]
    for name in draw(st.lists(st.sampled_from(SECTIONS), max_size=3, unique=True)):
        if name == "upstream" and lines:
            continue
        lines.append(f"[{name}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in draw(tables).items()]
    for name in draw(st.lists(st.sampled_from(ARRAYS), max_size=2)):
        lines.append(f"[[{name}]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in draw(tables).items()]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # cut anywhere
    return text.encode("utf-8", "surrogatepass") + draw(st.sampled_from([b"", b"\xff", b"\x00"]))


@settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.one_of(toml_documents(), toml_documents(), st.binary(max_size=300)))
def test_random_config_files_are_accepted_or_refused_cleanly(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.toml"
        path.write_bytes(document)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
            capture_output=True,
            timeout=30,
            cwd=directory,
        )
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert done.returncode in (0, 2), (done.returncode, stderr)
