"""The durable outbox: every accepted SMS and every attempt to push it, in one SQLite file."""

from gateway.outbox.models import (
    Accepted,
    Attempt,
    AttemptRecord,
    Drop,
    Incoming,
    Message,
    Outcome,
    State,
    StoreSummary,
)
from gateway.outbox.store import Outbox

__all__ = [
    "Accepted",
    "Attempt",
    "AttemptRecord",
    "Drop",
    "Incoming",
    "Message",
    "Outbox",
    "Outcome",
    "State",
    "StoreSummary",
]
