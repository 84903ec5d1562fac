"""The AT conversation with one modem: wake it, unlock the SIM, set up SMS, say who it is, and
the SMS storage commands. Shared by the modem source (``device.py``) and ``modems probe``.

Every command runs under one timeout; :class:`~gateway.sources.modem.channel.AtTimeout` and
:class:`~gateway.sources.modem.serial_link.LinkClosed` pass through (the caller reopens the
port), while an ``ERROR`` to an optional command only means this modem does not know it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.errors import DecodeError, GatewayError
from gateway.sources.modem.answers import (
    ICCID_PREFIXES,
    parse_cgmi,
    parse_cgmm,
    parse_cgsn,
    parse_cimi,
    parse_cmgl,
    parse_cmgr,
    parse_cnum,
    parse_cops,
    parse_cpbr,
    parse_cpbs,
    parse_cpin,
    parse_cpms,
    parse_creg,
    parse_csq,
    parse_iccid,
    rssi_to_dbm,
    split_result,
)
from gateway.sources.modem.channel import (
    AtChannel,
    AtCommandError,
    AtError,
    AtResponse,
    AtTimeout,
)
from gateway.sources.modem.ussd import pack_request

__all__ = [
    "CNMI_VARIANTS",
    "ICCID_COMMANDS",
    "STORAGES",
    "Identity",
    "Network",
    "Session",
    "SimNotReady",
    "Storage",
    "decode_crsm_iccid",
]

T = TypeVar("T")
STORAGES = ("SM", "ME", "MT")
# Store and indicate (+CMTI); the variants some firmwares insist on, in order of preference.
CNMI_VARIANTS = ("2,1,0,0,0", "2,1,0,1,0", "1,1,0,0,0", "2,1", "1,1")
# Every maker has its own: tried in order until one answers (the maker's own first).
ICCID_COMMANDS = ("AT+CCID", "AT^ICCID?", "AT+QCCID", "AT+ICCID", "AT+CRSM=176,12258,0,0,10")
_ICCID_BY_MAKER = {"huawei": "AT^ICCID?", "quectel": "AT+QCCID", "telit": "AT+ICCID"}
_SIM_SETTLE = 10  # polls of AT+CPIN? while the SIM is busy or unlocking
_SIM_POLL = 0.5
_TRANSIENT_SIM = frozenset({"NOT READY", "SIM BUSY", "BUSY"})
_SIM_HINTS = {
    "SIM PUK": "the SIM is locked by its PUK; unlock it in a phone",
    "NOT INSERTED": "no SIM in this modem",
}
_RESET_TIMEOUT = 2.0
_PHONEBOOK_ENTRIES = 10  # own-number entries read at most (AT+CPBR=1,n)
#: What a USSD code may hold: it goes into a quoted AT argument.
USSD_CODE = frozenset("0123456789*#+")


class SimNotReady(GatewayError):
    """The SIM cannot be used and retrying at once will not change that (PIN needed but none
    configured, PIN refused, PUK, no SIM). ``state`` is what ``AT+CPIN?`` said."""

    def __init__(self, state: str, hint: str, *, pin_rejected: bool = False) -> None:
        self.state = state
        self.hint = hint
        self.pin_rejected = pin_rejected
        super().__init__(f"{state}: {hint}")


@dataclass(frozen=True)
class Identity:
    """Who the modem and its SIM are; ``None`` for what the modem would not say."""

    maker: str | None = None
    model: str | None = None
    imei: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    cnum: str | None = None
    phonebook: str | None = None  # the own-number phonebook (AT+CPBS="ON"), read without CNUM

    def fields(self) -> dict[str, Any]:
        return {
            "maker": self.maker,
            "model": self.model,
            "imei": self.imei,
            "iccid": self.iccid,
            "imsi": self.imsi,
            "cnum": self.cnum,
            "phonebook": self.phonebook,
        }


@dataclass(frozen=True)
class Network:
    """Registration (27.007 ``+CREG`` stat: 1 home, 5 roaming), operator and signal."""

    stat: int | None = None
    operator: str | None = None
    signal_dbm: int | None = None

    @property
    def registered(self) -> bool:
        return self.stat in (1, 5)


@dataclass(frozen=True)
class Storage:
    """SMS storage in use: its name and how many slots are taken of how many."""

    name: str
    used: int
    total: int

    @property
    def fill(self) -> float:
        return self.used / self.total if self.total else 0.0


def decode_crsm_iccid(lines: tuple[str, ...] | list[str]) -> str:
    """The ICCID from ``+CRSM: 144,0,"98701991325476981020"`` (READ BINARY of EF_ICCID):
    status 144 (0x90, success) and the digits as swapped BCD with ``F`` filler."""
    for text in lines:
        name, args = split_result(text)
        if name.upper() != "+CRSM":
            continue
        parts = [p.strip().strip('"') for p in args.split(",")]
        if len(parts) < 3 or parts[0] != "144":
            raise DecodeError(f"+CRSM: the SIM refused the read: {args[:40]!r}")
        raw = parts[2].upper()
        swapped = "".join(raw[i + 1 : i + 2] + raw[i] for i in range(0, len(raw), 2))
        return parse_iccid([swapped.replace("F", "")])
    raise DecodeError("+CRSM: no +CRSM line")


class Session:
    """AT commands on an open channel, each under ``timeout`` seconds."""

    def __init__(self, channel: AtChannel, *, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout

    async def run(
        self, command: str, *, timeout: float | None = None, answers: Iterable[str] = ()
    ) -> AtResponse:
        return await self.channel.command(command, timeout=timeout or self.timeout, answers=answers)

    async def optional(self, command: str, *, answers: Iterable[str] = ()) -> AtResponse | None:
        """``None`` when the modem answers an error (it does not support the command)."""
        try:
            return await self.run(command, answers=answers)
        except AtError:
            return None

    # -- start-up ------------------------------------------------------------------------

    async def wake(self, *, reset_if_silent: bool = True) -> None:
        """``ATE0`` (echo off, and proof of life), then ``AT+CMEE=1`` (numeric errors). If
        nothing answers, ask for a modem reset (``AT+CFUN=1,1``, for a modem that only stopped
        running commands) and raise AtTimeout."""
        try:
            await self.run("ATE0")
        except AtError:
            pass  # it answered: alive, whatever it thinks of ATE0
        except AtTimeout:
            if reset_if_silent:
                with contextlib.suppress(AtCommandError):
                    await self.run("AT+CFUN=1,1", timeout=min(self.timeout, _RESET_TIMEOUT))
            raise
        await self.optional("AT+CMEE=1")

    async def sim_state(self) -> str:
        """What ``AT+CPIN?`` says: ``READY``, ``SIM PIN``, ``SIM PUK``, ``NOT INSERTED``..."""
        try:
            return parse_cpin((await self.run("AT+CPIN?")).lines)
        except AtError as exc:
            if exc.code == 10 or "not inserted" in exc.text.lower():
                return "NOT INSERTED"
            if exc.code in (14, 515) or "busy" in exc.text.lower():
                return "SIM BUSY"
            return f"ERROR {exc.text or exc.kind}".strip()
        except DecodeError:
            return "UNKNOWN"

    async def unlock(self, pin: str) -> str:
        """Bring the SIM to READY, entering ``pin`` once if it asks, and return its state.

        Raises SimNotReady when that cannot happen now. A refused PIN raises with
        ``pin_rejected`` so the caller never enters it again: the third wrong PIN locks the SIM
        behind its PUK.
        """
        entered = False
        state = await self.sim_state()
        for _ in range(_SIM_SETTLE):
            if state == "READY":
                return state
            if state == "SIM PIN" and not entered:
                if not pin:
                    raise SimNotReady(state, "the SIM asks for a PIN; set pin in its [[modem]]")
                try:
                    await self.run(f'AT+CPIN="{pin}"')
                except AtError as exc:
                    raise SimNotReady(
                        state,
                        f"the SIM refused the configured pin ({exc.text or exc.kind}); it is not"
                        " entered again: fix pin and restart",
                        pin_rejected=True,
                    ) from None  # the AtError names the command, PIN included
                entered = True
                state = await self.sim_state()
                continue
            if state not in _TRANSIENT_SIM and state != "SIM PIN":
                raise SimNotReady(state, _SIM_HINTS.get(state, "the SIM cannot be used"))
            await asyncio.sleep(_SIM_POLL)
            state = await self.sim_state()
        if state == "READY":
            return state
        raise SimNotReady(state, "the SIM did not become ready")

    async def setup_sms(self) -> tuple[Storage | None, str | None]:
        """PDU mode, SIM storage (else modem memory), store-and-indicate. Returns the storage
        chosen and the ``AT+CNMI`` setting that was taken (``None``: none, rely on scans)."""
        await self.run("AT+CMGF=0")
        storage: Storage | None = None
        for name in STORAGES:
            answer = await self.optional(f'AT+CPMS="{name}","{name}","{name}"')
            if answer is not None:
                try:
                    used, total = parse_cpms(answer.lines)[0]
                except DecodeError:
                    used, total = 0, 0
                storage = Storage(name, used, total)
                break
        indications: str | None = None
        for variant in CNMI_VARIANTS:
            if await self.optional(f"AT+CNMI={variant}") is not None:
                indications = variant
                break
        return storage, indications

    async def identify(self) -> Identity:
        """Maker, model, IMEI, ICCID, IMSI and own number (``AT+CNUM``, else the own-number
        phonebook), each ``None`` if not given."""
        maker = await self._value("AT+CGMI", parse_cgmi)
        model = await self._value("AT+CGMM", parse_cgmm)
        imei = await self._value("AT+CGSN", parse_cgsn)
        iccid = await self.iccid(maker)
        imsi = await self._value("AT+CIMI", parse_cimi)
        cnum, phonebook = await self.own_number()
        return Identity(maker, model, imei, iccid, imsi, cnum, phonebook)

    async def own_number(self) -> tuple[str | None, str | None]:
        """What the SIM says its number is: ``(AT+CNUM, own-number phonebook)``; the
        phonebook is read only when ``AT+CNUM`` gives nothing."""
        cnum = await self._value("AT+CNUM", parse_cnum)
        return cnum, (None if cnum else await self.phonebook_number())

    async def phonebook_number(self) -> str | None:
        """The first number in the SIM's own-number phonebook: ``AT+CPBS="ON"``, then
        ``AT+CPBR=1,n`` (n: the entries it says it has, at most 10). ``None`` when the modem
        has no such phonebook or it is empty."""
        if await self.optional('AT+CPBS="ON"') is None:
            return None
        size = _PHONEBOOK_ENTRIES
        state = await self.optional("AT+CPBS?")
        if state is not None:
            found = parse_cpbs(state.lines)
            if found is not None:
                if found[0] != "ON" or found[1] == 0:
                    return None
                size = max(1, min(found[2], _PHONEBOOK_ENTRIES))
        return await self._value(f"AT+CPBR=1,{size}", parse_cpbr)

    async def send_ussd(self, code: str, *, packed: bool) -> AtResponse:
        """``AT+CUSD=1,"<code>",15``, the code as text or GSM-7 packed hex. The reply comes
        as a ``+CUSD`` line in the answer or, on most modems, as a URC after ``OK``. ValueError
        for a code that is not digits, ``*``, ``#`` and ``+``."""
        if not code or not set(code) <= USSD_CODE:
            raise ValueError(f"USSD code {code!r}: only digits, *, # and + are sent")
        arg = pack_request(code) if packed else code
        return await self.run(f'AT+CUSD=1,"{arg}",15', answers=("+CUSD",))

    async def end_ussd(self) -> None:
        """``AT+CUSD=2``: close a session the network left open (``+CUSD: 1``)."""
        await self.optional("AT+CUSD=2")

    async def iccid(self, maker: str | None = None) -> str | None:
        """Try each maker's ICCID command (this maker's first) until one gives an ICCID."""
        first = next((c for m, c in _ICCID_BY_MAKER.items() if m in (maker or "").lower()), None)
        commands = sorted(ICCID_COMMANDS, key=lambda c: c != first)
        for command in commands:
            answer = await self.optional(command, answers=ICCID_PREFIXES)
            if answer is None:
                continue
            try:
                if command.startswith("AT+CRSM"):
                    return decode_crsm_iccid(answer.lines)
                return parse_iccid(answer.lines)
            except DecodeError:
                continue
        return None

    async def network(self) -> Network:
        stat: int | None = None
        creg = await self.optional("AT+CREG?")
        if creg is not None:
            with contextlib.suppress(DecodeError):
                stat = parse_creg(creg.lines)[1]
        operator = await self._value("AT+COPS?", parse_cops)
        signal: int | None = None
        csq = await self.optional("AT+CSQ")
        if csq is not None:
            with contextlib.suppress(DecodeError):
                rssi, _ = parse_csq(csq.lines)
                signal = rssi_to_dbm(rssi) if rssi is not None else None
        return Network(stat=stat, operator=operator, signal_dbm=signal)

    async def storage(self, name: str = "SM") -> Storage | None:
        """``AT+CPMS?``: use of the first (read/delete) storage."""
        answer = await self.optional("AT+CPMS?")
        if answer is None:
            return None
        try:
            used, total = parse_cpms(answer.lines)[0]
        except DecodeError:
            return None
        first = answer.first("+CPMS") or ""
        found = first.split(",", 1)[0].strip().strip('"').upper()
        return Storage(found if found.isalpha() else name, used, total)

    # -- messages ------------------------------------------------------------------------

    async def list_all(self) -> list[tuple[int, int, str]]:
        """``AT+CMGL=4``: every stored message as ``(index, stat, pdu)``."""
        return parse_cmgl((await self.run("AT+CMGL=4")).lines)

    async def read(self, index: int) -> tuple[int, str] | None:
        """``AT+CMGR=<index>``: ``(stat, pdu)``, ``None`` for an empty slot."""
        try:
            return parse_cmgr((await self.run(f"AT+CMGR={index}")).lines)
        except AtError as exc:
            if exc.code == 321:  # invalid memory index: nothing there
                return None
            raise

    async def delete(self, index: int) -> None:
        await self.run(f"AT+CMGD={index}")

    async def acknowledge(self) -> None:
        """``AT+CNMA`` after a ``+CMT``; modems that do not want one answer ERROR: fine."""
        await self.optional("AT+CNMA")

    async def _value(self, command: str, parse: Callable[[Sequence[str]], T]) -> T | None:
        answer = await self.optional(command)
        if answer is None:
            return None
        try:
            return parse(answer.lines)
        except DecodeError:
            return None
