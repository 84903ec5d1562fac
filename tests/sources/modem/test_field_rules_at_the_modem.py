"""The field rules at the modem: a value they refuse is a permanent refusal (kept held, never
read again on every scan), a number that is not a phone is no phone, a replaced network time is
logged. A real simulated modem on a pty, a real SQLite outbox."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ModemConfig
from gateway.fields import normalize_phone
from gateway.intake import Intake
from gateway.outbox.models import Hold, State
from gateway.play.modem import FakeModem
from gateway.sources.modem.channel import AtChannel
from gateway.sources.modem.inbound import Received, to_item
from gateway.sources.modem.phones import resolve_phone
from gateway.sources.modem.receiver import Receiver
from gateway.sources.modem.serial_link import open_serial_link
from gateway.sources.modem.session import Session
from tests.sources.modem.conftest import FakeFactory, LogWatch, StoreWatch, sms

SIM = "8970199123456789012"


async def no_late_phone() -> None:
    return None


async def test_a_field_the_rules_refuse_is_kept_held_with_its_pdu_and_not_read_again(
    fakes: FakeFactory, intake: Intake, store: StoreWatch, logs: LogWatch
) -> None:
    """Before: every scan logged modem.sms_failed with a traceback and left the SMS on the SIM
    (read again at the next scan, forever). Now: committed held (``refused``, raw PDU kept),
    one line naming the field, deleted from the SIM; the next SMS is unaffected."""
    fake: FakeModem = fakes("simcom")
    link = await open_serial_link(fake.port)
    channel = AtChannel(link, on_urc=lambda urc: None)
    channel.start()
    session = Session(channel, timeout=2.0)
    phone: list[str | None] = ["12"]  # a phone the rules refuse (2 digits), whatever said it
    receiver = Receiver(
        intake,
        "modem:m1",
        lambda: (SIM, phone[0]),
        clock=time.time,
        log=structlog.get_logger("test").bind(source="modem:m1"),
        on_received=lambda: None,
        on_late_phone=no_late_phone,
    )
    try:
        pdu = sms("code 5150", sender="Bank")
        fake.deliver(pdu)
        assert await receiver.scan(session)
        (held,) = await store.messages()
        assert held.state is State.HELD and held.hold_reason is Hold.REFUSED
        assert held.raw == pdu and held.source == "modem:m1"
        assert fake.used == 0  # freed: the record is in the store
        (refused,) = logs.named("modem.sms_refused")
        assert refused["field"] == "phone" and "digits" in refused["problem"]
        assert not logs.named("modem.sms_failed")
        assert await receiver.scan(session)  # nothing left to read again
        assert len(await store.messages()) == 1 and len(logs.named("modem.sms_refused")) == 1
        phone[0] = "79001234567"
        fake.deliver(sms("code 5151", sender="Bank"))
        assert await receiver.scan(session)
        good = (await store.messages())[-1]
        assert good.text == "code 5151" and good.state is State.QUEUED
    finally:
        await channel.close()


# -- the phone a modem's SIM has -----------------------------------------------------------

MODEM = ModemConfig(port="/dev/ttyUSB9", name="m9")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"\+?[0-9 ()\-.]{0,30}", fullmatch=True))
def test_a_cnum_answer_is_a_phone_only_by_the_field_rules(cnum: str) -> None:
    """What AT+CNUM says becomes the phone exactly when the field rules take it as one; else
    no phone is known and messages wait held for one (a phone the rules refuse would make
    every SMS of that modem a refused message)."""
    found = resolve_phone([], MODEM, iccid=None, imsi=None, cnum=cnum)
    assert found == normalize_phone(cnum)


def test_a_short_or_long_cnum_is_no_phone() -> None:
    for cnum in ("12", "+7", "1" * 21, "tel:+79001234567", "79001234567;ext"):
        assert resolve_phone([], MODEM, iccid=None, imsi=None, cnum=cnum) is None
    assert resolve_phone([], MODEM, iccid=None, imsi=None, cnum="+7 (900) 1") == "79001"


# -- the network's time ----------------------------------------------------------------------


def test_a_replaced_network_time_is_logged_once_with_the_source() -> None:
    read_at = float(int(time.time()))
    where = Received(source="modem:m1", sim=SIM, phone="79001234567", slot="3", read_at=read_at)
    stamp = datetime(1999, 12, 31, 23, 0, tzinfo=UTC)
    recent = datetime.fromtimestamp(read_at - 60, UTC)
    with structlog.testing.capture_logs() as logs:
        item = to_item(sms("old clock", sender="Bank", timestamp=stamp), where)
        fine = to_item(sms("good clock", sender="Bank", timestamp=recent), where)
    assert item.received_at == read_at and fine.received_at != read_at
    (line,) = [e for e in logs if e["event"] == "device_time.replaced"]
    assert line["source"] == "modem:m1" and line["received_at"] == read_at
    assert "1999-12-31" in line["device_time"]
