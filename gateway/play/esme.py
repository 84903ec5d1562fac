"""A small ESME for the demo: binds to an SMSC (our [smpp_server]) as a GSM gateway box would,
hands it short messages and unbinds. Play code on smpp34's codec (gateway.sources.smpp.pdu);
the daemon never uses it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType

from gateway.errors import GatewayError
from gateway.sources.smpp.pdu import (
    Bind,
    Command,
    FrameError,
    Header,
    ShortMessage,
    Status,
    bind_body,
    encode,
    message_pdu,
    read_pdu,
)

__all__ = ["Esme", "EsmeError", "Resp", "status_name"]

UCS2 = 8  # data_coding: UCS-2 (UTF-16BE), what boxes send Cyrillic as
SHORT_MESSAGE_MAX = 254  # short_message octets in one submit_sm / deliver_sm


class EsmeError(GatewayError):
    """The SMSC could not be reached, refused the bind, or did not answer in time."""


def status_name(status: int) -> str:
    """`ROK`, `RX_T_APPN`, ... or the number in hex for a status SMPP 3.4 names otherwise."""
    try:
        return Status(status).name
    except ValueError:
        return f"{status:#x}"


@dataclass(frozen=True)
class Resp:
    """The SMSC's answer to one message: its command_status and message_id ("" without one)."""

    command_id: int
    status: int
    message_id: str

    @property
    def ok(self) -> bool:
        return self.status == Status.ROK

    @property
    def status_name(self) -> str:
        return status_name(self.status)


def _cstring(body: bytes) -> str:
    """The first C-string of a PDU body (the message_id or system_id of a resp); "" if none."""
    return body.split(b"\0", 1)[0].decode("latin-1")


class Esme:
    """One transceiver bind, over plain TCP: `async with Esme(...) as esme` binds (EsmeError if
    refused), `await esme.send(...)` hands one SMS and waits for its resp, leaving unbinds.

    While it waits it answers the SMSC's enquire_link (and a deliver_sm with ROK), so a slow
    answer does not cost the bind. Every wait is bounded by `timeout`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        system_id: str,
        password: str,
        system_type: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self._bind = Bind(Command.BIND_TRANSCEIVER, system_id, password, system_type)
        self.timeout = timeout
        self.smsc_id = ""  # the system_id the SMSC answered the bind with
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._seq = 0

    def __repr__(self) -> str:  # the password never shows
        return f"Esme({self.host}:{self.port}, system_id={self._bind.system_id!r})"

    async def __aenter__(self) -> Esme:
        await self.bind()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unbind()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _write(self, data: bytes) -> None:
        assert self._writer is not None, "not connected"
        self._writer.write(data)

    async def bind(self) -> None:
        """Connect and bind as a transceiver; EsmeError when that fails."""
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as e:
            raise EsmeError(f"esme: cannot connect to {where}: {e}") from e
        seq = self._next_seq()
        self._write(encode(Command.BIND_TRANSCEIVER, seq, 0, bind_body(self._bind)))
        header, body = await self._answer_to(seq, "bind_transceiver_resp")
        if header.status != Status.ROK:
            await self._close()
            raise EsmeError(
                f"esme: {where} refused the bind of {self._bind.system_id!r}:"
                f" {status_name(header.status)}"
            )
        self.smsc_id = _cstring(body)

    async def send(
        self,
        destination_addr: str,
        text: str,
        *,
        source_addr: str,
        command: Command = Command.SUBMIT_SM,
    ) -> Resp:
        """One submit_sm (or deliver_sm) with `text` in UCS-2; its resp once the SMSC answers."""
        if command not in (Command.SUBMIT_SM, Command.DELIVER_SM):
            raise ValueError(f"esme: send takes submit_sm or deliver_sm, not {command.name}")
        data = text.encode("utf-16-be")
        if len(data) > SHORT_MESSAGE_MAX:
            raise ValueError(f"esme: {len(text)} characters do not fit one short_message")
        seq = self._next_seq()
        message = ShortMessage(command, seq, source_addr, destination_addr, 0, UCS2, data)
        self._write(message_pdu(message))
        header, body = await self._answer_to(seq, f"{command.name.lower()}_resp")
        return Resp(header.command_id, header.status, _cstring(body))

    async def unbind(self) -> None:
        """Unbind (waiting at most `timeout` for unbind_resp) and close; never raises."""
        if self._writer is None:
            return
        with contextlib.suppress(EsmeError, ConnectionError, OSError):
            seq = self._next_seq()
            self._write(encode(Command.UNBIND, seq))
            await self._answer_to(seq, "unbind_resp")
        await self._close()

    async def _close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer_to(self, seq: int, what: str) -> tuple[Header, bytes]:
        """The response to our PDU `seq` (or a generic_nack for it): header and body. The SMSC's
        own requests meanwhile are answered."""
        assert self._reader is not None, "not connected"
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    header, pdu = await read_pdu(self._reader)
                    if header.is_response and header.seq == seq:
                        return header, pdu[16:]
                    self._serve(header)
        except TimeoutError:
            raise EsmeError(f"esme: no {what} within {self.timeout:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise EsmeError(f"esme: the SMSC closed the connection before {what}") from e
        except FrameError as e:
            raise EsmeError(f"esme: the SMSC's answer cannot be framed: {e}") from e

    def _serve(self, h: Header) -> None:
        """What the SMSC asks while we wait: enquire_link, an SMS for us, its unbind."""
        if h.is_response:
            return  # an answer to nothing of ours still in flight
        if h.command_id == Command.ENQUIRE_LINK:
            self._write(encode(Command.ENQUIRE_LINK_RESP, h.seq))
        elif h.command_id == Command.DELIVER_SM:
            self._write(encode(Command.DELIVER_SM_RESP, h.seq, Status.ROK, b"\0"))
        elif h.command_id == Command.UNBIND:
            self._write(encode(Command.UNBIND_RESP, h.seq))
        else:
            self._write(encode(Command.GENERIC_NACK, h.seq, Status.RINVCMDID))
