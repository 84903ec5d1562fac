"""The one ``[[sim]]`` matcher: which configured SIM (and so which phone) a message came in on,
by ICCID, IMSI, or source and port; and the table of entries the running sources share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from gateway.config import SimConfig
from gateway.fields import normalize_phone

__all__ = ["SimTable", "normalise_iccid", "phone_for"]


class SimTable(Sequence[SimConfig]):
    """The ``[[sim]]`` entries in force, shared by every source that looks a phone up: a SIGHUP
    replaces them in place (``replace``), so each lookup reads the current ones. ``version``
    grows with each replacement, for a source that remembers what it looked up."""

    def __init__(self, entries: Iterable[SimConfig] = ()) -> None:
        self._entries = tuple(entries)
        self.version = 0

    def replace(self, entries: Iterable[SimConfig]) -> None:
        self._entries = tuple(entries)
        self.version += 1

    @overload
    def __getitem__(self, index: int) -> SimConfig: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SimConfig]: ...
    def __getitem__(self, index: int | slice) -> SimConfig | Sequence[SimConfig]:
        return self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[SimConfig]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"SimTable({self._entries!r})"


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isascii() and c.isdigit())


def normalise_iccid(value: str) -> str:
    """``"8970 1991 2345 6789 012F"`` -> ``"8970199123456789012"``: uppercase, one trailing
    filler ``F`` dropped, then only the digits kept (spaces and dashes from copy-paste go)."""
    return _digits(value.strip().upper().removesuffix("F"))


def phone_for(
    sims: Sequence[SimConfig],
    *,
    source: str,
    port: str | None = None,
    imsi: str | None = None,
    iccid: str | None = None,
) -> str | None:
    """The phone of the first ``[[sim]]`` entry matching, digits only; ``None`` when none does.

    An entry matches by ``iccid`` (normalised: the filler F and spacing ignored), by ``imsi``,
    or by ``source`` (either the full source name such as
    ``"dinstar:box-1"`` or the peer's bare name ``"box-1"``) together with ``port`` when the entry
    names one. An entry without a port stands for every port of that source; a lookup without a
    port only finds such entries.
    """
    bare = source.split(":", 1)[1] if ":" in source else source
    wanted_imsi = _digits(imsi or "")
    wanted_iccid = normalise_iccid(iccid or "")
    for sim in sims:
        by_iccid = bool(sim.iccid and wanted_iccid and normalise_iccid(sim.iccid) == wanted_iccid)
        by_imsi = bool(sim.imsi and wanted_imsi and _digits(sim.imsi) == wanted_imsi)
        by_port = bool(sim.source in (source, bare) and sim.source) and (
            not sim.port or (port is not None and sim.port == port)
        )
        if by_iccid or by_imsi or by_port:
            phone = normalize_phone(sim.phone)
            if phone:
                return phone
    return None
