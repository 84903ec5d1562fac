"""kill -9 of the real daemon in the middle of 1,000 deliver_sm with window 10: every PDU answered
ROK reaches the stand-in upstream under one smsId; unanswered ones, sent again with their
sequence number, are stored once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from gateway.play.standin import StandIn
from gateway.sources.smpp.pdu import Command, Status
from tests.fakes.daemon import DaemonProcess
from tests.sources.smpp.peer import Peer, sm

TOTAL = 1000
WINDOW = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smpp_config(port: int) -> str:
    return f"""
[smpp_server]
listen = "127.0.0.1:{port}"
window = {WINDOW}

[[smpp_server.account]]
system_id = "box1"
password = "pw"
"""


class Stream:
    """Keeps at most WINDOW deliver_sm unanswered; a lost connection leaves them to resend."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered: set[int] = set()
        self.outstanding: set[int] = set()
        self.next = 1
        self.temporary = 0

    async def run_until(self, stop: Callable[[], bool]) -> bool:
        """False when the connection went away."""
        peer = Peer()
        try:
            await peer.connect(self.port)
            h = await peer.bind("box1", "pw")
            assert h.status == Status.ROK
            for seq in sorted(self.outstanding):  # the peer's redelivery of what had no answer
                peer.send_message(sm(seq, f"m{seq}".encode(), command=Command.DELIVER_SM))
            while not stop():
                while len(self.outstanding) < WINDOW and self.next <= TOTAL:
                    seq = self.next
                    self.next += 1
                    self.outstanding.add(seq)
                    peer.send_message(sm(seq, f"m{seq}".encode(), command=Command.DELIVER_SM))
                h, _ = await peer.read_until(Command.DELIVER_SM_RESP, timeout=10)
                if h.status == Status.ROK:
                    self.outstanding.discard(h.seq)
                    self.answered.add(h.seq)
                else:
                    self.temporary += 1
                    peer.send_message(sm(h.seq, f"m{h.seq}".encode(), command=Command.DELIVER_SM))
            return True
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        finally:
            await peer.close()


async def test_kill_9_mid_stream_loses_nothing_acknowledged_and_stores_nothing_twice(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    port = free_port()
    daemon: DaemonProcess = await daemon_factory(extra=smpp_config(port))
    stream = Stream(port)
    assert await stream.run_until(lambda: len(stream.answered) >= 300)
    kill_at = len(stream.answered)
    killer = asyncio.get_running_loop().call_later(0.05, daemon.kill)
    ok = await stream.run_until(lambda: False)  # sends until the kill cuts it
    killer.cancel()
    assert not ok
    assert kill_at < len(stream.answered) < TOTAL
    await daemon.start()
    assert await stream.run_until(lambda: len(stream.answered) == TOTAL)
    assert stream.answered == set(range(1, TOTAL + 1))

    texts = {f"m{i}" for i in range(1, TOTAL + 1)}

    def ids_by_text(s: StandIn) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for push in s.delivered():
            if push.body is not None and push.sms_id is not None:
                found.setdefault(push.body["text"], set()).add(push.sms_id)
        return found

    await standin.wait_for(lambda s: set(ids_by_text(s)) >= texts, timeout=60)
    by_text = ids_by_text(standin)
    assert {t: ids for t, ids in by_text.items() if len(ids) > 1} == {}
    assert set(by_text) == texts
    await daemon.stop()
