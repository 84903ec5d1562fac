"""The desk's answers from the live inventory, against an in-memory store that can be slow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inventory.sims import SimState
from gateway.outbox.partner import Activation, ActivationState, FinishStatus, LedgerEntry
from gateway.partner.desk import Desk, SimView
from gateway.partner.requests import FinishActivation, GetNumber, GetServices


@dataclass
class MemoryStore:
    """Commits into dicts; `delay` makes every commit await, as a real fsync does."""

    delay: float = 0.0
    fail: bool = False
    activations: dict[int, Activation] = field(default_factory=dict)
    ledger: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    last_id: int = 0

    async def open_activation(
        self, sim_key: str, phone: str, service: str, rent: bool, opened_at: float, ends_at: float
    ) -> int:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError("disk full")
        self.last_id += 1
        self.activations[self.last_id] = Activation(
            self.last_id, sim_key, phone, service, rent, opened_at, ends_at
        )
        return self.last_id

    async def finish_activation(self, activation: Activation, entry: LedgerEntry | None) -> None:
        await asyncio.sleep(self.delay)
        self.activations[activation.activation_id] = activation
        if entry is not None:
            self.ledger[(activation.sim_key, activation.service)] = entry


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sims(
    n: int, *, country: str = "russia", operator: str = "mts", prefix: str = "7900"
) -> list[SimView]:
    return [
        SimView(f"{operator}-{i}", f"{prefix}{i:07d}", country, operator, SimState.READY, live=True)
        for i in range(n)
    ]


def desk(store: MemoryStore | None = None, **kw: object) -> tuple[Desk, MemoryStore, Clock]:
    store = store or MemoryStore()
    clock = Clock()
    d = Desk(store=store, services=("vk", "wa"), clock=clock, **kw)  # type: ignore[arg-type]
    return d, store, clock


def order(
    service: str = "vk", operator: str = "any", exceptions: tuple[str, ...] = ()
) -> GetNumber:
    return GetNumber(False, "russia", operator, service, exceptions, None, None)


def count(d: Desk, service: str, operator: str = "any") -> int:
    answer = d.get_services(GetServices(rent=False))
    for c in answer["countryList"]:
        if c["country"] == "russia":
            return int(c["operatorMap"].get(operator, {}).get(service, 0))
    return 0


async def test_500_concurrent_orders_for_50_sims_get_50_different_numbers() -> None:
    d, _, _ = desk(MemoryStore(delay=0.001))
    d.update_sims(sims(50))
    answers = await asyncio.gather(*(d.get_number(order()) for _ in range(500)))
    numbers = [a["number"] for a in answers if a["status"] == "SUCCESS"]
    assert len(numbers) == 50 and len(set(numbers)) == 50
    assert sum(a["status"] == "NO_NUMBERS" for a in answers) == 450
    assert count(d, "vk") == 0


async def test_counts_include_any_and_only_live_ready_free_sims() -> None:
    d, _, _ = desk()
    d.update_sims(sims(3, operator="mts") + sims(2, operator="beeline", prefix="7901"))
    d.update_sims([SimView("mts-0", "79000000000", "russia", "mts", SimState.NO_SIGNAL, True)])
    d.update_sims([SimView("mts-1", "79000000001", "russia", "mts", SimState.READY, live=False)])
    assert count(d, "vk", "mts") == 1 and count(d, "vk", "beeline") == 2
    assert count(d, "vk") == 3 and count(d, "wa") == 3


async def test_sold_never_again_cancelled_three_more_times() -> None:
    d, store, _ = desk()
    d.update_sims(sims(1))
    first = await d.get_number(order())
    assert count(d, "vk") == 0
    await d.finish(FinishActivation(False, first["activationId"], FinishStatus.SOLD, None))
    assert count(d, "vk") == 0 and count(d, "wa") == 1
    assert (await d.get_number(order()))["status"] == "NO_NUMBERS"
    offers = 0
    while (answer := await d.get_number(order("wa")))["status"] == "SUCCESS":
        offers += 1
        await d.finish(
            FinishActivation(False, answer["activationId"], FinishStatus.CANCELLED, None)
        )
    assert offers == 4
    assert store.ledger[("mts-0", "wa")].cancels == 4


async def test_a_repeated_finish_answers_success_and_changes_nothing() -> None:
    d, store, _ = desk()
    d.update_sims(sims(1))
    a = await d.get_number(order())
    finish = FinishActivation(False, a["activationId"], FinishStatus.CANCELLED, None)
    assert await d.finish(finish) == {"status": "SUCCESS"}
    before = dict(store.ledger)
    assert await d.finish(finish) == {"status": "SUCCESS"}
    assert await d.finish(FinishActivation(False, a["activationId"], FinishStatus.SOLD, None)) == {
        "status": "SUCCESS"
    }
    assert store.ledger == before


async def test_unknown_activation_is_an_error() -> None:
    d, _, _ = desk()
    answer = await d.finish(FinishActivation(False, 99, FinishStatus.SOLD, None))
    assert answer == {"status": "ERROR", "error": "NO_ACTIVATION"}


async def test_exception_prefixes_skip_numbers_not_the_order() -> None:
    d, _, _ = desk()
    d.update_sims(sims(1, prefix="7900") + sims(1, operator="tele2", prefix="7950"))
    a = await d.get_number(order(exceptions=("7900",)))
    assert str(a["number"]).startswith("7950")


async def test_a_failed_commit_frees_the_sim_and_raises() -> None:
    d, store, _ = desk(MemoryStore(fail=True))
    d.update_sims(sims(1))
    with pytest.raises(OSError, match="disk full"):
        await d.get_number(order())
    store.fail = False
    assert count(d, "vk") == 1
    assert (await d.get_number(order()))["status"] == "SUCCESS"


async def test_no_finish_long_after_the_end_frees_the_sim_as_stale() -> None:
    d, _, clock = desk(stale_after=60.0)
    d.update_sims(sims(1))
    a = await d.get_number(order())
    clock.now += 15 * 60 + 59
    assert await d.sweep_stale() == [] and count(d, "vk") == 0
    clock.now += 2
    (stale,) = await d.sweep_stale()
    assert stale.state is ActivationState.STALE and count(d, "vk") == 1
    # A late FINISH still counts for the ledger.
    await d.finish(FinishActivation(False, a["activationId"], FinishStatus.SOLD, None))
    assert count(d, "vk") == 0


async def test_state_reloaded_from_the_store_keeps_open_activations_and_ledger() -> None:
    d, store, _ = desk()
    d.update_sims(sims(2))
    a = await d.get_number(order())
    await d.finish(FinishActivation(False, a["activationId"], FinishStatus.SOLD, None))
    b = await d.get_number(order())
    again, _, _ = desk(store)
    again.load(store.activations.values(), store.ledger)
    again.update_sims(sims(2))
    assert count(again, "vk") == 0  # one sold, one open
    assert again.open_activation_for(str(b["number"])) is not None


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["order", "finish3", "finish4", "finish1", "stale"]), st.integers(0, 5)
        ),
        max_size=40,
    )
)
def test_counts_always_equal_the_sims_an_order_could_get(steps: list[tuple[str, int]]) -> None:
    async def run() -> None:
        d, _, clock = desk(stale_after=0.0)
        d.update_sims(sims(4) + sims(2, operator="beeline", prefix="7901"))
        opened: list[int] = []
        for step, n in steps:
            if step == "order":
                a = await d.get_number(order(("vk", "wa")[n % 2]))
                if a["status"] == "SUCCESS":
                    opened.append(a["activationId"])
            elif step == "stale":
                clock.now += 16 * 60
                await d.sweep_stale()
            elif opened:
                status = {"finish3": FinishStatus.SOLD, "finish4": FinishStatus.CANCELLED}.get(
                    step, FinishStatus.NOT_FOR_SERVICE
                )
                await d.finish(FinishActivation(False, opened.pop(n % len(opened)), status, None))
            for service in ("vk", "wa"):
                expected = 0
                probe, _, _ = desk()
                # What could be ordered now: count by trying, on a copy of the state.
                probe.load([*d.open_activations()], d.ledger())
                probe.update_sims(d.sims())
                while (await probe.get_number(order(service)))["status"] == "SUCCESS":
                    expected += 1
                assert count(d, service) == expected

    asyncio.run(run())


def test_the_desk_uses_the_inventorys_one_sim_state() -> None:
    from gateway.inventory import sims as inventory
    from gateway.partner import desk as desk_module

    assert desk_module.SimState is inventory.SimState
    assert SimView("k", "7900", "russia", "mts", inventory.SimState("ready"), True).state is (
        SimState.READY
    )
