"""systemd's sd_notify protocol: a few datagrams to $NOTIFY_SOCKET, nothing when it is unset."""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if self._address.startswith("@"):
            self._address = "\0" + self._address[1:]  # abstract namespace socket

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def watchdog_interval(self) -> float | None:
        """Half of WatchdogSec, as systemd recommends; None when no watchdog is set up."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000

    def notify(self, **fields: str) -> None:
        """notify(READY="1", STATUS="...") sends READY=1 and STATUS=... in one datagram."""
        if not self._address:
            return
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self._address)
        except OSError as e:
            log.warning("systemd.notify_failed", error=str(e))
