"""Issue 12 end to end: a real daemon subprocess, a bank of 51 simulated modems on real ptys (six
networks of `gateway.play.modem.NETWORKS` and one lone Kazakh SIM), the partner listener on
loopback, and the stand-in playing Onlinesim (GET_SERVICES, GET_NUMBER, PUSH_SMS only for the
numbers it ordered, FINISH 3 after an SMS, 4 after its activation time).

One daemon, one bank and one stand-in serve the whole module (starting 51 modems takes a few
seconds). The tests do not depend on one another's order: each orders on a service of its own
(vk, wa/tg, ok, fb), every activation a test opens is finished before it ends (`_no_open_left`
checks /health), counts are compared with what the same test saw before, and the one test that
restarts the daemon waits until every SIM is live again. What the daemon does is watched through
its log, /health, the stand-in's `wait_for` and the operator's CLI in subprocesses, all bounded
waits.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.play.modem import NETWORKS, FakeModem, sim_identity
from gateway.play.pdu import encode_deliver
from gateway.play.standin import Order, OrderState, PartnerError, PartnerPlay, StandIn
from tests.fakes.daemon import DaemonProcess, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "e2e-modems-partner-key-0123456789"
N = 50  # SIMs of the six networks, taking turns
SERVICES = ("vk", "wa", "tg", "ok", "fb")
WAIT = 20.0  # the longest any one thing may take on a loaded 2-core machine
UNPLUG_BOUND = 5.0  # an unplugged modem's SIM leaves GET_SERVICES within this
# Country codes of the networks' numbers, and Onlinesim's names for them ([partner.names]).
CALLING = {"250": "7", "262": "49", "310": "1", "234": "44", "401": "7"}
NAMES = {
    "250": "russia",
    "250-01": "mts",
    "250-02": "megafon",
    "250-99": "beeline",
    "262": "germany",
    "310": "usa",
    "234": "england",
    "401": "kazakhstan",
    "401-01": "beeline_kz",
}
LONE = {  # the only SIM of its country: every order for kazakhstan gets it
    "imei": "866123099999999",
    "iccid": "8970199123499999999",
    "imsi": "401011234500001",
    "operator": "Beeline KZ",
}
LONE_PHONE = "77011234567"


def phone_of(i: int) -> str:
    mcc = NETWORKS[i % len(NETWORKS)][0][:3]
    return f"{CALLING[mcc]}9{i:09d}"


def country_of(fake: FakeModem) -> str:
    return NAMES[fake.imsi[:3]]


@dataclass
class World:
    daemon: DaemonProcess
    standin: StandIn  # Onlinesim: the upstream PUSH_SMS and the partner calls
    partner_url: str
    fakes: list[FakeModem]  # every modem, the lone one last
    by_phone: dict[str, FakeModem] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)  # ICCID -> phone

    @property
    def lone(self) -> FakeModem:
        return self.fakes[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(fakes: list[FakeModem], phones: list[str], partner_port: int) -> str:
    """Every modem on its pty; half the numbers from [[sim]], the other half told by the SIM
    (AT+CNUM); the partner listener on a fixed port (the stand-in keeps its URL across a
    restart)."""
    lines = ["[modems]", "scan_interval = 5", "command_timeout = 2", "reopen_max = 0.5", ""]
    for i, fake in enumerate(fakes):
        lines += ["[[modem]]", f'name = "m{i}"', f"port = {json.dumps(fake.port)}", ""]
        if fake.number is None:
            lines += ["[[sim]]", f'iccid = "{fake.iccid}"', f'phone = "{phones[i]}"', ""]
    lines += [
        "[partner]",
        f'listen = "127.0.0.1:{partner_port}"',
        f'key = "{KEY}"',
        f"services = {json.dumps(list(SERVICES))}",
        "rate = 100000.0",
        "",
        "[partner.names]",
        *(f'"{k}" = "{v}"' for k, v in NAMES.items()),
    ]
    return "\n".join(lines) + "\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("e2e_modems")
    fakes: list[FakeModem] = []
    phones: list[str] = []
    standin = StandIn()
    daemon: DaemonProcess | None = None
    try:
        for i in range(N + 1):
            ident, phone = (LONE, LONE_PHONE) if i == N else (sim_identity(i), phone_of(i))
            fake = FakeModem(
                imei=ident["imei"], iccid=ident["iccid"], imsi=ident["imsi"],
                operator=ident["operator"], number=f"+{phone}" if i % 2 else None, link_dir=tmp,
            )  # fmt: skip
            fake.start()
            fakes.append(fake)
            phones.append(phone)
        await standin.start()
        port = free_port()
        daemon = DaemonProcess(
            write_config(tmp, standin.url, extra=daemon_config(fakes, phones, port))
        )
        await daemon.start(timeout=WAIT)
        url = f"http://127.0.0.1:{port}"
        standin.play(PartnerPlay(url, KEY, services_interval=0, activation_time=600.0,
                                 retry_interval=0.5))  # fmt: skip
        w = World(
            daemon, standin, url, fakes, dict(zip(phones, fakes, strict=True)),
            {f.iccid: p for f, p in zip(fakes, phones, strict=True)},
        )  # fmt: skip
        await all_live(w)
        await all_saved(w)
        yield w
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            assert await daemon.stop() == 0
        await standin.stop()
        for fake in fakes:
            fake.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def w(world: World) -> AsyncIterator[World]:
    """The shared world; each test must leave no activation open (the next one counts on it)."""
    await _no_open_left(world)
    yield world
    await _no_open_left(world)
    assert world.standin.reused_numbers == 0
    assert world.daemon.proc is not None and world.daemon.proc.poll() is None


async def _no_open_left(w: World) -> None:
    _, health = await w.daemon.health()
    assert health["checks"]["partner"]["open_activations"] == 0


# --- bounded waits and the operator's view ----------------------------------------------------


async def polled(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Wait, bounded, for what the daemon process does: no event crosses the boundary."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - no event crosses the process boundary
            await asyncio.sleep(0.05)


async def all_live(w: World) -> None:
    """/health: every SIM live, ready and usable, or busy in an open activation."""

    async def settled() -> bool:
        status, health = await w.daemon.health()
        partner = health["checks"]["partner"] if status in (200, 503) else {}
        usable, busy = partner.get("sims_usable"), partner.get("open_activations")
        return usable is not None and usable + busy == N + 1

    await polled(settled, timeout=30.0)


async def all_saved(w: World) -> None:
    """`sms-gateway sims` lists every SIM: the inventory writes its records at most once per
    save_delay (1 s), so a test that reads the store right after the SIMs came up could
    otherwise miss one."""

    async def listed() -> bool:
        return {s["sim"] for s in await cli(w, "sims")} >= set(w.phones)

    await polled(listed, timeout=30.0)


async def logged(w: World, event: str, **match: Any) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def seen() -> bool:
        found[:] = [
            e for e in w.daemon.logs()
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]  # fmt: skip
        return bool(found)

    await polled(seen)
    return found[0]


async def cli(w: World, *args: str, as_json: bool = True) -> Any:
    """`sms-gateway ARGS --json -c CONFIG` in a subprocess (the event loop keeps answering for
    the simulated modems meanwhile); its JSON output (its text without `as_json`)."""
    flags = ["--json"] if as_json else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, *flags, "-c", str(w.daemon.config_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out) if as_json else out.decode()


async def activations(w: World, *flags: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await cli(w, "activations", "list", *flags, "--limit", "10000")
    return found


async def ledgers(w: World) -> dict[str, dict[str, Any]]:
    """`sms-gateway sims --json`: each SIM's per-service ledger."""
    return {s["sim"]: s["ledger"] for s in await cli(w, "sims")}


async def services(w: World) -> dict[str, Any]:
    return await w.standin.get_services()


def count(answer: dict[str, Any], service: str, country: str | None = None) -> int:
    return StandIn.count(answer, service, country)


def by_country(answer: dict[str, Any], service: str) -> dict[str, int]:
    return {c["country"]: c["operatorMap"]["any"][service] for c in answer["countryList"]}


async def finish(w: World, activation_id: int, status: int) -> dict[str, Any]:
    """FINISH_ACTIVATION sent again by hand, as Onlinesim retrying would."""
    body = {"action": "FINISH_ACTIVATION", "activationId": activation_id, "status": status}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{w.partner_url}/finishActivation", json={**body, "key": KEY}) as r,
    ):
        assert r.status == 200
        answer: dict[str, Any] = await r.json()
        return answer


async def finished(standin: StandIn, order: Order) -> None:
    await standin.wait_for(lambda s: order.state is OrderState.FINISHED, timeout=WAIT)


def sms(text: str, sender: str) -> str:
    return encode_deliver(sender, text)


# --- the tests --------------------------------------------------------------------------------


async def test_the_ordered_sims_sms_is_pushed_and_an_unordered_sims_kept(w: World) -> None:
    order = await w.standin.order("vk", country="russia")
    assert order is not None and order.phone in w.by_phone
    mine = w.by_phone[order.phone]
    assert country_of(mine) == "russia"
    other = next(f for p, f in w.by_phone.items() if p != order.phone and country_of(f) == "russia")
    other_phone = next(p for p, f in w.by_phone.items() if f is other)

    other.deliver(sms("VK code 2222", sender="VK"))
    mine.deliver(sms("VK code 1111", sender="VK"))
    # Pushed with the ordered SIM's phone; the stand-in takes it and FINISHes it with 3.
    await finished(w.standin, order)
    assert order.status == 3 and len(order.sms_ids) == 1
    (pushed,) = [p for p in w.standin.pushes if p.body and p.body["text"] == "VK code 1111"]
    assert pushed.status == 200 and pushed.body is not None
    assert (pushed.body["phone"], pushed.body["phoneFrom"]) == (order.phone, "VK")
    # The other SIM's SMS is committed held (no_activation), never sent anywhere.
    held = await logged(w, "sms.held", reason="no_activation", phone=other_phone)
    # Once the activation is finished, an SMS on its number is held too.
    mine.deliver(sms("VK code 3333, late", sender="VK"))
    late = await logged(w, "sms.held", reason="no_activation", phone=order.phone)

    shown, *kept_ones, held_list = await asyncio.gather(
        cli(w, "messages", "show", str(pushed.sms_id)),
        cli(w, "messages", "show", str(held["sms_id"])),
        cli(w, "messages", "show", str(late["sms_id"])),
        cli(w, "messages", "list", "--state", "held", "--limit", "1000"),
    )
    assert (shown["state"], shown["phone"], shown["activation_id"]) == (
        "delivered", order.phone, order.activation_id,
    )  # fmt: skip
    for kept, text in zip(kept_ones, ("VK code 2222", "VK code 3333, late"), strict=True):
        assert (kept["state"], kept["hold_reason"], kept["text"]) == ("held", "no_activation", text)
        assert (kept["activation_id"], kept["attempts"]) == (None, [])  # never sent
    sent = [(p.body["phone"], p.body["text"]) for p in w.standin.pushes if p.body]
    assert other_phone not in {phone for phone, _ in sent}
    assert not {"VK code 2222", "VK code 3333, late"} & {text for _, text in sent}
    assert {held["sms_id"], late["sms_id"]} <= {m["sms_id"] for m in held_list}


async def test_finish_3_and_4_change_only_that_services_count_and_repeats_change_nothing(
    w: World,
) -> None:
    lone_key = w.lone.iccid
    before = await services(w)
    assert count(before, "wa", "kazakhstan") == count(before, "tg", "kazakhstan") == 1
    elsewhere = {c: n for c, n in by_country(before, "wa").items() if c != "kazakhstan"}

    order = await w.standin.order("wa", country="kazakhstan")
    assert order is not None and order.phone == LONE_PHONE
    busy = await services(w)  # busy in an open activation: offered for no service
    assert all(count(busy, s, "kazakhstan") == 0 for s in SERVICES)
    w.lone.deliver(sms("WhatsApp code 555-666", sender="WhatsApp"))
    await finished(w.standin, order)
    assert order.status == 3

    sold = await services(w)
    assert count(sold, "wa", "kazakhstan") == 0  # sold for wa: never again
    assert all(count(sold, s, "kazakhstan") == 1 for s in SERVICES if s != "wa")
    assert {c: n for c, n in by_country(sold, "wa").items() if c != "kazakhstan"} == elsewhere
    ledger, listed = await asyncio.gather(ledgers(w), activations(w))
    assert ledger[lone_key] == {"wa": {"sold": True, "blocked": False, "cancels": 0, "refunds": 0}}
    assert {"activation_id": order.activation_id, "state": "finished", "status": 3}.items() <= (
        next(a for a in listed if a["activation_id"] == order.activation_id).items()
    )

    # FINISH again, with 3 or another status: SUCCESS, and nothing changes anywhere.
    for status in (3, 4, 1):
        assert await finish(w, order.activation_id, status) == {"status": "SUCCESS"}
    assert (await services(w))["countryList"] == sold["countryList"]
    assert await asyncio.gather(ledgers(w), activations(w)) == [ledger, listed]

    # Cancelled (FINISH 4 when its time ran out with no SMS): offered again, at most 3 more
    # times. A second Onlinesim caller with a short activation time sends those 4s.
    caller = StandIn(partner=PartnerPlay(w.partner_url, KEY, services_interval=0,
                                         activation_time=0.3, retry_interval=0.5))  # fmt: skip
    await caller.start()
    try:
        for cancels in (1, 2, 3, 4):
            cancelled = await caller.order("tg", country="kazakhstan")
            assert cancelled is not None and cancelled.phone == LONE_PHONE, cancels
            await finished(caller, cancelled)
            assert cancelled.status == 4 and not cancelled.sms_ids
            now = await services(w)
            assert count(now, "tg", "kazakhstan") == (1 if cancels <= 3 else 0), cancels
            assert count(now, "wa", "kazakhstan") == 0 and count(now, "vk", "kazakhstan") == 1
            if cancels in (2, 3):
                continue  # the ledger is read after the first and the last
            entry = {"sold": False, "blocked": False, "cancels": cancels, "refunds": 0}
            assert (await ledgers(w))[lone_key]["tg"] == entry
            if cancels == 1:  # the same FINISH 4 again: still one cancel
                assert await finish(w, cancelled.activation_id, 4) == {"status": "SUCCESS"}
                assert (await ledgers(w))[lone_key]["tg"] == entry
                assert (await services(w))["countryList"] == now["countryList"]
        assert await caller.order("tg", country="kazakhstan") is None  # NO_NUMBERS
        assert await caller.order("wa", country="kazakhstan") is None
        assert caller.reused_numbers == 0 and not caller.partner_errors
    finally:
        await caller.stop()


async def test_activations_and_the_ledger_survive_kill_9_with_orders_in_flight(w: World) -> None:
    d, standin = w.daemon, w.standin
    # Some ledger of this test's own first: one number sold for ok.
    first = await standin.order("ok", country="russia")
    assert first is not None
    standin.finish(first.activation_id, 3)
    await finished(standin, first)
    ledger, listed = await asyncio.gather(ledgers(w), activations(w))
    done = {a["activation_id"]: a for a in listed}
    assert ledger[w.by_phone[first.phone].iccid]["ok"]["sold"] is True

    # Onlinesim orders 20 numbers at once; kill -9 as soon as a few answers have arrived.
    known = set(standin.orders)
    calls = [asyncio.create_task(standin.order("ok", country="russia")) for _ in range(20)]
    await standin.wait_for(lambda s: len(set(s.orders) - known) >= 3, timeout=WAIT)
    d.kill()
    results = await asyncio.gather(*calls, return_exceptions=True)
    answered = {o.activation_id: o.phone for o in results if isinstance(o, Order)}
    assert len(answered) >= 3
    # A SUCCESS, or no answer at all (the connection cut): nothing else.
    assert all(isinstance(r, Order | PartnerError) for r in results), results
    assert set(answered) == set(standin.orders) - known

    await d.start(timeout=WAIT)
    await all_live(w)
    open_list, ledger_after, listed_after, sims = await asyncio.gather(
        activations(w, "--open"), ledgers(w), activations(w), cli(w, "sims")
    )
    opened = {a["activation_id"]: a for a in open_list}
    # Every activation Onlinesim was answered is there, open, on the number it was given (those
    # committed whose answers the kill cut off may be there too: recorded before answering).
    assert {i: opened[i]["phone"] for i in answered} == answered
    assert all(a["service"] == "ok" and a["state"] == "open" for a in opened.values())
    assert len(set(a["phone"] for a in opened.values())) == len(opened)
    # The ledger and the finished activations are as they were.
    assert ledger_after == ledger
    after = {a["activation_id"]: a for a in listed_after}
    assert {i: after[i] for i in done} == done

    # Their SIMs stay busy: not counted, for any service, and never handed to a second order.
    busy = {a["sim_key"] for a in opened.values()}
    # All live and ready (/health above); the store's copy of their state may lag a moment.
    russian = {s["sim"] for s in sims if s["country"] == "russia"}
    assert busy <= russian
    now = await services(w)
    sold_ok = {k for k, e in ledger.items() if e.get("ok", {}).get("sold")}
    assert count(now, "ok", "russia") == len(russian - busy - sold_ok)
    assert count(now, "fb", "russia") == len(russian - busy)
    more: list[Order] = []
    while (order := await standin.order("ok", country="russia")) is not None:
        more.append(order)
    assert len(more) == len(russian - busy - sold_ok)
    assert not {o.phone for o in more} & {a["phone"] for a in opened.values()}
    assert standin.reused_numbers == 0

    # Settled: Onlinesim cancels what it ordered; those it never heard of (committed, their
    # answers cut off by the kill) the operator settles by hand, the first with the CLI.
    for order in [*more, *(standin.orders[i] for i in answered)]:
        standin.finish(order.activation_id, 4)
    unknown = sorted(set(opened) - set(answered))
    if unknown:
        await cli(w, "activations", "finish", str(unknown[0]), "--status", "4", as_json=False)
        done_by_hand = await asyncio.gather(*(finish(w, i, 4) for i in unknown[1:]))
        assert all(a == {"status": "SUCCESS"} for a in done_by_hand)
    for order in [*more, *(standin.orders[i] for i in answered)]:
        await finished(standin, order)
    assert count(await services(w), "ok", "russia") == len(russian - sold_ok)


async def test_an_unplugged_modems_sim_leaves_the_count_and_comes_back_replugged(
    w: World,
) -> None:
    victim = next(f for f in w.fakes if country_of(f) == "germany")
    before = await services(w)
    total, german = count(before, "fb"), count(before, "fb", "germany")
    assert german >= 2

    unplugged = time.monotonic()
    victim.unplug()
    try:
        await _while_unplugged(w, victim, unplugged, total, german)
    finally:
        victim.replug()  # also when the checks failed: the next test needs every SIM

    async def back() -> bool:
        now = await services(w)
        return count(now, "fb") == total and count(now, "fb", "germany") == german

    await polled(back)
    await all_live(w)


async def _while_unplugged(
    w: World, victim: FakeModem, unplugged: float, total: int, german: int
) -> None:
    async def gone() -> bool:
        now = await services(w)
        return count(now, "fb") == total - 1 and count(now, "fb", "germany") == german - 1

    await polled(gone, timeout=UNPLUG_BOUND)
    assert time.monotonic() - unplugged < UNPLUG_BOUND
    _, health = await w.daemon.health()
    assert health["checks"]["partner"]["sims_usable"] == N
    # While it is out, Onlinesim never gets its number: every German one but it, then none.
    ordered: list[Order] = []
    while (order := await w.standin.order("fb", country="germany")) is not None:
        ordered.append(order)
    assert len(ordered) == german - 1
    assert w.phones[victim.iccid] not in {o.phone for o in ordered}
    for order in ordered:
        w.standin.finish(order.activation_id, 4)
    for order in ordered:
        await finished(w.standin, order)

    async def recorded() -> bool:  # the store's copy is written a moment after the change
        states = {s["sim"]: s["state"] for s in await cli(w, "sims")}
        return states.get(victim.iccid) == "absent"

    await polled(recorded)
