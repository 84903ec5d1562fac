"""A small HTTP proxy on 127.0.0.1 for the tests: CONNECT tunnels, absolute-form forwarding.

It checks Basic credentials when given some, resolves names from its own map (so the client
is shown not to resolve the upstream itself, as behind an egress proxy) and records every
request it was asked to carry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: str
    headers: dict[str, str]  # names in lower case


class TestProxy:
    __test__ = False  # not a test class, whatever its name

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        hosts: dict[str, str] | None = None,
    ) -> None:
        self.credentials = credentials
        self.hosts = hosts or {}
        self.requests: list[ProxyRequest] = []
        self.connections = 0  # client connections accepted
        self.tunnels = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    def _resolve(self, host: str) -> str:
        return self.hosts.get(host, host)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization") == f"Basic {token}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                self.requests.append(ProxyRequest(method, target, headers))
                if not self._authorized(headers):
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test"\r\n'
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    return
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                await self._forward(method, target, headers, reader, writer)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._resolve(host.strip("[]")), int(port)
            )
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        self.tunnels += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """One absolute-form request, to the origin over a connection of its own."""
        url = urllib.parse.urlsplit(target)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        assert url.hostname is not None
        up_reader, up_writer = await asyncio.open_connection(
            self._resolve(url.hostname), url.port or 80
        )
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        passed = {
            k: v for k, v in headers.items() if k not in ("proxy-authorization", "connection")
        }
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in passed.items())]
        up_writer.write(("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1"))
        up_writer.write(body)
        await up_writer.drain()
        answer = await up_reader.read()  # the origin closes after its answer
        up_writer.close()
        answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
        kept = [
            line
            for line in answer_head.split(b"\r\n")
            if not line.lower().startswith((b"connection:", b"content-length:"))
        ]
        kept.append(b"Content-Length: %d" % len(answer_body))
        writer.write(b"\r\n".join(kept) + b"\r\n\r\n" + answer_body)
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
