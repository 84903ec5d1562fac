"""The Prometheus metrics of CONTRACT section 6, in a registry of their own (one per daemon).
The only module that registers metrics: parts get theirs from `Metrics`."""

from __future__ import annotations

import math
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from gateway.outbox import Hold, Outcome, State, StoreSummary

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "sms_gateway_messages_received",
            "SMS committed to the outbox, by source.",
            ["source"],
            registry=r,
        )
        self.duplicates = Counter(
            "sms_gateway_duplicates",
            "SMS a source sent again and we recognised.",
            ["source"],
            registry=r,
        )
        self.attempts = Counter(
            "sms_gateway_push_attempts", "PUSH_SMS attempts, by result.", ["result"], registry=r
        )
        for outcome in Outcome:
            self.attempts.labels(outcome.value)
        self.held = Counter(
            "sms_gateway_messages_held",
            "SMS committed held (kept, not pushed), by reason.",
            ["reason"],
            registry=r,
        )
        for hold in Hold:
            self.held.labels(hold.value)
        self.messages = Gauge(
            "sms_gateway_messages", "Messages in the store, by state.", ["state"], registry=r
        )
        self.oldest_queued = Gauge(
            "sms_gateway_oldest_queued_seconds", "Age of the oldest queued message.", registry=r
        )
        self.push_seconds = Histogram(
            "sms_gateway_push_seconds",
            "Duration of one PUSH_SMS attempt.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "sms_gateway_delivery_seconds",
            "From receipt of an SMS to its delivery upstream.",
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.circuit_open = Gauge(
            "sms_gateway_upstream_circuit_open", "1 while only probes go upstream.", registry=r
        )
        self.in_flight = Gauge(
            "sms_gateway_push_in_flight", "PUSH_SMS requests in flight.", registry=r
        )
        self.modem_up = Gauge(
            "sms_gateway_modem_up",
            "1 when the modem answers and its SIM is ready.",
            ["modem"],
            registry=r,
        )
        self.modem_signal = Gauge(
            "sms_gateway_modem_signal", "Modem signal in dBm (AT+CSQ).", ["modem"], registry=r
        )
        self.modem_registered = Gauge(
            "sms_gateway_modem_registered",
            "1 when the modem is registered on its network (home or roaming, +CREG 1 or 5).",
            ["modem"],
            registry=r,
        )
        self.modem_storage_used = Gauge(
            "sms_gateway_modem_storage_used",
            "SMS in the SIM storage the modem reads (AT+CPMS).",
            ["modem"],
            registry=r,
        )
        self.modem_storage_capacity = Gauge(
            "sms_gateway_modem_storage_capacity",
            "Slots of the SIM storage the modem reads (AT+CPMS).",
            ["modem"],
            registry=r,
        )
        self.store_writable = Gauge(
            "sms_gateway_store_writable",
            "1 when the store took a write transaction (the health probe, at most 5 s old).",
            registry=r,
        )
        self.key_rejected = Gauge(
            "sms_gateway_upstream_key_rejected",
            "1 while the upstream rejects the API key (401/403, ERROR_WRONG_KEY...).",
            registry=r,
        )
        self.key_rejected.set(0)
        self.started = Gauge(
            "sms_gateway_start_time_seconds", "Unix time the daemon started.", registry=r
        )
        self.started.set_to_current_time()
        self.source_rejected = Counter(
            "sms_gateway_source_rejected",
            "Input a peer source sent that was refused (malformed, wrong token or password).",
            ["source"],
            registry=r,
        )
        self.source_up = Gauge(
            "sms_gateway_source_up",
            "1 while a connected peer (Yeastar TG logged in, GoIP keepalives) is there.",
            ["source"],
            registry=r,
        )
        # SMPP ([smpp_server], [[smpp_client]]): `source` is the account or the client
        # (smpp-server:ID, smpp-client:NAME), `bind` one connection: `ID#SLOT` of an account
        # (the lowest slot 1..max_binds free at bind time, reused after), a client's NAME.
        self.smpp_binds = Gauge(
            "sms_gateway_smpp_binds",
            "SMPP sessions bound now, by account or client.",
            ["source"],
            registry=r,
        )
        self.smpp_in_flight = Gauge(
            "sms_gateway_smpp_in_flight",
            "submit_sm/deliver_sm of one bind being committed, not yet answered (window use).",
            ["source", "bind"],
            registry=r,
        )
        self.smpp_messages = Counter(
            "sms_gateway_smpp_messages",
            "submit_sm/deliver_sm answered: stored, duplicate, refused, temporary_error.",
            ["source", "bind", "outcome"],
            registry=r,
        )
        self.smpp_errors = Counter(
            "sms_gateway_smpp_errors",
            "SMPP trouble: bind_refused (bind: the account's ID), connect, frame, undecodable, "
            "unknown_command, nack, silent, session_lost, internal.",
            ["source", "bind", "kind"],
            registry=r,
        )
        # The partner side ([partner] on): Onlinesim's calls, activations, the SIM inventory.
        self.partner_calls = Counter(
            "sms_gateway_partner_calls",
            "Onlinesim's partner calls, by method and answer.",
            ["method", "answer"],
            registry=r,
        )
        self.partner_call_seconds = Histogram(
            "sms_gateway_partner_call_seconds",
            "Time to answer one partner call.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.partner_open = Gauge(
            "sms_gateway_partner_activations_open", "Activations open right now.", registry=r
        )
        self.partner_finished = Counter(
            "sms_gateway_partner_activations_finished",
            "Activations closed, by FINISH status (1, 3, 4, 5) or stale.",
            ["status"],
            registry=r,
        )
        self.partner_last_call = Gauge(
            "sms_gateway_partner_last_call_timestamp_seconds",
            "Unix time of the last authenticated call from Onlinesim (0: none yet).",
            registry=r,
        )
        self.sims = Gauge(
            "sms_gateway_sims",
            "SIMs in the inventory, by country, operator and state.",
            ["country", "operator", "state"],
            registry=r,
        )

        # `.labels(...)` looks its child up under a lock on every call; ingest counts per
        # request, so the children are kept here.
        self._received: dict[str, Counter] = {}
        self._duplicates: dict[str, Counter] = {}

    def count_received(self, source: str, n: int = 1) -> None:
        _child(self.received, self._received, source).inc(n)

    def count_duplicates(self, source: str, n: int = 1) -> None:
        _child(self.duplicates, self._duplicates, source).inc(n)

    def partner_on(self) -> None:
        """Show the partner series from the start (zeros), not from their first event."""
        for status in ("1", "3", "4", "5", "stale"):
            self.partner_finished.labels(status)
        self.partner_open.set(0)
        self.partner_last_call.set(0)

    def count_partner_call(self, method: str, answer: str, seconds: float) -> None:
        self.partner_calls.labels(method, answer).inc()
        self.partner_call_seconds.labels(method).observe(seconds)

    def set_sims(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """The inventory's SIMs by (country, operator, state); series no longer seen go."""
        self.sims.clear()
        for (country, operator, state), n in counts.items():
            self.sims.labels(country, operator, state).set(n)

    def observe_modem(
        self,
        name: str,
        *,
        up: bool,
        registered: bool,
        signal_dbm: int | None,
        storage_used: int | None,
        storage_total: int | None,
    ) -> None:
        """One modem's gauges. No reading (AT+CSQ 99, a closed port) is NaN, never the last
        reading: an alert must see that there is no signal."""
        self.modem_up.labels(name).set(1 if up else 0)
        self.modem_registered.labels(name).set(1 if up and registered else 0)
        self.modem_signal.labels(name).set(math.nan if signal_dbm is None else signal_dbm)
        if storage_total:
            self.modem_storage_used.labels(name).set(storage_used or 0)
            self.modem_storage_capacity.labels(name).set(storage_total)

    def exposition(self) -> tuple[bytes, str]:
        """GET /metrics: the body in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_store(self, summary: StoreSummary, now: float) -> None:
        for state in State:
            self.messages.labels(state.value).set(summary.counts.get(state, 0))
        oldest = summary.oldest_queued_received_at
        self.oldest_queued.set(max(0.0, now - oldest) if oldest is not None else 0)


def _child(metric: Counter, cache: dict[str, Counter], label: str) -> Counter:
    child = cache.get(label)
    if child is None:
        child = cache[label] = metric.labels(label)
    return child
