"""Own-number discovery through simulated modems on real ptys: the phonebook, USSD answers as
text, UCS-2 and packed GSM-7, the packed request form, an operator's answer SMS (held, never
pushed) and a discovered number kept across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.config import ModemConfig, NumberQueryConfig
from gateway.intake import Intake
from gateway.inventory.sims import Inventory
from gateway.metrics import Metrics
from gateway.outbox import Outbox, State
from gateway.outbox.models import Hold
from gateway.outbox.partner import PartnerBook
from gateway.play.modem import FakeModem, UssdAnswer
from gateway.sources.modem.device import Modem
from gateway.sources.modem.ussd import pack_request
from tests.sources.modem.conftest import FAST, FakeFactory, LogWatch, StoreWatch, ready, sms

NUMBER = "79261234567"
MEGAFON = "250021234567890"
MTS = "250011234567890"


async def found(logs: LogWatch, modem: Modem, n: int = 1) -> None:
    """Bounded wait for the ``n``-th number found on ``modem``."""
    async with asyncio.timeout(10):
        while len(logs.named("modem.number_found", modem=modem.name)) < n:
            logs.changed.clear()
            await logs.changed.wait()


@pytest.fixture
async def start(intake: Intake, metrics: Metrics) -> AsyncIterator[Callable[..., Modem]]:
    made: list[Modem] = []

    def make(
        fake: FakeModem,
        queries: tuple[NumberQueryConfig, ...] = (),
        inventory: Inventory | None = None,
        **cfg: Any,
    ) -> Modem:
        modem = Modem(
            ModemConfig(port=fake.port, name=f"d{len(made)}", **cfg),
            FAST,
            [],
            intake=intake,
            metrics=metrics,
            inventory=inventory,
            queries=queries,
        )
        made.append(modem)
        modem.start()
        return modem

    yield make
    await asyncio.gather(*(m.stop() for m in made))


async def test_the_own_number_phonebook_gives_the_number(
    fakes: FakeFactory, start: Callable[..., Modem]
) -> None:
    fake = fakes(own_numbers=["+" + NUMBER])
    modem = start(fake)
    await ready(fake)
    assert (modem.phone, modem.phone_origin) == (NUMBER, "phonebook")
    assert 'AT+CPBS="ON"' in fake.commands


@pytest.mark.parametrize("form", ["text", "ucs2", "packed"])
async def test_a_ussd_answer_gives_the_number_and_releases_what_was_held(
    fakes: FakeFactory, start: Callable[..., Modem], store: StoreWatch, form: str, logs: LogWatch
) -> None:
    fake = fakes(imsi=MEGAFON, ussd={"*205#": UssdAnswer(f"Vash nomer {NUMBER}", form)})
    fake.store_silently(sms("arrived before the number was known"))
    query = NumberQueryConfig(network="250-02", code="*205#", timeout=5)
    modem = start(fake, (query,))
    await found(logs, modem)
    assert (modem.phone, modem.phone_origin) == (NUMBER, "ussd")
    assert fake.ussd_asked == ["*205#"]
    (message,) = await store.count(1)

    async def released() -> bool:
        (m,) = await store.messages()
        return m.state is State.QUEUED and m.phone == NUMBER

    await store.until(released)
    assert message.sms_id == (await store.messages())[0].sms_id


async def test_a_modem_that_wants_the_packed_form_gets_it(
    fakes: FakeFactory, start: Callable[..., Modem], logs: LogWatch
) -> None:
    fake = fakes("huawei-e1550", imsi=MEGAFON, ussd={"*205#": UssdAnswer(f"N {NUMBER}")})
    modem = start(fake, (NumberQueryConfig(network="250-02", code="*205#", timeout=5),))
    await found(logs, modem)
    assert 'AT+CUSD=1,"*205#",15' in fake.commands  # refused as text, then:
    assert f'AT+CUSD=1,"{pack_request("*205#")}",15' in fake.commands
    assert fake.ussd_asked == ["*205#"]


async def test_the_operator_sms_answer_is_used_and_held_never_queued(
    fakes: FakeFactory, start: Callable[..., Modem], store: StoreWatch, logs: LogWatch
) -> None:
    answer = UssdAnswer("Zapros prinyat", sms_from="MTS", sms_text=f"Vash nomer: +{NUMBER}")
    fake = fakes(imsi=MTS, ussd={"*111*0887#": answer})
    query = NumberQueryConfig(
        network="250-01", code="*111*0887#", answer="sms", sender="MTS", timeout=5
    )
    modem = start(fake, (query,))
    await found(logs, modem)
    assert (modem.phone, modem.phone_origin) == (NUMBER, "sms")
    (held,) = await store.count(1)
    assert held.state is State.HELD and held.hold_reason is Hold.OPERATOR_ANSWER
    assert held.phone == NUMBER and held.phone_from == "MTS"
    await fake.wait_until(lambda: fake.used == 0)  # taken off the SIM like any other

    fake.deliver(sms("Your code 1234", sender="MTS"))  # after the query: an ordinary SMS
    await store.count(2)
    ordinary = [m for m in await store.messages() if m.text == "Your code 1234"]
    assert ordinary[0].state is State.QUEUED and ordinary[0].phone == NUMBER


async def test_discover_on_demand_reports_what_happened(
    fakes: FakeFactory, start: Callable[..., Modem]
) -> None:
    fake = fakes(imsi=MEGAFON, ussd={"*205#": UssdAnswer("Sorry, try later")})
    modem = start(fake, (NumberQueryConfig(network="250-02", code="*205#", timeout=5),))
    await ready(fake)
    outcome = await modem.discover()
    assert outcome.phone is None and "no number" in outcome.detail
    fake.ussd["*205#"] = UssdAnswer(f"Nomer {NUMBER}")
    outcome = await modem.discover()
    assert (outcome.phone, outcome.origin) == (NUMBER, "ussd")
    assert modem.phone == NUMBER

    other = fakes(imsi="262011234567890")
    plain = start(other)
    await ready(other)
    outcome = await plain.discover()
    assert outcome.phone is None and "number_query" in outcome.detail


async def test_a_discovered_number_survives_a_restart_and_the_config_still_wins(
    fakes: FakeFactory, start: Callable[..., Modem], outbox: Outbox, logs: LogWatch
) -> None:
    fake = fakes(imsi=MEGAFON, ussd={"*205#": UssdAnswer(f"Nomer {NUMBER}")})
    query = NumberQueryConfig(network="250-02", code="*205#", timeout=5)
    first = Inventory(PartnerBook(outbox), save_delay=0.01)
    await first.start()
    modem = start(fake, (query,), first)
    await found(logs, modem)
    await modem.stop()
    await first.stop()

    fake.ussd.clear()
    fake.ussd_asked.clear()
    again = Inventory(PartnerBook(outbox))
    await again.start()
    try:
        restarted = start(fake, (query,), again)
        await logs.wait("modem.identified", modem=restarted.name)
        assert (restarted.phone, restarted.phone_origin) == (NUMBER, "ussd")
        assert fake.ussd_asked == []  # not asked again
        await restarted.stop()
        configured = start(fake, (query,), again, phone="79990000000")
        await logs.wait("modem.identified", modem=configured.name)
        assert (configured.phone, configured.phone_origin) == ("79990000000", "config")
    finally:
        await again.stop()
