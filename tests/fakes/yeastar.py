"""A fake Yeastar TG API server (TCP, Asterisk-manager style) on 127.0.0.1 for the Yeastar client.

It greets, takes ``Action: Login`` (one user and password), answers ``Action: Ping`` and sends
``Event: ReceivedSMS`` blocks to every logged-in client when a test calls :meth:`send_sms`.
:meth:`drop_clients` cuts every connection, as a TG reboot or a network fault would.
``Action: smscommand`` answers ``gsm show spans`` from :attr:`spans` (span -> status line) and
``gsm show span <n>`` from :attr:`span_info` (span -> its detail lines), as a TG's CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import quote_plus


class FakeYeastar:
    def __init__(self, *, username: str = "apiuser", password: str = "secret-pw") -> None:
        self.username = username
        self.password = password
        self.logins = 0  # successful ones
        self.failed_logins = 0
        self.pings = 0
        self.actions: list[str] = []
        self.spans: dict[int, str] = {}  # "Power on, Provisioned, Up, Active,Standard"
        self.span_info: dict[int, dict[str, str]] = {}  # "SIM IMSI", "Signal Quality (0,31)"
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        self.drop_clients()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def drop_clients(self) -> None:
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()
        self._notify()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def poll() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(poll(), timeout)

    async def send_sms(
        self,
        span: int,
        sender: str,
        text: str,
        *,
        sms_id: str = "",
        index: int = 1,
        total: int = 1,
        recvtime: str = "2025-03-06 06:12:09",
        raw_content: str | None = None,
    ) -> None:
        """Write one ReceivedSMS event (one part) to every logged-in client."""
        content = raw_content if raw_content is not None else quote_plus(text, encoding="utf-8")
        block = (
            "Event: ReceivedSMS\r\nPrivilege: all,smscommand\r\n"
            f"ID: {sms_id}\r\nGsmSpan: {span}\r\nSender: {sender}\r\nRecvtime: {recvtime}\r\n"
            f"Index: {index}\r\nTotal: {total}\r\nSmsc: +79000000000\r\nContent: {content}\r\n"
            "--END SMS EVENT--\r\n\r\n"
        )
        await self.send_raw(block.encode("utf-8"))

    async def send_raw(self, data: bytes) -> None:
        for writer in list(self._clients):
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def _notify(self) -> None:
        self._changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            writer.write(b"Asterisk Call Manager/1.1\r\n")
            while True:
                block = await self._read_block(reader)
                if block is None:
                    return
                action = block.get("action", "").lower()
                self.actions.append(action)
                if action == "login":
                    if block.get("username") == self.username and (
                        block.get("secret") == self.password
                    ):
                        self.logins += 1
                        self._clients.add(writer)
                        writer.write(
                            b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
                        )
                    else:
                        self.failed_logins += 1
                        writer.write(b"Response: Error\r\nMessage: Authentication failed\r\n\r\n")
                        await writer.drain()
                        return
                elif action == "ping":
                    self.pings += 1
                    writer.write(
                        f"Response: Success\r\nPing: Pong\r\nActionID: "
                        f"{block.get('actionid', '')}\r\n\r\n".encode()
                    )
                elif action == "smscommand":
                    writer.write(self._command(block.get("command", "")))
                await writer.drain()
                self._notify()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._clients.discard(writer)
            writer.close()
            self._handlers.discard(task)
            self._notify()

    def _command(self, command: str) -> bytes:
        lines = ["Response: Follows", "Privilege: Command"]
        words = command.split()
        if words == ["gsm", "show", "spans"]:
            lines += [f"GSM span {n}: {status}" for n, status in sorted(self.spans.items())]
        elif words[:3] == ["gsm", "show", "span"] and len(words) == 4 and words[3].isdigit():
            n = int(words[3])
            lines += [f"D-channel: {n}", f"Status: {self.spans.get(n, '')}"]
            lines += [f"{k}: {v}" for k, v in self.span_info.get(n, {}).items()]
        return ("\r\n".join([*lines, "--END COMMAND--"]) + "\r\n\r\n").encode()

    @staticmethod
    async def _read_block(reader: asyncio.StreamReader) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if not line:
                return None
            text = line.decode("utf-8", "replace").strip()
            if not text:
                if fields:
                    return fields
                continue
            key, _, value = text.partition(":")
            fields[key.strip().lower()] = value.strip()
