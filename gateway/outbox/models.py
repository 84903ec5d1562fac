"""The values the outbox stores and hands out: messages, attempts and their states."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    DROPPED = "dropped"
    EXPIRED = "expired"
    HELD = "held"  # stored, not pushed: see Hold


class Hold(StrEnum):
    """Why a message is kept but not pushed."""

    NO_PHONE = "no_phone"  # released once the receiving SIM's number is known
    UNDECODABLE = "undecodable"  # the raw PDU is kept for a person to look at
    REFUSED = "refused"  # a field the rules refuse (the log names it); the raw PDU is kept
    NOT_TEXT = "not_text"  # status report, WAP push and the like: recorded, never pushed
    OPERATOR_ANSWER = "operator_answer"  # an operator answering an own-number query: never pushed
    # [partner] on: no open activation on the number when the SMS came in (the SMS is older
    # than any order); never released by an activation opening later, only by hand
    # (`messages retry SMSID`). Not used with push_without_activation = true.
    NO_ACTIVATION = "no_activation"


FINISHED_STATES = (State.DELIVERED, State.DROPPED, State.EXPIRED)


class Outcome(StrEnum):
    """What one push attempt came to; also the `result` label of the attempts metric."""

    DELIVERED = "delivered"
    RETRY = "retry"  # an HTTP answer other than 200 that carries no drop code
    DROPPED = "dropped"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"  # no HTTP answer: timeout, refused, reset


@dataclass(frozen=True)
class Incoming:
    """An SMS a source wants committed. `source_ref` is the source's own id, for deduplication."""

    source: str
    phone: str
    phone_from: str
    text: str
    received_at: float
    source_ref: str | None = None
    hold: Hold | None = None  # set: stored as held, never pushed (phone may be "")
    raw: str | None = None  # the PDU as read, kept for audit
    partial: bool = False  # joined with parts missing
    activation_id: int | None = None  # [partner] on: the open activation it is pushed for
    rent_service: str | None = None  # set: a rent activation's service; pushed to the rent URL
    # A dedup bounded in time: the same item's key in the period before `source_ref`'s; an
    # item stored under it is the same item (a duplicate), one stored earlier is not looked at.
    earlier_ref: str | None = None


@dataclass(frozen=True)
class Accepted:
    sms_id: int
    duplicate: bool


@dataclass(frozen=True)
class Part:
    """One part of a concatenated SMS; parts with the same group_key make one message."""

    source: str
    group_key: str
    seq: int
    total: int  # 0: open-ended, the source closes the group (Intake.close_group)
    text: str
    phone: str  # "" when unknown: the joined message is held NO_PHONE
    phone_from: str
    received_at: float
    source_ref: str  # this part's dedup key
    raw: str | None = None
    earlier_ref: str | None = None  # as Incoming.earlier_ref


@dataclass(frozen=True)
class PartResult:
    duplicate: bool  # this part was committed before
    joined: Accepted | None  # the whole message, once every part is there


@dataclass(frozen=True)
class Message:
    sms_id: int
    source: str
    source_ref: str | None
    phone: str
    phone_from: str
    text: str
    received_at: float
    accepted_at: float
    state: State
    due_at: float
    attempts: int
    finished_at: float | None
    final_code: str | None
    hold_reason: Hold | None = None
    raw: str | None = None
    partial: bool = False
    activation_id: int | None = None  # the activation it was accepted for ([partner] on)
    rent_service: str | None = None  # set: pushed to the rent URL with this `service`


@dataclass(frozen=True)
class Attempt:
    sms_id: int
    started_at: float
    duration: float
    outcome: Outcome
    http_status: int | None = None
    code: str | None = None
    error: str | None = None
    body: str | None = None


@dataclass(frozen=True)
class AttemptRecord:
    """An attempt and what it means for its message: the worker's decision, written in one go."""

    attempt: Attempt
    next_due: float | None  # when to try again; None when the message is finished

    @property
    def new_state(self) -> State:
        match self.attempt.outcome:
            case Outcome.DELIVERED:
                return State.DELIVERED
            case Outcome.DROPPED:
                return State.DROPPED
            case Outcome.RETRY | Outcome.RATE_LIMITED | Outcome.ERROR:
                return State.QUEUED


@dataclass(frozen=True)
class Drop:
    sms_id: int
    phone: str
    phone_from: str
    code: str | None
    finished_at: float
    state: State


@dataclass(frozen=True)
class StoreSummary:
    """What `status` and /health show about the store."""

    counts: dict[State, int]
    oldest_queued_received_at: float | None
    last_delivered_at: float | None
