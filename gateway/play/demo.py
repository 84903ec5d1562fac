"""`sms-gateway demo`: the whole partner cycle on one machine, with no hardware and no account.

The stand-in plays Onlinesim (PUSH_SMS endpoint and the partner calls), the daemon runs with
[partner] on, six simulated modems whose SIMs sit on four networks in two countries, and an
[smpp_server] with one account: the stand-in orders a number, an SMS on exactly that SIM is
pushed, the stand-in finishes the activation with 3 and the count drops, an SMS on a SIM nobody
ordered is kept; then it orders a second number and a GSM gateway box bound over SMPP (the
ESME in gateway.play.esme) hands the SMS for it, answered only once committed, and it is pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from gateway import config
from gateway.daemon import Daemon, StoreLocked, lock_store
from gateway.errors import GatewayError
from gateway.outbox import State
from gateway.play.esme import Esme
from gateway.play.modem import FakeModem
from gateway.play.pdu import split_deliver
from gateway.play.standin import OrderState, PartnerPlay, StandIn

T = TypeVar("T")

DEMO_TOKEN = "demo-ingest-token"  # noqa: S105 - a demo on loopback, printed on purpose
DEMO_KEY = "demo-api-key"
DEMO_PARTNER_KEY = "demo-partner-key"
SERVICES = ("vk", "wa", "tg")
ORDERED_SERVICE = "vk"
# The second order, whose SMS a gateway box hands over SMPP: a country with SIMs left for it.
SMPP_SERVICE, SMPP_COUNTRY = "tg", "kazakhstan"
SMPP_SYSTEM_ID = "demo-box"
SMPP_PASSWORD = "demo-pw"  # noqa: S105 - a demo on loopback, printed on purpose (8 at most)


# Simulated modems: (maker profile, ICCID, IMSI (its MCC/MNC: the home network), the SIM's number)
MODEMS = [
    ("simcom", "8970101000000000011", "250010000000011", "79161234501"),  # Russia, MTS
    ("huawei", "8970102000000000022", "250020000000022", "79261234502"),  # Russia, MegaFon
    ("quectel", "8970199000000000033", "250990000000033", "79031234503"),  # Russia, Beeline
    ("wavecom", "8970101000000000044", "250010000000044", "79161234504"),  # Russia, MTS
    ("telit", "8997702000000000055", "401020000000055", "77011234505"),  # Kazakhstan, Kcell
    ("simcom", "8997701000000000066", "401010000000066", "77771234506"),  # Kazakhstan, Beeline
]
# [partner.names]: MCC or MCC-MNC -> Onlinesim's names (others: the network table's, slugged)
NAMES = {
    "250": "russia",
    "250-01": "mts",
    "401": "kazakhstan",
    "401-01": "beeline",
    "401-02": "kcell",
}


STORE = "outbox.sqlite3"
# The store and what lives beside it (WAL, the id marks): each demo starts without them.
_STORE_FILES = ("", "-wal", "-shm", "-journal", ".ids", ".activation-ids")


def fresh_store(directory: Path) -> None:
    """Remove the store an earlier demo left in `directory`: its sales and activations would
    change what this run shows (a number sold for vk is never offered for it again), and its
    stand-in Onlinesim, which knew those smsIds, is gone. Refused while a demo still runs on it
    (its daemon holds the store's lock)."""
    store = directory / STORE
    try:
        os.close(lock_store(str(store)))  # the daemon's own lock; closing lets it go
    except StoreLocked:
        raise GatewayError(
            f"demo: another demo is running on {directory}; stop it, or give another --dir"
        ) from None
    for suffix in _STORE_FILES:
        Path(f"{store}{suffix}").unlink(missing_ok=True)


def start_modems(directory: Path) -> list[FakeModem]:
    """Real pseudo-terminals that speak AT like USB modems, with /dev/serial/by-id-like links."""
    links = directory / "by-id"
    links.mkdir(parents=True, exist_ok=True)
    modems = []
    for i, (profile, iccid, imsi, _) in enumerate(MODEMS):
        modem = FakeModem(
            profile,
            iccid=iccid,
            imsi=imsi,
            link_dir=links,
            link_name=f"usb-demo-{profile}-{i}-if00-port0",
        )
        modem.start()
        modems.append(modem)
    return modems


def modem_tables(modems: list[FakeModem]) -> str:
    tables = ["[modems]\nscan_interval = 10.0\nmultipart_timeout = 30.0\n"]
    for modem, (_, iccid, _, phone) in zip(modems, MODEMS, strict=True):
        tables.append(f'[[modem]]\nport = "{modem.port}"\n')
        tables.append(f'[[sim]]\niccid = "{iccid}"\nphone = "{phone}"\n')
    return "\n".join(tables)


def partner_table() -> str:
    names = ", ".join(f'"{k}" = "{v}"' for k, v in NAMES.items())
    return (
        "[partner]\n"
        'listen = "127.0.0.1:0"\n'
        f'key = "{DEMO_PARTNER_KEY}"\n'
        f"services = {json.dumps(list(SERVICES))}\n"
        f"names = {{ {names} }}\n"
    )


def smpp_tables() -> str:
    return (
        "[smpp_server]\n"
        'listen = "127.0.0.1:0"\n\n'
        "[[smpp_server.account]]\n"
        f'system_id = "{SMPP_SYSTEM_ID}"\n'
        f'password = "{SMPP_PASSWORD}"\n'
    )


def write_config(directory: Path, upstream_url: str, port: int, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        "# Written by `sms-gateway demo`.\n"
        "[upstream]\n"
        f'url = "{upstream_url}"\n'
        f'api_key = "{DEMO_KEY}"\n'
        "retry_interval = 2.0\n"
        "timeout = 5.0\n\n"
        "[store]\n"
        f'path = "{(directory / STORE).resolve()}"\n\n'
        "[http]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f'ingest_token = "{DEMO_TOKEN}"\n\n'
        "[log]\n"
        'format = "console"\n'
        'level = "warning"\n\n' + extra,
        encoding="utf-8",
    )
    return path


def cli_command() -> str:
    """How to run `sms-gateway` as the demo was run, so the printed commands work as shown.

    The script sits beside the interpreter (`.venv/bin/`), which is rarely on the PATH.
    """
    script = Path(sys.executable).parent / "sms-gateway"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m gateway"


def describe(answer: dict[str, Any]) -> list[str]:
    """A GET_SERVICES answer in a few lines: per country, the `any` counts and each operator's."""
    lines = []
    for entry in answer.get("countryList", []):
        operators = entry.get("operatorMap", {})
        total = operators.get("any", {})
        counts = " ".join(f"{s}={total.get(s, 0)}" for s in SERVICES)
        each = ", ".join(
            f"{name} {'/'.join(str(c.get(s, 0)) for s in SERVICES)}"
            for name, c in operators.items()
            if name != "any"
        )
        lines.append(
            f"    {entry.get('country')}: {counts}  (by operator, {'/'.join(SERVICES)}: {each})"
        )
    return lines


async def until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll another part (the daemon, through its store or HTTP) until `check` gives a value."""
    try:
        async with asyncio.timeout(timeout):
            # Another process's state, or the daemon's store: nothing to wait on but asking.
            while (value := await check()) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            return value
    except TimeoutError:
        raise GatewayError(f"demo: {what} did not happen within {timeout:g} s") from None


def step(text: str) -> None:
    print(f"\n{text}", flush=True)


async def run_demo(*, port: int, directory: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    standin = StandIn(key=DEMO_KEY, bad_senders=["SomeBank"], rate_limit=50)
    await standin.start()
    modems: list[FakeModem] = []
    daemon: Daemon | None = None
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fresh_store(Path(directory))
        modems = start_modems(Path(directory))
        tables = [modem_tables(modems), partner_table(), smpp_tables()]
        cfg_path = write_config(Path(directory), standin.url, port, "\n".join(tables))
        cfg = config.load(cfg_path)
        daemon = Daemon(cfg)
        try:
            parts = await daemon.start()
        except GatewayError as e:
            if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.EADDRINUSE:
                raise GatewayError(
                    f"demo: port {port} is in use; pick another with --port N"
                    " (make run PORT=N), or 0 for any free port"
                ) from e
            raise
        if parts.partner is None or parts.partner.bound_port is None:
            raise GatewayError("demo: the daemon did not start its partner listener")
        if parts.smpp is None or parts.smpp.server is None:
            raise GatewayError("demo: the daemon did not start its SMPP server")
        smpp_port = parts.smpp.server.port
        base = f"http://127.0.0.1:{parts.http.bound_port}"
        partner_url = f"http://127.0.0.1:{parts.partner.bound_port}"
        standin.play(
            PartnerPlay(partner_url, DEMO_PARTNER_KEY, service=ORDERED_SERVICE, finish_after=1.0)
        )
        standin_base = standin.url.rsplit("/v1", 1)[0]
        print(f"stand-in Onlinesim (PUSH_SMS): {standin.url}")
        print(f"daemon's partner listener:     {partner_url} (Onlinesim's calls)")
        print(f"daemon's HTTP (status page):   {base}/")
        print(
            f"daemon's SMPP server:          127.0.0.1:{smpp_port}"
            f" (system_id {SMPP_SYSTEM_ID}, password {SMPP_PASSWORD})"
        )
        print(f"daemon store:                  {cfg.store.path}")
        print(f"config written to:             {cfg_path}")

        step(
            f"{len(modems)} simulated modems (real ptys speaking AT) register; their SIMs"
            f" ({', '.join(sorted({m[2][:3] + '-' + m[2][3:5] for m in MODEMS}))}) enter the"
            " inventory:"
        )

        async def offered() -> dict[str, Any] | None:
            answer = await standin.get_services()
            full = StandIn.count(answer, ORDERED_SERVICE) >= len(MODEMS)
            return answer if full else None

        before = await until(offered, 60, "every simulated SIM in the inventory")
        print("  GET_SERVICES (the stand-in asks as Onlinesim does every 2 minutes):")
        print("\n".join(describe(before)))

        step(f"the stand-in, as Onlinesim, orders a number in russia for {ORDERED_SERVICE}:")
        order = await standin.order(ORDERED_SERVICE, country="russia")
        if order is None:
            raise GatewayError("demo: GET_NUMBER answered NO_NUMBERS")
        print(f"  GET_NUMBER -> number {order.phone}, activationId {order.activation_id}")
        during = await standin.get_services()
        print(
            f"  GET_SERVICES: russia {ORDERED_SERVICE}"
            f" {StandIn.count(before, ORDERED_SERVICE, 'russia')}"
            f" -> {StandIn.count(during, ORDERED_SERVICE, 'russia')} (that SIM is taken)"
        )

        ordered = next(i for i, m in enumerate(MODEMS) if m[3] == order.phone)
        text = "VK: 4417 is your code. Do not give it to anyone"
        for pdu in split_deliver("VK", text, ref=40):
            modems[ordered].deliver(pdu)
        step(f"an SMS arrives on exactly that SIM ({modems[ordered].port.rsplit('/', 1)[-1]}):")
        print(f"  from VK: {text!r}")
        await standin.wait_for(lambda s: bool(order.sms_ids), timeout=30)
        [push] = [p for p in standin.pushes if (p.body or {}).get("phone") == order.phone]
        body = push.body or {}
        print(
            f"  the gateway pushed it: PUSH_SMS smsId {body.get('smsId')} phone"
            f" {body.get('phone')} from {body.get('phoneFrom')} -> HTTP {push.status}"
        )
        await standin.wait_for(lambda s: order.state is OrderState.FINISHED, timeout=30)
        print(
            f"  the stand-in FINISHed activation {order.activation_id} with status"
            f" {order.status} (sold)"
        )
        after = await standin.get_services()
        print(
            f"  GET_SERVICES: russia {ORDERED_SERVICE}"
            f" {StandIn.count(before, ORDERED_SERVICE, 'russia')}"
            f" -> {StandIn.count(after, ORDERED_SERVICE, 'russia')} (sold: never offered"
            f" for {ORDERED_SERVICE} again); russia wa"
            f" {StandIn.count(before, 'wa', 'russia')} -> {StandIn.count(after, 'wa', 'russia')}"
            " (free again for other services)"
        )
        print("  GET_SERVICES after:")
        print("\n".join(describe(after)))

        other = next(i for i, m in enumerate(MODEMS) if m[3] != order.phone)
        phone = MODEMS[other][3]
        for pdu in split_deliver("WhatsApp", "WhatsApp code 123-456", ref=41):
            modems[other].deliver(pdu)
        step(f"an SMS arrives on a SIM nobody ordered ({phone}):")

        async def held(phone: str = phone) -> int | None:
            found = await parts.outbox.list_messages(state=State.HELD, phone=phone, limit=1)
            return found[0].sms_id if found else None

        sms_id = await until(held, 30, "the SMS on an un-ordered SIM to be kept")
        pushed = [p for p in standin.pushes if (p.body or {}).get("phone") == phone]
        print(
            f"  kept, not pushed: smsId {sms_id} is held (no_activation);"
            f" pushes for {phone}: {len(pushed)}"
        )
        async with aiohttp.ClientSession() as session:
            sample = {
                "phone": MODEMS[-1][3],
                "phoneFrom": "Telegram",
                "text": "Telegram code 31337",
            }
            async with session.post(
                f"{base}/v1/sms", json=sample, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}
            ) as resp:
                answer = await resp.json()
        print(
            f"  the same through the ingest API ({base}/v1/sms) for {sample['phone']}:"
            f" {resp.status} {json.dumps(answer)}, kept as well"
        )

        step(f"the stand-in orders a second number, in {SMPP_COUNTRY} for {SMPP_SERVICE}:")
        second = await standin.order(SMPP_SERVICE, country=SMPP_COUNTRY)
        if second is None:
            raise GatewayError("demo: the second GET_NUMBER answered NO_NUMBERS")
        print(f"  GET_NUMBER -> number {second.phone}, activationId {second.activation_id}")

        step("a GSM gateway box bound over SMPP hands the SMS for that number:")
        # A fresh code each run: the same PDU again within the account's retransmit_window
        # (an hour) would be taken as the box resending it, answered ROK and not stored again.
        sms_text = f"Telegram code {secrets.randbelow(90000) + 10000}"
        source = f"smpp-server:{SMPP_SYSTEM_ID}"
        async with Esme(
            "127.0.0.1", smpp_port, system_id=SMPP_SYSTEM_ID, password=SMPP_PASSWORD
        ) as esme:
            print(
                f"  bind_transceiver as {SMPP_SYSTEM_ID} to 127.0.0.1:{smpp_port}"
                f" -> ROK (the gateway's system_id {esme.smsc_id!r})"
            )
            print(f"  submit_sm from Telegram to {second.phone}: {sms_text!r}")
            sm_resp = await esme.send(second.phone, sms_text, source_addr="Telegram")
            # Read once, before anything else: the resp comes only after the commit.
            stored = [
                m
                for m in await parts.outbox.list_messages(phone=second.phone, limit=10)
                if m.source == source and m.text == sms_text
            ]
        if not sm_resp.ok or not stored:
            raise GatewayError(
                f"demo: submit_sm_resp {sm_resp.status_name}, {len(stored)} stored; expected ROK"
                " and the message in the store"
            )
        smpp_id = stored[0].sms_id
        print(
            f"  submit_sm_resp {sm_resp.status_name}, message_id {sm_resp.message_id}"
            f" (answered after the commit: smsId {smpp_id} was in the store); the box unbinds"
        )
        await standin.wait_for(
            lambda s: any(p.sms_id == smpp_id and p.status for p in s.pushes), timeout=30
        )
        [push] = [p for p in standin.pushes if p.sms_id == smpp_id and p.status]
        body = push.body or {}
        print(
            f"  the gateway pushed it: PUSH_SMS smsId {body.get('smsId')} phone"
            f" {body.get('phone')} from {body.get('phoneFrom')} -> HTTP {push.status}"
        )

        step("where to look (the daemon keeps running; Ctrl-C stops everything):")
        cli, cfg_arg = cli_command(), shlex.quote(str(cfg_path.resolve()))
        print(f"  {cli} sims -c {cfg_arg}")
        print(f"  {cli} activations list -c {cfg_arg}")
        print(f"  {cli} messages list -c {cfg_arg}")
        print(f"  {cli} status -c {cfg_arg}")
        print(f"  status page: {base}/")
        print(f"  curl {base}/health    (checks.smpp-server: the SMPP account and its binds)")
        print(f"  curl {base}/metrics")
        print(f"  curl {standin_base}/activations    (the stand-in's view as Onlinesim)")
        print(f"  curl {standin_base}/received")
        print(f'  curl -X POST {standin_base}/order -d \'{{"service": "wa"}}\'    (order another)')
        print(f"  {cli} ingest -c {cfg_arg} --phone {order.phone} --from Demo --text hello")
        await stop.wait()
    finally:
        if daemon is not None:
            with contextlib.suppress(Exception):
                await daemon.stop()
        for modem in modems:
            modem.stop()
        await standin.stop()
    print("demo stopped")
    return 0
