"""queries.sql: every named block is used, every used name exists, each compiles against the
schema, and the loader refuses a malformed file."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox import Outbox, partner, store
from gateway.outbox.queries import QUERIES, QueryFileError, parse, query

PACKAGE = Path(store.__file__).resolve().parents[1]  # gateway/
_USE = re.compile(r"""\bquery\(\s*(?P<arg>[^)]*)\)""")
_LITERAL = re.compile(r"""^"([a-z][a-z0-9_]*)"$""")


def names_used() -> dict[str, list[str]]:
    """name -> the modules that ask for it, from every module that imports `query`."""
    used: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name == "queries.py" or "import query" not in text:
            continue
        for m in _USE.finditer(text):
            literal = _LITERAL.match(m.group("arg").strip())
            # A name computed at run time could not be checked here (nor fail the import).
            assert literal, f"{path.name}: query({m.group('arg')}) is not a string literal"
            used.setdefault(literal.group(1), []).append(path.name)
    return used


def test_every_named_query_is_used_and_every_used_name_exists() -> None:
    used = names_used()
    assert set(QUERIES) - set(used) == set(), "blocks no code asks for"
    assert set(used) - set(QUERIES) == set(), "names queries.sql does not hold"


def test_each_query_is_bound_once() -> None:
    twice = {name: where for name, where in names_used().items() if len(where) > 1}
    assert twice == {}


def test_a_name_the_file_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(QueryFileError, match="no query 'claim_overdue'"):
        query("claim_overdue")


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    opened = await Outbox.open(str(tmp_path / "outbox.sqlite3"))
    yield opened
    await opened.close()


async def test_every_named_query_compiles_against_the_current_schema(outbox: Outbox) -> None:
    def compile_all(conn: sqlite3.Connection) -> dict[str, str]:
        failed = {}
        for name, sql in QUERIES.items():
            try:  # EXPLAIN prepares the statement without running it
                conn.execute(f"EXPLAIN {sql}", [None] * sql.count("?")).fetchall()
            except sqlite3.Error as e:
                failed[name] = str(e)
        return failed

    assert await outbox.read(compile_all) == {}


def columns(conn: sqlite3.Connection, sql: str) -> list[str]:
    """The names of the columns `sql` returns (run with zeros, in a transaction rolled back)."""
    conn.execute("BEGIN")
    try:
        cursor = conn.execute(sql, [0] * sql.count("?"))
        names = [d[0] for d in cursor.description or ()]
        cursor.fetchall()
    finally:
        conn.execute("ROLLBACK")
    return names


def split(column_list: str) -> list[str]:
    return [c.strip() for c in column_list.split(",")]


async def test_column_lists_written_in_the_code_match_the_blocks_that_return_them(
    outbox: Outbox,
) -> None:
    """list_messages and activations() are built in the code from a column list; the rows of
    the blocks that return the same records are read by the same decoder."""
    conn = sqlite3.connect(outbox.path, isolation_level=None)
    try:
        messages = split(store._MESSAGE_COLUMNS)
        assert columns(conn, QUERIES["get_message"]) == messages
        assert columns(conn, QUERIES["claim_due"]) == messages
        activations = split(partner._ACTIVATION_COLUMNS)
        assert columns(conn, QUERIES["get_activation"]) == activations
        sims = [f.name for f in dataclasses.fields(partner.SimRecord)]
        assert columns(conn, QUERIES["list_sims"]) == sims
    finally:
        conn.close()


# -- the loader --------------------------------------------------------------------------------


def test_blocks_are_read_with_their_names_and_without_their_comments() -> None:
    text = (
        "-- header of the file\n\n"
        "-- first --\n-- What the first does\nSELECT 1\n  -- a why comment inside\nFROM t\n\n"
        "-- a section title ----------\n\n"
        "-- second_2 --\n-- What the second does\nUPDATE t SET a = ?\n"
    )
    assert parse(text) == {
        "first": "SELECT 1\n  -- a why comment inside\nFROM t",
        "second_2": "UPDATE t SET a = ?",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "-- a --\n-- one\nSELECT 1\n-- a --\n-- two\nSELECT 2\n",
            r":4: query 'a' is defined twice",
        ),
        ("-- Claim-Due --\n-- one\nSELECT 1\n", r":1: bad query name 'Claim-Due'"),
        ("-- a --\nSELECT 1\n", r":2: query 'a' needs a `-- what it does` line"),
        ("-- a --\n", r":2: query 'a' needs a `-- what it does` line"),
        ("-- a --\n-- \nSELECT 1\n", r":2: query 'a' needs a `-- what it does` line"),
        ("-- a --\n-- b --\nSELECT 1\n", r":2: query 'a' needs a `-- what it does` line"),
        ("-- a --\n-- one\n\n-- only a comment\n", r":4: query 'a' has no SQL"),
        ("-- a --\n-- one\n-- b --\n-- two\nSELECT 2\n", r":3: query 'a' has no SQL"),
        ("SELECT 1\n-- a --\n-- one\nSELECT 2\n", r":1: SQL outside a named block"),
    ],
)
def test_a_malformed_file_is_refused_with_the_line(text: str, error: str) -> None:
    with pytest.raises(QueryFileError, match=r"^q\.sql" + error):
        parse(text, "q.sql")


@given(st.text())
def test_any_text_is_read_or_refused_with_a_query_file_error(text: str) -> None:
    try:
        found = parse(text)
    except QueryFileError:
        return
    for sql in found.values():  # each holds a line that is neither blank nor a comment
        assert any(line.strip() and not line.lstrip().startswith("--") for line in sql.split("\n"))


names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
statements = st.lists(
    st.from_regex(r"[A-Z][A-Za-z0-9 ,=?()*']{0,40}", fullmatch=True), min_size=1, max_size=4
).map("\n".join)


@given(st.dictionaries(names, statements, max_size=8))
def test_written_blocks_are_read_back(blocks: dict[str, str]) -> None:
    text = "-- header\n\n" + "".join(
        f"-- {name} --\n-- What {name} does\n{sql}\n\n" for name, sql in blocks.items()
    )
    assert parse(text) == {name: sql.strip() for name, sql in blocks.items()}
