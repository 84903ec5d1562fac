"""Inbound's phone per (source, destination) (gateway/sources/smpp/inbound.py) is remembered
only until the shared [[sim]] table is replaced (SIGHUP)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import SimConfig
from gateway.intake import Intake
from gateway.outbox import Outbox
from gateway.sources.sim_match import SimTable
from gateway.sources.smpp.inbound import Inbound, PeerRules

RULES = PeerRules("smpp-server:box1")


async def test_a_destination_s_phone_follows_a_replaced_table(tmp_path: Path) -> None:
    outbox = await Outbox.open(str(tmp_path / "o.sqlite3"))
    try:
        table = SimTable()
        inbound = Inbound(Intake(outbox), table)
        assert inbound.phone_of(RULES, "port7") == ""  # held no_phone, and remembered
        table.replace([SimConfig(phone="79001110007", source="smpp-server:box1", port="port7")])
        assert inbound.phone_of(RULES, "port7") == "79001110007"
        table.replace([])
        assert inbound.phone_of(RULES, "port7") == ""
        assert inbound.phone_of(RULES, "79005550000") == "79005550000"  # a number stays one
    finally:
        await outbox.close()
