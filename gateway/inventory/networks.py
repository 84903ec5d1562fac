"""Which country and operator a SIM belongs to, from its IMSI (MCC/MNC), and their Onlinesim names.

The MCC-to-country table (ITU-T E.212) and the MCC/MNC-to-brand table are data files beside this
module (`data/`), derived from the mobile-codes package (MPL-2.0). Countries change rarely;
brands do, so the operator falls back to the name the network itself broadcasts (AT+COPS) when
the table has no entry, and `[partner.names]` maps either to the names Onlinesim uses.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Names", "Network", "identify", "split_imsi"]

# MCCs whose networks use 3-digit MNCs (the list Onlinesim's own modem tool uses).
_THREE_DIGIT_MNC = frozenset(
    [
        "302",
        "310",
        "311",
        "312",
        "313",
        "316",
        "334",
        "338",
        "342",
        "344",
        "346",
        "348",
        "350",
        "352",
        "354",
        "356",
        "358",
        "360",
        "362",
        "364",
        "365",
        "366",
        "374",
        "376",
        "404",
        "405",
        "708",
        "714",
        "722",
        "732",
        "750",
    ]
)
_SLUG = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class Network:
    mcc: str
    mnc: str
    iso: str  # ISO 3166-1 alpha-2, "" when the MCC is unknown
    country: str  # English name, "" when unknown
    operator: str  # brand from the table, else the network's own name, else ""


@cache
def _countries() -> dict[str, tuple[str, str]]:
    return {row[0]: (row[1], row[2]) for row in _rows("mcc_countries.csv")}


@cache
def _operators() -> dict[tuple[str, str], str]:
    return {(row[0], row[1]): row[2] for row in _rows("mcc_mnc_operators.csv")}


def _rows(name: str) -> list[list[str]]:
    text = resources.files("gateway.inventory").joinpath("data", name).read_text("utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.reader(lines))[1:]


def split_imsi(imsi: str) -> tuple[str, str] | None:
    """(MCC, MNC) from an IMSI, or None when it is not 6-15 digits."""
    if not (imsi.isascii() and imsi.isdigit() and 6 <= len(imsi) <= 15):
        return None
    mcc = imsi[:3]
    three = mcc in _THREE_DIGIT_MNC or (
        (mcc, imsi[3:6]) in _operators() and (mcc, imsi[3:5]) not in _operators()
    )
    return mcc, imsi[3:6] if three else imsi[3:5]


def identify(imsi: str | None, network_name: str = "") -> Network | None:
    """The SIM's home network from its IMSI; None without a usable IMSI."""
    split = split_imsi(imsi or "")
    if split is None:
        return None
    mcc, mnc = split
    iso, country = _countries().get(mcc, ("", ""))
    operator = _operators().get((mcc, mnc)) or network_name.strip()
    return Network(mcc, mnc, iso, country, operator)


def slug(name: str) -> str:
    """Onlinesim-style name when no mapping says otherwise: 'Russia' -> 'russia'."""
    return _SLUG.sub("_", name.lower()).strip("_")


@dataclass(frozen=True)
class Names:
    """`[partner.names]`: keys "MCC" or "MCC-MNC", values Onlinesim's country or operator name."""

    mapping: Mapping[str, str]

    def country(self, net: Network) -> str:
        return self.mapping.get(net.mcc) or slug(net.country) or net.mcc

    def operator(self, net: Network) -> str:
        return (
            self.mapping.get(f"{net.mcc}-{net.mnc}") or slug(net.operator) or f"{net.mcc}{net.mnc}"
        )
