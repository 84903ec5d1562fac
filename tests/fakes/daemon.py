"""The real daemon in a subprocess (`python -m gateway run`), watched over sd_notify and logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

INGEST_TOKEN = "test-ingest-token-0123456789"
STATUS_TOKEN = "test-status-token-9876543210"
API_KEY = "test-api-key-SECRET-abcdef"


def write_config(
    directory: Path,
    upstream_url: str,
    *,
    upstream: dict[str, Any] | None = None,
    extra: str = "",
    token: str = INGEST_TOKEN,
    store: str | None = None,
    http: dict[str, Any] | None = None,
) -> Path:
    """A config for tests: short intervals, a store in `directory`, any free HTTP port."""
    up = {"url": upstream_url, "api_key": API_KEY, "retry_interval": 0.5, "timeout": 2.0}
    up.update(upstream or {})
    lines = ["[upstream]"] + [f"{k} = {json.dumps(v)}" for k, v in up.items()]
    lines += ["", "[store]", f"path = {json.dumps(store or str(directory / 'outbox.sqlite3'))}"]
    lines += ["", "[http]", 'listen = "127.0.0.1:0"', f"ingest_token = {json.dumps(token)}"]
    http = {"status_token": STATUS_TOKEN, **(http or {})}
    lines += [f"{k} = {json.dumps(v)}" for k, v in http.items()]
    lines += ["", "[log]", 'level = "debug"', "", extra]
    path = directory / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class DaemonProcess:
    def __init__(
        self,
        config_path: Path,
        *,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.prefix = list(prefix)  # e.g. ["prlimit", "--nofile=1024", "--"]
        self.dir = config_path.parent
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._runs = 0
        self.stderr_path = self.dir / "daemon.log"
        self.notifications: list[str] = []
        self._notify_sock: socket.socket | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15.0) -> None:
        """Start and wait for READY=1 on a real NOTIFY_SOCKET (this run's, not an earlier one's)."""
        self._runs += 1
        self.notifications = []
        self.port = None
        sock_path = str(self.dir / f"notify-{self._runs}.sock")
        self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify_sock.bind(sock_path)
        self._notify_sock.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("SMS_GATEWAY_CONFIG", None)
        self._entries_before = len(self.logs()) if self.stderr_path.exists() else 0
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)],
                stdout=err,
                stderr=err,
                env=env,
            )
        await self.wait_notification("READY=1", timeout)
        for entry in self.logs()[self._entries_before :]:
            if entry.get("event") == "http.listening":
                self.port = int(entry["port"])
        assert self.port, "daemon did not log http.listening"

    async def wait_notification(self, text: str, timeout: float) -> None:
        assert self._notify_sock is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not any(text in n for n in self.notifications):
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(
                        f"daemon exited {self.proc.returncode}:\n{self.log_text()}"
                    )
                try:
                    data = await asyncio.wait_for(loop.sock_recv(self._notify_sock, 4096), 0.2)
                except TimeoutError:
                    continue
                self.notifications.append(data.decode())

    def log_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (all runs); a non-JSON line fails the test."""
        entries = []
        for line in self.log_text().splitlines():
            if line.strip():
                entries.append(json.loads(line))
        return entries

    async def logged(self, event: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first log entry named `event` (with the given fields), waiting, bounded, for
        the daemon to write it."""
        async with asyncio.timeout(timeout):
            while True:
                for e in self.logs():
                    if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                        return e
                await asyncio.sleep(0.05)  # polling another process's log file: nothing to await

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("daemon did not exit in time")
            await asyncio.sleep(0.02)
        self._close_notify()
        return self.proc.returncode

    async def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self._close_notify()
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return await self.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._close_notify()

    def _close_notify(self) -> None:
        if self._notify_sock is not None:
            self._notify_sock.close()
            self._notify_sock = None

    async def request(
        self, method: str, path: str, *, token: str | None = INGEST_TOKEN, **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.base + path, headers=headers, **kw) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except json.JSONDecodeError:
                return resp.status, text

    async def post_sms(self, payload: Any, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", "/v1/sms", json=payload, **kw)

    async def health(self, token: str | None = STATUS_TOKEN) -> tuple[int, Any]:
        """The full report (SIM identities too) with the status token; `token=None`: as anyone."""
        return await self.request("GET", "/health", token=token)
