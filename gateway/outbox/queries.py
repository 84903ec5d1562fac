"""The outbox's fixed SQL, read once at import from the named blocks of `queries.sql`.

As in procrastinate (`procrastinate/sql/queries.sql`), a block is a line ``-- name --``, one
line ``-- what it does``, then the statement; the code binds each query it runs to a module
constant at import (``_CLAIM_DUE = query("claim_due")``), so a name missing from the file
fails the import, and a duplicate, malformed or empty block fails this module's import.
tests/outbox/test_queries.py checks that every block is used and every used name exists.

SQL whose text depends on the call stays in the code, where a template would read worse:
- the multi-row ``INSERT INTO messages`` (store.py ``_insert_sql``): its ``VALUES`` list has as
  many rows as the chunk (64, 32, ..., 1);
- the dedup lookup (store.py ``existing_refs_sql``): a join with ``(VALUES ...)``, one pair per
  message of the batch;
- ``give_phone`` (store.py): its ``SELECT`` and ``UPDATE`` name the smsIds in ``IN (?,...)``
  lists;
- optional filters: ``requeue`` (by smsIds, an ``IN (?,...)`` list, by state, since),
  ``list_messages`` (state, phone), ``waiting_part_phones`` (one group) and
  ``PartnerBook.activations`` (open only, a limit). Written as ``(? IS NULL OR col = ?)``
  they could be one block each, but SQLite would then no longer see the literal
  ``state = 'queued'`` terms its partial indexes need, and the plan could change;
- connection settings and transaction control (store.py ``_prepare``: a ``PRAGMA`` takes no
  parameters, so the busy timeout is formatted in; writer.py's ``BEGIN``/``SAVEPOINT``) and
  migrate.py's scripts, which are not queries.
The column lists those inline queries share with blocks here (``_MESSAGE_COLUMNS``,
``_ACTIVATION_COLUMNS``) are checked against the blocks' result columns by the same test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

from gateway.errors import GatewayError

__all__ = ["QUERIES", "QueryFileError", "parse", "query"]

FILE = "queries.sql"
# A header is one word between `-- ` and ` --`; a comment of several words (a section title)
# is not, so a header with a bad name is an error rather than a comment read into a query.
_HEADER = re.compile(r"--\s+(\S+)\s+--\s*")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class QueryFileError(GatewayError):
    """queries.sql is malformed, or the code asks it for a query it does not hold."""


def parse(text: str, origin: str = FILE) -> dict[str, str]:
    """name -> statement for every block of `text`; the first fault raises QueryFileError."""
    found: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []

    def close(lineno: int) -> None:
        # Comment lines after a statement (a section title before the next block) are not
        # part of it.
        while body and (not body[-1].strip() or body[-1].lstrip().startswith("--")):
            body.pop()
        if name is not None and not body:
            raise QueryFileError(f"{origin}:{lineno}: query {name!r} has no SQL")
        if name is not None:
            found[name] = "\n".join(body).strip()
        body.clear()

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        lineno = i + 1
        header = _HEADER.fullmatch(line)
        if header is None:
            if name is None and line.strip() and not line.lstrip().startswith("--"):
                raise QueryFileError(f"{origin}:{lineno}: SQL outside a named block")
            body.append(line)
            i += 1
            continue
        close(lineno)
        candidate = header.group(1)
        if not _NAME.fullmatch(candidate):
            raise QueryFileError(
                f"{origin}:{lineno}: bad query name {candidate!r} (lowercase letters, digits, _)"
            )
        if candidate in found:
            raise QueryFileError(f"{origin}:{lineno}: query {candidate!r} is defined twice")
        description = lines[i + 1] if i + 1 < len(lines) else ""
        described = description.startswith("-- ") and description[3:].strip()
        if not described or _HEADER.fullmatch(description):
            raise QueryFileError(
                f"{origin}:{lineno + 1}: query {candidate!r} needs a `-- what it does` line"
                " under its name"
            )
        name = candidate
        i += 2
    close(len(lines))
    return found


def _load() -> Mapping[str, str]:
    text = resources.files("gateway.outbox").joinpath(FILE).read_text(encoding="utf-8")
    return MappingProxyType(parse(text, f"gateway/outbox/{FILE}"))


QUERIES: Mapping[str, str] = _load()


def query(name: str) -> str:
    """The statement named `name`; called at import, so a wrong name fails the import."""
    try:
        return QUERIES[name]
    except KeyError:
        raise QueryFileError(f"gateway/outbox/{FILE} has no query {name!r}") from None
