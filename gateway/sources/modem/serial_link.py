"""The byte pipe to a modem: a serial port (or a ``socket://host:port`` URL) as read/write/close.

This layer knows nothing about AT commands. It opens the port with ``serial_asyncio_fast`` and
turns every way the port can die (EOF, I/O error, unplugged USB device) into the same outcome:
``read()`` returns ``b""`` at end of file and raises :class:`LinkClosed` on an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, Protocol, runtime_checkable

import serial
import serial_asyncio_fast

from gateway.errors import GatewayError

__all__ = [
    "LinkClosed",
    "LinkError",
    "LinkOpenError",
    "SerialLink",
    "StreamSerialLink",
    "open_serial_link",
]

DEFAULT_BAUDRATE = 115200
_READ_SIZE = 4096
_CLOSE_TIMEOUT = 2.0


class LinkError(GatewayError):
    """The byte pipe to a modem failed."""


class LinkOpenError(LinkError):
    """The port could not be opened (missing device, permission, busy)."""


class LinkClosed(LinkError):
    """The port is gone: end of file, I/O error, or closed by us."""


@runtime_checkable
class SerialLink(Protocol):
    """What the AT layer needs from a port. Implemented by :class:`StreamSerialLink` and fakes."""

    @property
    def name(self) -> str:
        """The port's name, for logs (the URL or device path it was opened with)."""
        ...

    async def read(self) -> bytes:
        """Wait for some bytes; ``b""`` at end of file; raises :class:`LinkClosed` on error."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for the port; raises :class:`LinkClosed` once the link is closed."""
        ...

    async def close(self) -> None:
        """Close the port and wait (bounded) until the device is released. Idempotent."""
        ...


class StreamSerialLink:
    """A :class:`SerialLink` over an asyncio StreamReader/StreamWriter pair."""

    def __init__(
        self,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        read_size: int = _READ_SIZE,
    ) -> None:
        self._name = name
        self._reader = reader
        self._writer = writer
        self._read_size = read_size
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    async def read(self) -> bytes:
        if self._closed:
            raise LinkClosed(f"{self._name}: link closed")
        try:
            return await self._reader.read(self._read_size)
        except (OSError, serial.SerialException) as exc:
            raise LinkClosed(f"{self._name}: read failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        if self._closed or self._writer.is_closing():
            raise LinkClosed(f"{self._name}: link closed")
        try:
            self._writer.write(data)
        except (OSError, serial.SerialException) as exc:
            raise LinkClosed(f"{self._name}: write failed: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        # wait_closed re-raises the error the transport died of; we only want the fd released.
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):  # not wait_for: see AtChannel.command
                await self._writer.wait_closed()


async def open_serial_link(
    url: str,
    *,
    baudrate: int = DEFAULT_BAUDRATE,
    exclusive: bool = True,
) -> StreamSerialLink:
    """Open a device path (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``) or a pyserial URL.

    ``exclusive`` takes an advisory lock on local devices so two processes cannot share a modem.
    Bytes that were waiting in the device's input buffer before the open are discarded.
    Raises :class:`LinkOpenError` when the port cannot be opened.
    """
    is_url = "://" in url
    extra: dict[str, Any] = {"exclusive": True} if exclusive and not is_url else {}
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=url, baudrate=baudrate, **extra
        )
    except (OSError, serial.SerialException, ValueError) as exc:
        raise LinkOpenError(f"{url}: cannot open: {exc}") from exc
    if not is_url:
        port = writer.transport.get_extra_info("serial")
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.reset_input_buffer()
            _avoid_select(port)
    return StreamSerialLink(url, reader, writer)


def _avoid_select(port: Any) -> None:
    """Give a POSIX pyserial port a ``read`` that does not call ``select()``.

    pyserial's ``Serial.read`` waits in ``select.select()``, which raises ValueError for a file
    descriptor >= 1024 (FD_SETSIZE): past roughly 150 open ports in one process every read would
    fail. The asyncio transport only reads when the event loop (epoll) says the fd is readable,
    so a plain non-blocking ``os.read`` is all it needs. Runs before the transport's first read
    (its reader is registered with ``call_soon``).
    """
    posix = getattr(serial, "serialposix", None)
    if posix is None or not isinstance(port, posix.Serial) or port.fd is None:
        return
    fd: int = port.fd

    def read(size: int = 1) -> bytes:
        try:
            data = os.read(fd, size)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise serial.SerialException(f"read failed: {exc}") from exc
        if not data:
            raise serial.SerialException("read returned no data (device disconnected?)")
        return data

    port.read = read
