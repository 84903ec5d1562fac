"""A simulated GSM modem behind a real pseudo-terminal, for tests, the demo and benchmarks.

The gateway opens :attr:`FakeModem.port` like any serial device; the fake answers on the pty's
master side from the event loop (``loop.add_reader``, non-blocking, no threads), so hundreds can
run in one process (each holds two file descriptors and a few callbacks).

It speaks PDU-mode AT like a real modem: echo on at power-up until ``ATE0``; ``AT``, ``ATZ``,
``ATI``, ``AT+CMEE``, ``AT+CPIN``, ``AT+CMGF``, ``AT+CPMS``, ``AT+CNMI``, ``AT+CGMI/CGMM/CGMR/
CGSN``, ``AT+CIMI``, the maker's ICCID command (see :data:`PROFILES`), ``AT+CNUM``, ``AT+CREG``,
``AT+COPS?``, ``AT+CSQ``, ``AT+CFUN``, ``AT+CMGL``, ``AT+CMGR``, ``AT+CMGD``, ``AT+CMGS``,
``AT+CPBS``/``AT+CPBR`` (the ``"ON"`` own-number phonebook from ``own_numbers``), ``AT+CUSD``;
``;``-joined commands; anything else answers ``ERROR``.

USSD (``AT+CUSD=1,"<code>",<dcs>``): ``OK`` first, then the reply as a ``+CUSD`` URC, as most
modems do. :attr:`FakeModem.ussd` maps a code to a :class:`UssdAnswer`: the reply text and its
form (``"text"``: ``+CUSD: 0,"<text>",15``; ``"ucs2"``: UCS-2 hex with dcs 72; ``"packed"``:
GSM-7 packed hex with dcs 15), and optionally an SMS the operator sends a moment later (sender,
text: the "answer by SMS" operators). A code it does not know gets ``+CUSD: 2`` (terminated).
A profile with ``ussd_packed_only`` (``"huawei-e1550"``) answers ``ERROR`` to a code sent as
text and takes only the packed form (``AT+CUSD=1,"AA180C3602",15``).

Errors follow ``AT+CMEE`` (0: ``ERROR``, 1: ``+CME ERROR: 16``, 2: ``+CME ERROR: incorrect
password``).

Fault rules, chosen to look like real hardware:

* ``silent = True``: a hung modem. Commands are still read and logged in :attr:`commands`,
  but nothing is written (no echo, no answers, no URCs; SMS still arrive in storage but their
  ``+CMTI`` is lost). ``ATZ`` does not help: a hung modem does not run commands. It recovers
  when a test sets ``silent = False`` or on a power cycle (:meth:`replug`, ``unplug()`` then
  ``replug()``). Commands received while silent are never answered.
* ``slow = s``: every answer (echo included) is written ``s`` seconds after the command, in order;
  URCs are not delayed (so they may overtake an answer, as on real modems).
* storage full: a new SMS is not stored and nothing is indicated; it stays in :attr:`pending`
  (the network retries) and is stored (with ``+CMTI`` if enabled) as soon as a slot frees up.
* :meth:`unplug` closes the pty (the reader on the slave gets EIO) and removes the symlink; SMS
  delivered meanwhile are pending. :meth:`replug` is a power-up on a new pty with the symlink at
  the same path: stored SMS kept; echo, ``CMEE``, ``CNMI``, ``CPMS`` and the PIN lock back to
  power-up defaults; ``silent`` cleared.

Power-up defaults: echo on, ``CMEE=0``, ``CMGF=0``, ``CNMI=0,0,0,0,0`` (no indications until the
host sets ``AT+CNMI``), storages ``"SM","SM","SM"``, SIM locked iff a ``pin`` was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.play.pdu import encode_deliver
from gateway.sources.modem.pdu import gsm7_decode, gsm7_encode, pack_septets, unpack_septets

__all__ = ["NETWORKS", "PROFILES", "FakeModem", "Profile", "UssdAnswer", "sim_identity"]

_MAX_INPUT_LINE = 4096
_MAX_OUTPUT = 1 << 20

STAT_REC_UNREAD = 0
STAT_REC_READ = 1
STAT_STO_UNSENT = 2
STAT_STO_SENT = 3


@dataclass(frozen=True, slots=True)
class Profile:
    """What differs between makers.

    ``iccid`` maps a command (``"AT+CCID"``, ``"AT^ICCID?"``) to the prefix of its answer (``""``
    for bare digits); ``iccid_swapped`` answers nibble-swapped digits (Huawei); ``cgsn_prefix``
    is put before the IMEI; ``first_index`` is the first storage index (0 or 1); ``banner`` the
    URCs sent at power-up when the modem is created with ``boot_banner=True``.
    """

    name: str
    manufacturer: str
    model: str
    revision: str
    iccid: dict[str, str] = field(default_factory=dict)
    iccid_swapped: bool = False
    cgsn_prefix: str = ""
    first_index: int = 1
    banner: tuple[str, ...] = ()
    unlock_urcs: tuple[str, ...] = ()
    ussd_packed_only: bool = False  # the USSD code only as GSM-7 packed hex (older Huawei)


@dataclass(frozen=True, slots=True)
class UssdAnswer:
    """What the network answers a USSD code (see the module docstring)."""

    text: str
    form: str = "text"  # "text", "ucs2" or "packed"
    sms_from: str | None = None  # set: the operator also sends this SMS ...
    sms_text: str = ""  # ... with this text


PROFILES: dict[str, Profile] = {
    "simcom": Profile(
        "simcom",
        "SIMCOM_Ltd",
        "SIMCOM_SIM800L",
        "Revision:1418B05SIM800L24",
        iccid={"AT+CCID": "", "AT+CICCID": "+ICCID: "},
        first_index=1,
        banner=("RDY", "+CFUN: 1", "+CPIN: READY", "Call Ready", "SMS Ready"),
        unlock_urcs=("+CPIN: READY", "Call Ready", "SMS Ready"),
    ),
    "huawei": Profile(
        "huawei",
        "huawei",
        "E173",
        "11.126.16.04.00",
        iccid={"AT^ICCID?": "^ICCID: "},
        iccid_swapped=True,
        first_index=0,
        banner=("^BOOT:20352311,0,0,0,75", "^RSSI:18", "^SIMST:1", "^SRVST:2", "^MODE:5,4"),
        unlock_urcs=("^SIMST:1",),
    ),
    "quectel": Profile(
        "quectel",
        "Quectel",
        "EC25",
        "EC25EFAR06A06M4G",
        iccid={"AT+QCCID": "+QCCID: "},
        first_index=0,
        banner=("RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE"),
        unlock_urcs=("+CPIN: READY", "+QIND: SMS DONE"),
    ),
    "wavecom": Profile(
        "wavecom",
        "WAVECOM MODEM",
        "MULTIBAND  900E  1800",
        "R7.46.0.201108091155.FXT009",
        iccid={"AT+CCID": "+CCID: "},
        first_index=1,
        banner=("+WIND: 13", "+WIND: 1", "+WIND: 7", "+WIND: 4"),
        unlock_urcs=("+WIND: 4",),
    ),
    "huawei-e1550": Profile(
        "huawei-e1550",
        "huawei",
        "E1550",
        "11.608.13.02.00",
        iccid={"AT^ICCID?": "^ICCID: "},
        iccid_swapped=True,
        first_index=0,
        banner=("^BOOT:20352311,0,0,0,75", "^RSSI:18", "^SIMST:1"),
        unlock_urcs=("^SIMST:1",),
        ussd_packed_only=True,
    ),
    "telit": Profile(
        "telit",
        "Telit",
        "GL865-QUAD",
        "16.01.154",
        iccid={"AT#CCID": "#CCID: ", "AT+ICCID": "+ICCID: "},
        cgsn_prefix="+CGSN: ",
        first_index=1,
        banner=("#QSS: 1",),
        unlock_urcs=("#QSS: 1",),
    ),
}

#: Home networks (MCC+MNC, the IMSI's first digits) and the name each broadcasts (AT+COPS),
#: for simulated SIMs of several countries and operators.
NETWORKS: tuple[tuple[str, str], ...] = (
    ("25001", "MTS RUS"),
    ("25002", "MegaFon"),
    ("25099", "Beeline"),
    ("26201", "Telekom.de"),
    ("310260", "T-Mobile"),
    ("23415", "vodafone UK"),
)


def sim_identity(i: int, network: int | None = None) -> dict[str, str]:
    """Keyword arguments for the ``i``-th simulated SIM: its own IMEI, ICCID and an IMSI of
    ``NETWORKS[network]`` (by default they take turns), with that network's name."""
    mccmnc, name = NETWORKS[(i if network is None else network) % len(NETWORKS)]
    return {
        "imei": f"8661230{i:08d}",
        "iccid": f"89701991234{i:08d}",
        "imsi": (mccmnc + f"{i:010d}")[:15],
        "operator": name,
    }


_CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    16: "incorrect password",
    21: "invalid index",
    50: "Incorrect parameters",
    100: "unknown",
}
_CMS_TEXT = {
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    311: "SIM PIN required",
    321: "invalid memory index",
    322: "memory full",
    500: "unknown error",
}
_STORAGES = ("SM", "ME", "MT")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_EXTENDED = re.compile(r"([+^#$%][A-Z0-9]+)(=\?|\?|=(.*))?", re.DOTALL)
_BASIC = re.compile(r"(&?[A-Z])(\d*)")


class _Reply(Exception):
    """Ends a command line with this final result code."""

    def __init__(self, final: str) -> None:
        super().__init__(final)
        self.final = final


def _split_quoted(text: str, sep: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _args(text: str) -> list[str]:
    return [a.strip().strip('"') for a in _split_quoted(text, ",")]


def _tpdu_length(pdu: str) -> int:
    """The ``<length>`` of ``+CMGL``/``+CMGR``/``+CMT``: octets after the SMSC field."""
    octets = len(pdu) // 2
    smsc = int(pdu[:2], 16) if pdu else 0
    return max(0, octets - 1 - smsc)


def _swap_nibbles(digits: str) -> str:
    if len(digits) % 2:
        digits += "F"
    return "".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2))


def _unpack_request(packed: str) -> str:
    data = bytes.fromhex(packed)
    septets = unpack_septets(data, len(data) * 8 // 7)
    if len(data) * 8 % 7 == 0 and septets and septets[-1] == 0x0D:
        septets.pop()
    return gsm7_decode(septets)


def _cusd_line(answer: UssdAnswer) -> str:
    if answer.form == "ucs2":
        return f'+CUSD: 0,"{answer.text.encode("utf-16-be").hex().upper()}",72'
    if answer.form == "packed":
        septets = gsm7_encode(answer.text)
        if len(septets) % 8 == 7:
            septets.append(0x0D)
        return f'+CUSD: 0,"{pack_septets(septets).hex().upper()}",15'
    return f'+CUSD: 0,"{answer.text}",15'


def _check_pdu(pdu_hex: str) -> str:
    pdu = pdu_hex.strip().upper()
    if not _HEX.fullmatch(pdu):
        raise ValueError(f"not a PDU hex string: {pdu_hex[:40]!r}")
    return pdu


class FakeModem:
    """A simulated modem on a pseudo-terminal. See the module docstring for its behaviour.

    Use from a running event loop: ``start()`` / ``stop()``, or ``async with FakeModem() as m``.
    """

    def __init__(
        self,
        profile: str | Profile = "simcom",
        *,
        pin: str | None = None,
        capacity: int = 30,
        imei: str = "866123045678906",
        imsi: str = "250991234567890",
        iccid: str = "8970199123456789012",
        number: str | None = None,
        operator: str | None = "MegaFon",
        rssi: int = 20,
        registration: int = 1,
        link_dir: str | os.PathLike[str] | None = None,
        link_name: str | None = None,
        boot_banner: bool = False,
        own_numbers: list[str] | None = None,
        ussd: dict[str, UssdAnswer] | None = None,
    ) -> None:
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.pin = pin
        self.capacity = capacity
        self.imei = imei
        self.imsi = imsi
        self.iccid = iccid
        self.number = number
        self.operator = operator
        self.rssi = rssi
        self.registration = registration
        self.boot_banner = boot_banner
        #: The SIM's own-number phonebook ("ON"), read with AT+CPBS="ON" and AT+CPBR.
        self.own_numbers: list[str] = list(own_numbers or [])
        #: USSD code -> the network's answer.
        self.ussd: dict[str, UssdAnswer] = dict(ussd or {})
        #: USSD codes received, decoded (packed ones unpacked).
        self.ussd_asked: list[str] = []
        #: Time in seconds before every answer (see module docstring).
        self.slow = 0.0
        #: Every command line received, as received (stripped), including while silent.
        self.commands: list[str] = []
        #: A command starting with this is read but never run: the modem hangs right there
        #: (goes silent), e.g. "AT+CMGD" to catch the host between commit and delete.
        self.stall_on: str | None = None
        #: Storage indices removed by ``AT+CMGD``, in order.
        self.deleted: list[int] = []
        #: PDUs submitted with ``AT+CMGS``.
        self.sent: list[str] = []
        #: Bytes of output dropped because nobody read the port (over 1 MiB queued).
        self.overrun = 0

        self._storage: dict[int, tuple[int, str]] = {}
        self._pending: deque[tuple[str, bool]] = deque()  # (pdu, indicate)
        self._silent = False
        self._link: Path | None = None
        if link_dir is not None:
            name = link_name or (
                f"usb-{self.profile.manufacturer}_{self.profile.model}_{imei}-if00-port0".replace(
                    " ", "_"
                )
            )
            self._link = Path(link_dir) / name

        self._loop: asyncio.AbstractEventLoop | None = None
        self._master = -1
        self._slave = -1
        self._tty = ""
        self._generation = 0
        self._rx = bytearray()
        self._rx_overflow = False
        self._pdu_input: bytearray | None = None
        self._out = bytearray()
        self._writing = False
        self._busy_until = 0.0
        self._timers: set[asyncio.TimerHandle] = set()
        self._changed: asyncio.Event | None = None
        self._mr = 0
        self._echo = True
        self._cmee = 0
        self._cmgf = 0
        self._cnmi: list[int] = [0, 0, 0, 0, 0]
        self._cpms: list[str] = ["SM", "SM", "SM"]
        self._pin_locked = False
        self._cfun = 1
        self._creg_n = 0
        self._cpbs = "SM"
        self._power_up()

    # -- public: lifecycle -----------------------------------------------------------------

    @property
    def port(self) -> str:
        """The path to open: the symlink when ``link_dir`` was given, else the pty slave."""
        if self._link is not None:
            return str(self._link)
        return self._tty

    @property
    def tty(self) -> str:
        """The current pty slave device (changes on :meth:`replug`)."""
        return self._tty

    @property
    def link_path(self) -> Path | None:
        return self._link

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def start(self) -> None:
        """Create the pty (and symlink) and start answering. Needs a running event loop."""
        if self.plugged:
            raise RuntimeError("FakeModem already started")
        self._loop = asyncio.get_running_loop()
        if self._changed is None:
            self._changed = asyncio.Event()
        self._open_pty()

    def stop(self) -> None:
        """Close the pty and remove the symlink. Idempotent. State is kept."""
        self._close_pty()

    async def __aenter__(self) -> FakeModem:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """Pull the USB cable: the host sees EOF/EIO, the symlink disappears."""
        self._close_pty()
        self._notify()

    def replug(self) -> None:
        """Plug back in: a power-up on a new pty, the symlink at the same path, storage kept."""
        if self._loop is None:
            raise RuntimeError("FakeModem was never started")
        self._close_pty()
        self._power_up()
        self._open_pty()
        self._drain_pending()
        self._notify()

    # -- public: test controls -------------------------------------------------------------

    @property
    def silent(self) -> bool:
        return self._silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self._silent = value
        if not value:
            self._drain_pending()

    @property
    def messages(self) -> dict[int, tuple[int, str]]:
        """A copy of the storage: index -> (stat, pdu hex)."""
        return dict(self._storage)

    @property
    def used(self) -> int:
        return len(self._storage)

    @property
    def pending(self) -> list[str]:
        """SMS the network could not deliver yet (storage full, unplugged, hung in direct mode)."""
        return [pdu for pdu, _ in self._pending]

    @property
    def echo(self) -> bool:
        return self._echo

    @property
    def pin_locked(self) -> bool:
        return self._pin_locked

    def deliver(self, pdu_hex: str) -> int | None:
        """An SMS arrives from the network (PDU hex including the SMSC field).

        Stored in the next free slot with ``+CMTI`` (``AT+CNMI=…,1``), or sent straight as
        ``+CMT`` (``AT+CNMI=…,2``, not stored). Returns the storage index, ``None`` if it went out
        as ``+CMT`` or is pending (storage full, unplugged).
        """
        pdu = _check_pdu(pdu_hex)
        if self._pending:  # first come, first served
            self._pending.append((pdu, True))
            return None
        accepted, index = self._accept(pdu, indicate=True)
        if not accepted:
            self._pending.append((pdu, True))
        self._notify()
        return index

    def store_silently(self, pdu_hex: str) -> int | None:
        """Store an SMS without any indication (a lost ``+CMTI``). ``None`` if storage is full
        (then it is pending and stored, without indication either, when a slot frees up)."""
        pdu = _check_pdu(pdu_hex)
        accepted, index = self._accept(pdu, indicate=False)
        if not accepted:
            self._pending.append((pdu, False))
        self._notify()
        return index

    def emit_garbage(self, data: bytes) -> None:
        """Write raw bytes to the host (line noise, boot junk). Written even when silent."""
        self._write(data)

    def emit_urc(self, line: str) -> None:
        """Write an unsolicited result code line (not when silent)."""
        self._urc(line)

    def set_registration(self, stat: int) -> None:
        """Change the network registration; ``+CREG: <stat>`` is sent if ``AT+CREG=1|2``."""
        self.registration = stat
        if self._creg_n >= 1:
            self._urc(f"+CREG: {stat}")

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until ``predicate()`` holds; rechecked after every command received
        and every state change. Raises ``TimeoutError``."""
        if self._changed is None:
            raise RuntimeError("FakeModem was never started")
        changed = self._changed

        async def poll() -> None:
            while not predicate():
                changed.clear()
                await changed.wait()

        await asyncio.wait_for(poll(), timeout)

    async def wait_command(self, prefix: str, timeout: float = 5.0) -> str:
        """Wait (bounded) for a command starting with ``prefix`` (case-insensitive), counting
        from the first command received; returns it."""
        up = prefix.upper()
        found: list[str] = []

        def seen() -> bool:
            found[:] = [c for c in self.commands if c.upper().startswith(up)]
            return bool(found)

        await self.wait_until(seen, timeout)
        return found[0]

    # -- pty plumbing ----------------------------------------------------------------------

    def _open_pty(self) -> None:
        assert self._loop is not None
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._tty = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave = master, slave
        self._generation += 1
        self._loop.add_reader(master, self._on_readable)
        if self._link is not None:
            tmp = self._link.with_name(f".{self._link.name}.{os.getpid()}.{id(self)}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._tty)
            os.replace(tmp, self._link)
        if self.boot_banner:
            for line in self.profile.banner:
                self._urc(line)

    def _close_pty(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._busy_until = 0.0
        if self._master >= 0:
            assert self._loop is not None
            self._loop.remove_reader(self._master)
            if self._writing:
                self._loop.remove_writer(self._master)
            self._writing = False
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        if self._link is not None:
            with contextlib.suppress(FileNotFoundError):
                if self._link.is_symlink() and os.readlink(self._link) == self._tty:
                    self._link.unlink()
        self._out.clear()
        self._rx.clear()
        self._rx_overflow = False
        self._pdu_input = None

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # cannot happen while we hold the slave open; do not spin if it does
            assert self._loop is not None
            self._loop.remove_reader(self._master)
            return
        self._receive(data)

    def _write(self, data: bytes) -> None:
        if not self.plugged or not data:
            return
        if len(self._out) + len(data) > _MAX_OUTPUT:
            self.overrun += len(data)
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        assert self._loop is not None
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.overrun += len(self._out)
                self._out.clear()
                break
            del self._out[:n]
        if self._out and not self._writing:
            self._loop.add_writer(self._master, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False

    def _answer(self, data: bytes, delay: float) -> None:
        """Write ``data`` after ``delay``, and after every answer scheduled before it."""
        if self._silent:
            return
        assert self._loop is not None
        now = self._loop.time()
        if delay <= 0 and self._busy_until <= now:
            self._write(data)
            return
        when = max(now, self._busy_until) + max(delay, 0.0)
        self._busy_until = when
        generation = self._generation

        def fire() -> None:
            self._timers.discard(handle)
            if generation == self._generation:
                self._write(data)

        handle = self._loop.call_at(when, fire)
        self._timers.add(handle)

    def _urc(self, line: str, pdu: str | None = None) -> None:
        if self._silent:
            return
        text = f"\r\n{line}\r\n" if pdu is None else f"\r\n{line}\r\n{pdu}\r\n"
        self._write(text.encode())

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- input -----------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            if self._pdu_input is not None:
                i = self._receive_pdu(data, i)
                continue
            byte = data[i]
            i += 1
            if byte in b"\r\n":
                if self._rx:
                    raw = bytes(self._rx)
                    self._rx.clear()
                    overflow, self._rx_overflow = self._rx_overflow, False
                    if not overflow:
                        self._command_line(raw.decode("latin-1"))
            elif len(self._rx) < _MAX_INPUT_LINE:
                self._rx.append(byte)
            else:
                self._rx_overflow = True
        self._notify()

    def _receive_pdu(self, data: bytes, i: int) -> int:
        assert self._pdu_input is not None
        for j in range(i, len(data)):
            byte = data[j]
            if byte == 0x1A:
                pdu = self._pdu_input.decode("latin-1").strip()
                self._pdu_input = None
                self._submit(pdu)
                return j + 1
            if byte == 0x1B:
                self._pdu_input = None
                self._answer(b"\r\nOK\r\n", self.slow)
                return j + 1
            if byte not in b"\r\n" and len(self._pdu_input) < _MAX_INPUT_LINE:
                self._pdu_input.append(byte)
        return len(data)

    def _submit(self, pdu: str) -> None:
        if not _HEX.fullmatch(pdu):
            self._answer(self._final_bytes([], self._cms(304)), self.slow)
            return
        self.sent.append(pdu.upper())
        self._mr = (self._mr + 1) % 256
        self._answer(self._final_bytes([f"+CMGS: {self._mr}"], "OK"), self.slow)

    def _command_line(self, raw: str) -> None:
        line = raw.strip()
        if not line:
            return
        self.commands.append(line)
        if self._silent:
            return
        if self.stall_on and line.upper().startswith(self.stall_on.upper()):
            self._silent = True
            return
        if line[:2].upper() != "AT":
            return  # real modems ignore what does not start with AT
        echo = f"{raw}\r".encode("latin-1") if self._echo else b""
        if echo:
            self._answer(echo, 0.0)
        info: list[str] = []
        extra_urcs: list[str] = []
        try:
            for part in self._split(line[2:]):
                info.extend(self._run(part, extra_urcs))
            final = "OK"
        except _Reply as reply:
            final = reply.final
        if self._pdu_input is not None and final == "OK":
            self._answer(b"\r\n> ", self.slow)
            return
        self._pdu_input = None
        out = self._final_bytes(info, final)
        for urc in extra_urcs:
            out += f"\r\n{urc}\r\n".encode()
        self._answer(out, self.slow)

    @staticmethod
    def _final_bytes(info: list[str], final: str) -> bytes:
        body = "\r\n" + "\r\n".join(info) + "\r\n" if info else ""
        return f"{body}\r\n{final}\r\n".encode()

    @staticmethod
    def _split(body: str) -> list[str]:
        """``"E0"`` -> ``["E0"]``; ``"+CMGF=0;+CNMI=2,1"`` -> two; ``"E0V1"`` -> two."""
        parts: list[str] = []
        for chunk in _split_quoted(body, ";"):
            chunk = chunk.strip()
            while chunk and chunk[0] not in "+^#$%":
                m = _BASIC.match(chunk.upper())
                if m is None:
                    raise _Reply("ERROR")
                parts.append(chunk[: m.end()])
                chunk = chunk[m.end() :]
            if chunk:
                parts.append(chunk)
        return parts

    # -- commands --------------------------------------------------------------------------

    def _error(self, code: int, table: dict[int, str], kind: str) -> str:
        if self._cmee == 0:
            return "ERROR"
        if self._cmee == 1:
            return f"+{kind} ERROR: {code}"
        return f"+{kind} ERROR: {table.get(code, 'unknown')}"

    def _cme(self, code: int) -> str:
        return self._error(code, _CME_TEXT, "CME")

    def _cms(self, code: int) -> str:
        return self._error(code, _CMS_TEXT, "CMS")

    def _run(self, part: str, urcs: list[str]) -> list[str]:
        upper = part.upper()
        if upper[:1] not in "+^#$%":
            return self._basic(upper)
        m = _EXTENDED.fullmatch(part)
        if m is None:
            raise _Reply("ERROR")
        name = m.group(1).upper()
        suffix = m.group(2) or ""
        form = "test" if suffix == "=?" else "query" if suffix == "?" else "set" if suffix else ""
        args = _args(m.group(3)) if form == "set" else []
        as_typed = "AT" + name + ("?" if form == "query" else "=?" if form == "test" else "")
        if as_typed in self.profile.iccid and form != "set":
            return [self._iccid_line(self.profile.iccid[as_typed])]
        handler = self._HANDLERS.get(name)
        if handler is None:
            raise _Reply("ERROR")
        return handler(self, form, args, urcs)

    def _basic(self, upper: str) -> list[str]:
        m = _BASIC.fullmatch(upper)
        if m is None:
            raise _Reply("ERROR")
        cmd, value = m.group(1), m.group(2)
        if cmd == "E" and value in ("", "0", "1"):
            self._echo = value == "1"
            return []
        if cmd in ("Z", "&F"):
            self._reset_settings()
            return []
        if cmd == "I":
            p = self.profile
            return [p.manufacturer, p.model, p.revision]
        if cmd in ("V", "Q", "&W", "&D", "&C", "&K"):
            return []
        raise _Reply("ERROR")

    def _iccid_line(self, prefix: str) -> str:
        digits = _swap_nibbles(self.iccid) if self.profile.iccid_swapped else self.iccid
        return f"{prefix}{digits}"

    def _need_sim(self, sms: bool) -> None:
        if self._pin_locked:
            raise _Reply(self._cms(311) if sms else self._cme(11))

    def _int_arg(self, args: list[str], i: int, lo: int, hi: int, *, sms: bool = False) -> int:
        bad = self._cms(304) if sms else self._cme(50)
        if i >= len(args) or not (args[i].isascii() and args[i].isdigit()):
            raise _Reply(bad)
        n = int(args[i])
        if not lo <= n <= hi:
            raise _Reply(bad)
        return n

    def _h_cmee(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            return [f"+CMEE: {self._cmee}"]
        if form == "test":
            return ["+CMEE: (0-2)"]
        if form == "set":
            self._cmee = self._int_arg(args, 0, 0, 2)
            return []
        raise _Reply("ERROR")

    def _h_cpin(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            return ["+CPIN: SIM PIN" if self._pin_locked else "+CPIN: READY"]
        if form == "test":
            return []
        if form == "set" and args:
            if not self._pin_locked:
                return []
            if args[0] != self.pin:
                raise _Reply(self._cme(16))
            self._pin_locked = False
            urcs.extend(self.profile.unlock_urcs)
            return []
        raise _Reply("ERROR")

    def _h_cmgf(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            return [f"+CMGF: {self._cmgf}"]
        if form == "test":
            return ["+CMGF: (0,1)"]
        if form == "set":
            self._cmgf = self._int_arg(args, 0, 0, 1)
            return []
        raise _Reply("ERROR")

    def _counts(self) -> tuple[int, int]:
        return len(self._storage), self.capacity

    def _h_cpms(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        used, total = self._counts()
        if form == "query":
            self._need_sim(sms=True)
            return ["+CPMS: " + ",".join(f'"{s}",{used},{total}' for s in self._cpms)]
        if form == "test":
            names = ",".join(f'"{s}"' for s in _STORAGES)
            return [f"+CPMS: ({names}),({names}),({names})"]
        if form == "set" and 1 <= len(args) <= 3:
            self._need_sim(sms=True)
            wanted = [a.upper() for a in args]
            if any(a not in _STORAGES for a in wanted):
                raise _Reply(self._cms(302))
            self._cpms[: len(wanted)] = wanted
            return ["+CPMS: " + ",".join(f"{used},{total}" for _ in self._cpms)]
        raise _Reply("ERROR")

    def _h_cnmi(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            return ["+CNMI: " + ",".join(str(v) for v in self._cnmi)]
        if form == "test":
            return ["+CNMI: (0-3),(0-3),(0,2),(0-2),(0,1)"]
        if form == "set" and 1 <= len(args) <= 5:
            limits = [(0, 3), (0, 3), (0, 3), (0, 2), (0, 1)]
            values = list(self._cnmi)
            for i, (lo, hi) in enumerate(limits[: len(args)]):
                if args[i] != "":
                    values[i] = self._int_arg(args, i, lo, hi)
            self._cnmi = values
            return []
        raise _Reply("ERROR")

    def _h_cgmi(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "":
            return [self.profile.manufacturer]
        raise _Reply("OK") if form == "test" else _Reply("ERROR")

    def _h_cgmm(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "":
            return [self.profile.model]
        raise _Reply("OK") if form == "test" else _Reply("ERROR")

    def _h_cgmr(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "":
            return [self.profile.revision]
        raise _Reply("OK") if form == "test" else _Reply("ERROR")

    def _h_cgsn(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "":
            return [f"{self.profile.cgsn_prefix}{self.imei}"]
        raise _Reply("OK") if form == "test" else _Reply("ERROR")

    def _h_cimi(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "":
            self._need_sim(sms=False)
            return [self.imsi]
        raise _Reply("OK") if form == "test" else _Reply("ERROR")

    def _h_cnum(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form != "":
            raise _Reply("OK") if form == "test" else _Reply("ERROR")
        self._need_sim(sms=False)
        if self.number is None:
            return []
        kind = 145 if self.number.startswith("+") else 129
        return [f'+CNUM: "","{self.number}",{kind}']

    def _h_creg(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            return [f"+CREG: {self._creg_n},{self.registration}"]
        if form == "test":
            return ["+CREG: (0-2)"]
        if form == "set":
            self._creg_n = self._int_arg(args, 0, 0, 2)
            return []
        raise _Reply("ERROR")

    def _h_cops(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            if self.operator is None or self.registration not in (1, 5):
                return ["+COPS: 0"]
            return [f'+COPS: 0,0,"{self.operator}",7']
        if form == "set":
            return []
        raise _Reply("ERROR")

    def _h_csq(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "":
            return [f"+CSQ: {self.rssi},99"]
        if form == "test":
            return ["+CSQ: (0-31,99),(0-7,99)"]
        raise _Reply("ERROR")

    def _h_cfun(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            return [f"+CFUN: {self._cfun}"]
        if form == "test":
            return ["+CFUN: (0,1,4),(0,1)"]
        if form == "set":
            self._cfun = self._int_arg(args, 0, 0, 4)
            if len(args) > 1 and args[1] == "1":
                self._power_up()
                urcs.extend(self.profile.banner)
            return []
        raise _Reply("ERROR")

    def _index_ok(self, index: int) -> bool:
        first = self.profile.first_index
        return first <= index < first + self.capacity

    def _require_pdu_mode(self) -> None:
        self._need_sim(sms=True)
        if self._cmgf != 0:
            raise _Reply(self._cms(303))  # this fake speaks PDU mode only

    def _h_cmgl(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "test":
            return ["+CMGL: (0-4)"]
        if form not in ("", "set"):
            raise _Reply("ERROR")
        self._require_pdu_mode()
        wanted = self._int_arg(args, 0, 0, 4, sms=True) if args else STAT_REC_UNREAD
        out: list[str] = []
        for index in sorted(self._storage):
            stat, pdu = self._storage[index]
            if wanted != 4 and stat != wanted:
                continue
            out.append(f"+CMGL: {index},{stat},,{_tpdu_length(pdu)}")
            out.append(pdu)
            if stat == STAT_REC_UNREAD:
                self._storage[index] = (STAT_REC_READ, pdu)
        return out

    def _h_cmgr(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "test":
            return []
        if form != "set":
            raise _Reply("ERROR")
        self._require_pdu_mode()
        index = self._int_arg(args, 0, 0, 65535, sms=True)
        if not self._index_ok(index):
            raise _Reply(self._cms(321))
        if index not in self._storage:
            return []
        stat, pdu = self._storage[index]
        if stat == STAT_REC_UNREAD:
            self._storage[index] = (STAT_REC_READ, pdu)
        return [f"+CMGR: {stat},,{_tpdu_length(pdu)}", pdu]

    def _h_cmgd(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        first = self.profile.first_index
        if form == "test":
            return [f"+CMGD: ({first}-{first + self.capacity - 1}),(0-4)"]
        if form != "set":
            raise _Reply("ERROR")
        self._need_sim(sms=True)
        index = self._int_arg(args, 0, 0, 65535, sms=True)
        flag = self._int_arg(args, 1, 0, 4, sms=True) if len(args) > 1 else 0
        if flag == 0:
            if not self._index_ok(index):
                raise _Reply(self._cms(321))
            victims = [index] if index in self._storage else []
        else:
            kept = {
                1: {STAT_REC_UNREAD, STAT_STO_UNSENT, STAT_STO_SENT},
                2: {STAT_REC_UNREAD, STAT_STO_UNSENT},
                3: {STAT_REC_UNREAD},
                4: set(),
            }[flag]
            victims = [i for i, (s, _) in sorted(self._storage.items()) if s not in kept]
        for victim in victims:
            del self._storage[victim]
            self.deleted.append(victim)
        if victims:
            # Indications for pending SMS go out after this command's OK, like a real modem.
            assert self._loop is not None
            self._loop.call_soon(self._drain_pending)
        return []

    def _h_cmgs(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "test":
            return []
        if form != "set":
            raise _Reply("ERROR")
        self._require_pdu_mode()
        self._int_arg(args, 0, 1, 255, sms=True)
        self._pdu_input = bytearray()
        return []

    def _h_cpbs(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "query":
            used = len(self.own_numbers) if self._cpbs == "ON" else 0
            return [f'+CPBS: "{self._cpbs}",{used},4']
        if form == "test":
            return ['+CPBS: ("SM","ON")']
        if form == "set" and args:
            self._need_sim(sms=False)
            if args[0].upper() not in ("SM", "ON"):
                raise _Reply(self._cme(3))
            self._cpbs = args[0].upper()
            return []
        raise _Reply("ERROR")

    def _h_cpbr(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "test":
            return ["+CPBR: (1-4),40,16"]
        if form != "set":
            raise _Reply("ERROR")
        self._need_sim(sms=False)
        first = self._int_arg(args, 0, 1, 4)
        last = self._int_arg(args, 1, first, 4) if len(args) > 1 else first
        if self._cpbs != "ON":
            return []
        out = []
        for i in range(first, last + 1):
            if i <= len(self.own_numbers):
                number = self.own_numbers[i - 1]
                kind = 145 if number.startswith("+") else 129
                out.append(f'+CPBR: {i},"{number}",{kind},"Own number"')
        return out

    def _h_cusd(self, form: str, args: list[str], urcs: list[str]) -> list[str]:
        if form == "test":
            return ["+CUSD: (0-2)"]
        if form == "query":
            return ["+CUSD: 1"]
        if form != "set" or not args:
            raise _Reply("ERROR")
        if args[0] == "2" or len(args) < 2:
            return []
        raw = args[1]
        code = raw
        if self.profile.ussd_packed_only or not (set(raw) <= set("0123456789*#+")):
            if not _HEX.fullmatch(raw):
                raise _Reply(self._cme(100))  # a code as text: this firmware wants it packed
            code = _unpack_request(raw)
        self._need_sim(sms=False)
        self.ussd_asked.append(code)
        answer = self.ussd.get(code)
        if answer is None:
            urcs.append("+CUSD: 2")
            return []
        urcs.append(_cusd_line(answer))
        if answer.sms_from is not None:
            assert self._loop is not None
            pdu = encode_deliver(answer.sms_from, answer.sms_text)
            self._loop.call_later(0.05, self.deliver, pdu)
        return []

    _HANDLERS: dict[str, Callable[[FakeModem, str, list[str], list[str]], list[str]]] = {
        "+CMEE": _h_cmee,
        "+CPIN": _h_cpin,
        "+CMGF": _h_cmgf,
        "+CPMS": _h_cpms,
        "+CNMI": _h_cnmi,
        "+CGMI": _h_cgmi,
        "+CGMM": _h_cgmm,
        "+CGMR": _h_cgmr,
        "+CGSN": _h_cgsn,
        "+CIMI": _h_cimi,
        "+CNUM": _h_cnum,
        "+CREG": _h_creg,
        "+COPS": _h_cops,
        "+CSQ": _h_csq,
        "+CFUN": _h_cfun,
        "+CMGL": _h_cmgl,
        "+CMGR": _h_cmgr,
        "+CMGD": _h_cmgd,
        "+CMGS": _h_cmgs,
        "+CPBS": _h_cpbs,
        "+CPBR": _h_cpbr,
        "+CUSD": _h_cusd,
    }

    # -- state -----------------------------------------------------------------------------

    def _power_up(self) -> None:
        self._silent = False
        self._pin_locked = self.pin is not None
        self._cfun = 1
        self._creg_n = 0
        self._reset_settings()

    def _reset_settings(self) -> None:
        self._echo = True
        self._cmee = 0
        self._cmgf = 0
        self._cnmi = [0, 0, 0, 0, 0]
        self._cpms = ["SM", "SM", "SM"]

    def _free_index(self) -> int | None:
        first = self.profile.first_index
        for index in range(first, first + self.capacity):
            if index not in self._storage:
                return index
        return None

    def _accept(self, pdu: str, *, indicate: bool) -> tuple[bool, int | None]:
        """Try to take one SMS from the network: (taken, storage index)."""
        if not self.plugged:
            return False, None
        mode, mt = self._cnmi[0], self._cnmi[1]
        if indicate and mode != 0 and mt == 2:
            if self._silent:
                return False, None
            self._urc(f"+CMT: ,{_tpdu_length(pdu)}", pdu)
            return True, None
        index = self._free_index()
        if index is None:
            return False, None
        self._storage[index] = (STAT_REC_UNREAD, pdu)
        if indicate and mode != 0 and mt in (1, 3):
            self._urc(f'+CMTI: "{self._cpms[2]}",{index}')
        return True, index

    def _drain_pending(self) -> None:
        while self._pending:
            pdu, indicate = self._pending[0]
            accepted, _ = self._accept(pdu, indicate=indicate)
            if not accepted:
                break
            self._pending.popleft()
        self._notify()
