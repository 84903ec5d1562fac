"""What the status page shows, as one JSON-ready dict built from the parts that already know it
(modem statuses, the boxes' checks, the health report, the activity ring, a few store reads);
every string that came from outside (SMS, modems, boxes) is made safe to show first."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.activity import Activity
from gateway.health import Check, Health, Level
from gateway.outbox import Message, Outbox, State
from gateway.outbox.partner import SimRecord
from gateway.sources.modem.device import ModemStatus

__all__ = [
    "STATES",
    "PartnerView",
    "SnapshotSources",
    "bars",
    "build",
    "port_details",
    "shown",
]

# State key -> the word shown; in order of trouble (a sort by state puts the worst first).
STATES = {
    "unplugged": "unplugged",
    "sim_error": "SIM error",
    "not_registered": "not registered",
    "no_signal": "no signal",
    "resetting": "resetting",
    "ready": "ready",
}
RECENT = 10  # drops and held messages listed
PORT_MESSAGES = 5  # a port's last messages in its details
TEXT_LIMIT = 500  # characters of a message text shown (with http.status_show_text)
_SIM_STATES = {  # the inventory's SIM states (gateway.partner.desk.SimState values)
    "ready": "ready",
    "no_signal": "no_signal",
    "not_registered": "not_registered",
    "sim_error": "sim_error",
    "absent": "unplugged",
}


def shown(value: object, limit: int = 300) -> str | None:
    """A string from outside made safe to show as text: control and format characters (bidi
    overrides, zero-width joiners, NUL, newlines) written out as <U+XXXX>, cut to `limit`.
    HTML escaping is still the renderer's job (the JS sets textContent)."""
    if value is None:
        return None
    text = str(value)[:limit]
    if text.isprintable():
        return text
    return "".join(
        ch if ch == " " or unicodedata.category(ch)[0] not in "CZ" else f"<U+{ord(ch):04X}>"
        for ch in text
    )


def bars(dbm: int | None) -> int:
    """Signal bars (0-4) for a dBm value, the thresholds phones use for GSM/UMTS."""
    if dbm is None:
        return 0
    for n, floor in ((4, -73), (3, -83), (2, -93), (1, -109)):
        if dbm >= floor:
            return n
    return 0


def modem_state(s: ModemStatus) -> str:
    if not s.port_open:
        return "unplugged" if s.last_error else "resetting"  # not opened yet: starting
    if s.sim_state not in (None, "READY"):
        return "sim_error"
    if not s.sim_ready:
        return "resetting"
    if not s.registered:
        return "not_registered"
    if s.signal_dbm is None:
        return "no_signal"
    return "ready"


def _age(now: float, when: float | None) -> float | None:
    return round(max(0.0, now - when), 1) if when is not None else None


def _tail(iccid: str | None) -> str | None:
    return shown(iccid[-6:]) if iccid else None


def _row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "",
        "kind": "modem",
        "state": "ready",
        "label": "",
        "signal_dbm": None,
        "bars": 0,
        "operator": None,
        "phone": None,
        "iccid_tail": None,
        "storage_used": None,
        "storage_total": None,
        "last_sms_age": None,
        "last_error": None,
    }
    row.update(fields)
    row["label"] = STATES[row["state"]]
    return row


def modem_row(s: ModemStatus, now: float) -> dict[str, Any]:
    state = modem_state(s)
    signal = s.signal_dbm if s.port_open else None  # the last reading is not today's signal
    return _row(
        id=shown(s.name),
        kind="modem",
        state=state,
        signal_dbm=signal,
        bars=bars(signal),
        operator=shown(s.operator),
        phone=shown(s.phone),
        iccid_tail=_tail(s.iccid),
        storage_used=s.storage_used,
        storage_total=s.storage_total,
        last_sms_age=_age(now, s.last_sms_at),
        last_error=shown(s.last_error),
    )


def box_row(name: str, check: Check, now: float) -> dict[str, Any]:
    d = check.details
    connected_kind = "connected" in d or "last_keepalive_age" in d  # Yeastar, GoIP
    down = check.level is not Level.OK and connected_kind
    last = d.get("last_message_age")
    return _row(
        id=shown(name),
        kind="box",
        state="unplugged" if down else "ready",
        last_sms_age=last if isinstance(last, int | float) else None,
        last_error=shown(d.get("last_error")),
    )


def sim_row(r: SimRecord, now: float) -> dict[str, Any]:
    return _row(
        id=shown(f"{r.source}:{r.location}"),
        kind="sim",
        state=_SIM_STATES.get(r.state, "sim_error"),
        signal_dbm=r.signal,
        bars=bars(r.signal),
        operator=shown(r.operator),
        phone=shown(r.phone),
        iccid_tail=_tail(r.iccid),
        last_sms_age=_age(now, r.last_sms),
    )


class _Activation(Protocol):
    @property
    def activation_id(self) -> int: ...
    @property
    def phone(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def opened_at(self) -> float: ...
    @property
    def ends_at(self) -> float: ...


class _Sim(Protocol):
    @property
    def country(self) -> str: ...
    @property
    def operator(self) -> str: ...
    @property
    def live(self) -> bool: ...
    @property
    def state(self) -> Any: ...


class PartnerView(Protocol):
    """What the page reads of the partner side (the desk has both)."""

    def open_activations(self) -> Sequence[_Activation]: ...
    def sims(self) -> Sequence[_Sim]: ...


@dataclass(frozen=True)
class SnapshotSources:
    """Where each part of the page comes from; the daemon wires them."""

    health: Health
    outbox: Outbox
    activity: Activity
    modems: Callable[[], Iterable[ModemStatus]] = lambda: ()
    boxes: Callable[[], dict[str, Check]] = dict
    sims: Callable[[], Iterable[SimRecord]] | None = None  # the live inventory, when there
    partner: Callable[[], PartnerView | None] = lambda: None
    show_text: bool = False
    refresh: int = 5  # seconds between the page's polls
    clock: Callable[[], float] = time.time


def _message(m: Message, now: float, show_text: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sms_id": m.sms_id,
        "sender": shown(m.phone_from, 64),
        "phone": shown(m.phone, 32),
        "state": m.state.value,
        "age": _age(now, m.received_at),
        "length": len(m.text),
        "reason": m.final_code or (m.hold_reason.value if m.hold_reason else None),
    }
    if show_text:
        out["text"] = shown(m.text, TEXT_LIMIT)
    return out


def _ports(src: SnapshotSources, now: float) -> list[dict[str, Any]]:
    modems = list(src.modems())
    rows = [modem_row(s, now) for s in modems]
    rows += [box_row(name, check, now) for name, check in src.boxes().items()]
    if src.sims is not None:
        on_modems = {s.iccid for s in modems if s.iccid}
        rows += [sim_row(r, now) for r in src.sims() if r.iccid not in on_modems]
    return rows


def _partner(view: PartnerView | None, now: float) -> dict[str, Any] | None:
    if view is None:
        return None
    counts: dict[tuple[str, str], list[int]] = {}
    for sim in view.sims():
        c = counts.setdefault((sim.country, sim.operator), [0, 0])
        c[1] += 1
        state = getattr(sim.state, "value", sim.state)
        if sim.live and state == "ready":
            c[0] += 1
    return {
        "open": [
            {
                "activation_id": a.activation_id,
                "phone": shown(a.phone, 32),
                "service": shown(a.service, 64),
                "age": _age(now, a.opened_at),
                "ends_in": round(a.ends_at - now, 1),
            }
            for a in view.open_activations()
        ],
        "counts": [
            {"country": shown(k[0], 64), "operator": shown(k[1], 64), "ready": v[0], "total": v[1]}
            for k, v in sorted(counts.items())
        ],
    }


async def build(src: SnapshotSources) -> dict[str, Any]:
    """The page's data (GET /status.json without ?port)."""
    now = src.clock()
    level, report = await src.health.report(full=True)
    checks = report["checks"]
    up = checks["upstream"]
    minutes = src.activity.minutes()
    drops = await src.outbox.recent_drops(RECENT)
    held = await src.outbox.list_messages(state=State.HELD, limit=RECENT)
    ports = _ports(src, now)
    by_state = dict.fromkeys(STATES, 0)
    for row in ports:
        by_state[row["state"]] += 1
    return {
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "refresh": src.refresh,
        "status": level.label,
        "states": STATES,
        "by_state": by_state,
        "ports": ports,
        "delivery": {
            "queued": report["queue"]["queued"],
            "oldest_queued_age": report["queue"]["oldest_queued_age"],
            "store_writable": checks["store"].get("writable"),
            "worker_alive": checks["worker"].get("alive"),
            "circuit": up["circuit"],
            "last_success_age": up["last_success_age"],
            "consecutive_failures": up["consecutive_failures"],
            "last_failure": shown(up["last_failure"]),
            "key_rejected": up["key_rejected"],
            "paused_for": up["paused_for"],
            "in_flight": up["in_flight"],
            "last_hour": Activity.totals(minutes),
            "minutes": [[m.start, m.delivered, m.retried, m.dropped, m.held] for m in minutes],
        },
        "drops": [
            {
                "sms_id": d.sms_id,
                "sender": shown(d.phone_from, 64),
                "phone": shown(d.phone, 32),
                "state": d.state.value,
                "reason": shown(d.code) or d.state.value,
                "age": _age(now, d.finished_at),
            }
            for d in drops
        ],
        "held": [_message(m, now, src.show_text) for m in held],
        "partner": _partner(src.partner(), now),
    }


async def port_details(src: SnapshotSources, port_id: str) -> dict[str, Any] | None:
    """One port's row with more about it and its phone's last messages; None: no such port."""
    now = src.clock()
    for s in src.modems():
        if shown(s.name) == port_id:
            row = modem_row(s, now)
            row.update(
                iccid=shown(s.iccid),
                maker=shown(s.maker),
                model=shown(s.model),
                sim_state=shown(s.sim_state),
                registration=s.registration,
                held_for_no_phone=s.held_for_no_phone,
            )
            phone = s.phone
            break
    else:
        row_ = next((r for r in _ports(src, now) if r["id"] == port_id), None)
        if row_ is None:
            return None
        row, phone = row_, row_["phone"]
    messages = await src.outbox.list_messages(phone=phone, limit=PORT_MESSAGES) if phone else []
    row["messages"] = [_message(m, now, src.show_text) for m in messages]
    return row
