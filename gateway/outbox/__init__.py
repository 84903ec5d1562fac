"""The durable outbox: every accepted SMS and every attempt to push it, in one SQLite file."""

from gateway.outbox.models import (
    Accepted,
    Attempt,
    AttemptRecord,
    Drop,
    Hold,
    Incoming,
    Message,
    Outcome,
    Part,
    PartResult,
    State,
    StoreSummary,
)
from gateway.outbox.store import Outbox

__all__ = [
    "Accepted",
    "Attempt",
    "AttemptRecord",
    "Drop",
    "Hold",
    "Incoming",
    "Message",
    "Outbox",
    "Outcome",
    "Part",
    "PartResult",
    "State",
    "StoreSummary",
]
