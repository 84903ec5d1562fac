"""What one SMPP bind counts into the metrics: its answered messages and its errors (the
session's `LinkCounters`) and its PDUs in flight, each labelled by source and bind."""

from __future__ import annotations

from prometheus_client import Counter

from gateway.metrics import Metrics

from .session import BindStatus

__all__ = ["OUTCOMES", "BindCounters"]

# What a submit_sm/deliver_sm answer can be (session.Link._answer); shown as 0 from a bind's
# start, so the first of each is an increase a rate() sees.
OUTCOMES = ("stored", "duplicate", "refused", "temporary_error")


class BindCounters:
    """The metric children of one bind: `<system_id>#<slot>` of a server account (a slot is
    reused once its session ended, so a bind's series are bounded by `max_binds`) or a
    client's `name`. A session counts through `message` and `error`; `watch` makes the
    in-flight gauge read the session's status at scrape time."""

    def __init__(self, metrics: Metrics, source: str, bind: str) -> None:
        self.source = source
        self.bind = bind
        self._metrics = metrics
        # `.labels()` takes a lock and a dict lookup on every call; a message counts per PDU.
        self._messages: dict[str, Counter] = {
            outcome: metrics.smpp_messages.labels(source, bind, outcome) for outcome in OUTCOMES
        }
        self._errors: dict[str, Counter] = {}
        self._in_flight = metrics.smpp_in_flight.labels(source, bind)
        self.idle()

    def message(self, outcome: str) -> None:
        child = self._messages.get(outcome)
        if child is None:
            child = self._messages[outcome] = self._metrics.smpp_messages.labels(
                self.source, self.bind, outcome
            )
        child.inc()

    def error(self, kind: str) -> None:
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = self._metrics.smpp_errors.labels(
                self.source, self.bind, kind
            )
        child.inc()

    def watch(self, status: BindStatus) -> None:
        """The in-flight gauge follows `status` (the session's window use) from now on."""
        self._in_flight.set_function(lambda: status.in_flight)

    def idle(self) -> None:
        """The session ended: nothing in flight until the next `watch`."""
        self._in_flight.set_function(lambda: 0)
