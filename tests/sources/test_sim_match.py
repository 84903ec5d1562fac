"""The shared [[sim]] table (gateway/sources/sim_match.py): a SIGHUP replaces its entries in
place, and every lookup after that reads the new ones."""

from __future__ import annotations

from gateway.config import SimConfig
from gateway.sources.sim_match import SimTable, phone_for

PORT_3 = SimConfig(phone="79001110003", source="box-1", port="3")
WHOLE = SimConfig(phone="79001110000", source="box-1")


def test_a_lookup_after_a_replace_reads_the_new_entries() -> None:
    table = SimTable([PORT_3])
    assert phone_for(table, source="dinstar:box-1", port="4") is None
    table.replace([PORT_3, WHOLE])
    assert phone_for(table, source="dinstar:box-1", port="4") == "79001110000"
    assert phone_for(table, source="dinstar:box-1", port="3") == "79001110003"
    table.replace([])
    assert phone_for(table, source="dinstar:box-1", port="3") is None


def test_each_replace_is_a_new_version_and_the_table_reads_as_a_sequence() -> None:
    table = SimTable()
    assert (table.version, len(table), list(table)) == (0, 0, [])
    table.replace((PORT_3, WHOLE))
    assert table.version == 1
    assert (table[0], table[-1], list(table[1:])) == (PORT_3, WHOLE, [WHOLE])
    assert WHOLE in table
