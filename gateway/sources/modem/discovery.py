"""Own-number discovery: asking the operator for a SIM's number when the SIM does not say it.

``[[partner.number_query]]`` names, per home network (MCC-MNC from the IMSI), a USSD code and
how the answer comes: as the USSD reply (``answer = "ussd"``) or as an SMS from the operator
(``answer = "sms"``, from ``sender`` when set, within ``timeout``). The answer's text must
match ``pattern``; its first group is the number (``prefix`` goes before it).

An operator's answer SMS is committed *held* (``Hold.OPERATOR_ANSWER``, with the number it
gave): it is kept for the record and never pushed, never released by a phone becoming known
(``release_held`` takes only ``no_phone``), and ``messages list --state held`` shows it. Only a
single-part SMS that arrives while the query waits is matched; anything else takes the usual
path.

:class:`PendingAnswer` is the pure-ish state of one query in flight (no I/O): the modem device
and ``sms-gateway sims discover`` feed it ``+CUSD`` replies and incoming messages.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gateway.config import NumberQueryConfig
from gateway.inventory.networks import split_imsi
from gateway.outbox.models import Hold, Incoming
from gateway.sources.modem.ussd import UssdReply, number_in

__all__ = ["Discovery", "PendingAnswer", "query_for"]


@dataclass(frozen=True)
class Discovery:
    """How one discovery ended: the number and its origin, or why there is none."""

    phone: str | None
    origin: str | None
    detail: str

    def as_dict(self) -> dict[str, str | None]:
        return {"phone": self.phone, "origin": self.origin, "detail": self.detail}


def query_for(queries: Sequence[NumberQueryConfig], imsi: str | None) -> NumberQueryConfig | None:
    """The configured query for the SIM's home network, ``None`` if there is none."""
    split = split_imsi(imsi or "")
    if split is None:
        return None
    network = f"{split[0]}-{split[1]}"
    return next((q for q in queries if q.network == network), None)


class PendingAnswer:
    """One own-number query waiting for its answer; ``result`` resolves once."""

    def __init__(self, query: NumberQueryConfig, *, packed: bool) -> None:
        self.query = query
        self.packed = packed
        self.result: asyncio.Future[Discovery] = asyncio.get_running_loop().create_future()
        self._pattern = re.compile(query.pattern)
        self._sender = query.sender.strip().lower()

    @property
    def done(self) -> bool:
        return self.result.done()

    def finish(self, outcome: Discovery) -> None:
        if not self.result.done():
            self.result.set_result(outcome)

    def on_cusd(self, reply: UssdReply) -> str:
        """A ``+CUSD`` reply: ``"done"`` (resolved), ``"retry_packed"`` (the modem refused the
        text form and ``request = "auto"``), or ``"wait"`` (an SMS answer is still to come)."""
        if self.done:
            return "done"
        if reply.status == 4 and not self.packed and self.query.request == "auto":
            return "retry_packed"
        if not reply.ok:
            self.finish(Discovery(None, None, f"the network answered: {reply.meaning}"))
            return "done"
        if self.query.answer == "sms":
            return "wait"  # "your request is accepted": the number comes by SMS
        text = reply.text or ""
        number = number_in(text, self._pattern, self.query.prefix)
        if number is None:
            self.finish(Discovery(None, None, f"the USSD answer has no number: {text[:160]!r}"))
        else:
            self.finish(Discovery(number, "ussd", "the operator's USSD answer"))
        return "done"

    def claim(self, item: Incoming) -> Incoming | None:
        """The held form of ``item`` if it is the awaited operator SMS (and resolve), else
        ``None``."""
        if self.done or self.query.answer != "sms":
            return None
        if self._sender and item.phone_from.strip().lower() != self._sender:
            return None
        number = number_in(item.text, self._pattern, self.query.prefix)
        if number is None:
            return None
        self.finish(Discovery(number, "sms", "the operator's SMS answer"))
        return replace(item, hold=Hold.OPERATOR_ANSWER, phone=number)

    def expire(self) -> None:
        what = "SMS" if self.query.answer == "sms" else "USSD answer"
        self.finish(Discovery(None, None, f"no {what} within {self.query.timeout:g}s"))
