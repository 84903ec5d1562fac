"""The command line's edges: bad flag values, busy ports, closed pipes, `make run PORT=`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.daemon import write_config

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def store_config(tmp_path: Path) -> str:
    """A config whose store holds one message, received by +7 900 123-45-67."""
    cfg = str(write_config(tmp_path, "http://127.0.0.1:9/v1/PUSH_SMS"))
    took = cli("ingest", "-c", cfg, "--phone", "79001234567", "--from", "Bank", "--text", "hi")
    assert took.returncode == 0, took.stderr
    return cfg


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_list_refuses_a_limit_below_one(store_config: str, limit: str) -> None:
    result = cli("messages", "list", "--limit", limit, "-c", store_config)
    assert result.returncode == 2
    assert "--limit" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("phone", ["79001234567", "+7 900 123-45-67", "+7 (900) 123.45.67"])
def test_list_takes_the_phone_as_v1_sms_does(store_config: str, phone: str) -> None:
    result = cli("messages", "list", "--phone", phone, "--json", "-c", store_config)
    assert result.returncode == 0, result.stderr
    assert [m["phone"] for m in json.loads(result.stdout)] == ["79001234567"]


def test_list_refuses_what_is_not_a_phone(store_config: str) -> None:
    result = cli("messages", "list", "--phone", "Bank", "-c", store_config)
    assert result.returncode == 2
    assert "--phone" in result.stderr
    assert "Traceback" not in result.stderr


def test_stand_in_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    result = cli("stand-in", "--port", str(busy_port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{busy_port}" in result.stderr
    assert "--port" in result.stderr


def test_demo_on_a_busy_port_says_which_flag_to_use(tmp_path: Path, busy_port: int) -> None:
    result = cli("demo", "--port", str(busy_port), "--dir", str(tmp_path / "demo"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]  # after the new store's log line, if any
    assert error.startswith("sms-gateway: demo:")
    assert str(busy_port) in error
    assert "--port" in error
    assert "PORT=" in error


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["messages", "list"],
        ["messages", "show", "1"],
        ["check-config"],
    ],
)
def test_a_closed_stdout_ends_the_command_quietly(store_config: str, args: list[str]) -> None:
    """`status | head`: the reader is gone before we write; no traceback, no noise."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, as after `head` has exited
    try:
        result = cli(*args, "-c", store_config, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 1


def test_help_into_a_closed_pipe_is_quiet() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = cli("messages", "list", "--help", stdout=write_end)
    finally:
        os.close(write_end)
    assert result.stderr == ""


def test_make_run_takes_a_port() -> None:
    dry = subprocess.run(
        ["make", "-n", "run", "PORT=8123"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert dry.returncode == 0, dry.stderr
    assert "sms-gateway demo --port 8123" in dry.stdout
