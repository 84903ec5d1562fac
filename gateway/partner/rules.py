"""Pure rules of the partner side: which SIM may be offered for a service, and what a FINISH does.

A ledger entry is one SIM's history with one service. FINISH_ACTIVATION statuses (Onlinesim's
wording, with the SMSHub reading of 4 that Onlinesim's page does not contradict):
3 sold: never offer this number for that service again; 4 cancelled: may be offered again, at
most `cancel_retries` more times; 1: not for this service any more; 5 refunded: our choice,
counted as a cancel (the client got nothing usable; the number itself is not at fault).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from gateway.outbox.partner import FinishStatus, LedgerEntry

__all__ = ["after_finish", "excluded", "offerable"]


def after_finish(entry: LedgerEntry, status: FinishStatus) -> LedgerEntry:
    match status:
        case FinishStatus.SOLD:
            return replace(entry, sold=True)
        case FinishStatus.CANCELLED:
            return replace(entry, cancels=entry.cancels + 1)
        case FinishStatus.NOT_FOR_SERVICE:
            return replace(entry, blocked=True)
        case FinishStatus.REFUNDED:
            return replace(entry, cancels=entry.cancels + 1, refunds=entry.refunds + 1)


def offerable(entry: LedgerEntry | None, cancel_retries: int) -> bool:
    """May this SIM be offered for this service (ignoring whether it is free right now)?"""
    if entry is None:
        return True
    return not entry.sold and not entry.blocked and entry.cancels <= cancel_retries


def excluded(phone: str, prefixes: Iterable[str]) -> bool:
    """Does the number start with any of exceptionPhoneSet's digit prefixes?"""
    return any(phone.startswith(p) for p in prefixes)
