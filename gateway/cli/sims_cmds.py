"""`sms-gateway sims [--json]` and `sms-gateway sims discover [PORT...]`.

`sims` reads the store (read-only, no secrets, like `status`): every SIM the inventory has
recorded, with its per-service ledger. What it shows is what the daemon last wrote (at most a
second old while it runs; every SIM `absent` after it stopped).

`sims discover` finds each SIM's own number (`AT+CNUM`, the own-number phonebook, then the
operator's answer to its `[[partner.number_query]]`). The daemon holds the ports while it runs,
so then the request goes to it (`POST /v1/sims/discover` on `http.listen`, with
`http.status_token`: this command reads the config's secrets); without a daemon the command
takes the store lock (no daemon starts meanwhile), opens the ports itself like `modems probe`,
commits an operator's answer SMS held (`operator_answer`), and records the number in the
inventory so the daemon uses it when it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from gateway.cli import render
from gateway.cli.partner_cmds import reading_book
from gateway.config import Config, ModemConfig, NumberQueryConfig
from gateway.errors import DecodeError, GatewayError, StoreUnavailable
from gateway.http.sims import DISCOVER_PATH
from gateway.intake import Intake
from gateway.inventory.sims import Inventory, Sighting, SimState
from gateway.outbox import Incoming, Outbox
from gateway.outbox.partner import LedgerEntry, PartnerBook, SimRecord
from gateway.partner.service import local_address
from gateway.sources.modem.channel import AtChannel, AtCommandError, LinkClosed, Urc
from gateway.sources.modem.discovery import Discovery, PendingAnswer, query_for
from gateway.sources.modem.inbound import Received, to_item
from gateway.sources.modem.keys import sim_identity
from gateway.sources.modem.phones import modem_source
from gateway.sources.modem.serial_link import LinkOpenError, open_serial_link
from gateway.sources.modem.session import Session, SimNotReady
from gateway.sources.modem.ussd import parse_cusd

__all__ = ["run", "sim_json"]

_SMS_POLL = 1.0  # seconds between looks for the operator's answer SMS (no daemon)
_COMMANDS = 8  # command timeouts a discovery may take besides the query's own timeout


async def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.action == "discover":
        return await discover(args, cfg)
    async with reading_book(cfg) as book:
        sims = await book.sims()
        ledger = await book.ledger()
    if args.json:
        print(render.dumps([sim_json(s, ledger) for s in sims]))
    else:
        print(sims_text(sims, ledger, time.time()))
    return 0


def sim_json(s: SimRecord, ledger: dict[tuple[str, str], LedgerEntry]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sim": s.sim_key,
        "iccid": s.iccid,
        "imsi": s.imsi,
        "mcc": s.mcc,
        "mnc": s.mnc,
        "country": s.country,
        "operator": s.operator,
        "phone": s.phone or None,
        "phone_origin": s.phone_origin,
        "source": s.source,
        "location": s.location,
        "state": s.state,
        "signal_dbm": s.signal,
        "last_seen": s.last_seen,
        "last_sms": s.last_sms,
    }
    data["ledger"] = {
        service: {
            "sold": e.sold,
            "blocked": e.blocked,
            "cancels": e.cancels,
            "refunds": e.refunds,
        }
        for (key, service), e in sorted(ledger.items())
        if key == s.sim_key
    }
    return data


def _ledger_line(entries: dict[str, LedgerEntry]) -> str:
    parts = []
    for service, e in sorted(entries.items()):
        what = [w for w, on in (("sold", e.sold), ("not for it", e.blocked)) if on]
        if e.cancels:
            what.append(f"cancelled {e.cancels}x")
        if e.refunds:
            what.append(f"refunded {e.refunds}x")
        parts.append(f"{service}: {', '.join(what) or 'offered'}")
    return "; ".join(parts)


def sims_text(
    sims: Sequence[SimRecord], ledger: dict[tuple[str, str], LedgerEntry], now: float
) -> str:
    if not sims:
        return "no SIMs recorded yet (the daemon records them as its sources report them)"
    rows = []
    for s in sims:
        network = f"{s.mcc}-{s.mnc}" if s.mcc else "-"
        phone = f"{s.phone} ({s.phone_origin})" if s.phone else "unknown"
        signal = f"{s.signal} dBm" if s.signal is not None else "-"
        rows.append(
            [
                s.sim_key, s.state, phone, s.country or "-", s.operator or "-", network,
                f"{s.source} {s.location}", signal, render.age(s.last_seen, now),
                render.age(s.last_sms, now),
            ]
        )  # fmt: skip
    headers = ["SIM", "STATE", "PHONE", "COUNTRY", "OPERATOR", "NETWORK", "WHERE", "SIGNAL",
               "SEEN", "LAST SMS"]  # fmt: skip
    lines = [render.table(headers, rows)]
    by_sim: dict[str, dict[str, LedgerEntry]] = {}
    for (key, service), entry in ledger.items():
        by_sim.setdefault(key, {})[service] = entry
    if by_sim:
        lines.append("")
        lines.append("ledger (per SIM, per service):")
        for key in sorted(by_sim):
            lines.append(f"  {render.visible(key)}: {render.visible(_ledger_line(by_sim[key]))}")
    return "\n".join(lines)


# --- discover --------------------------------------------------------------------------------


async def discover(args: argparse.Namespace, cfg: Config) -> int:
    from gateway.daemon import StoreLocked, lock_store

    try:
        fd = lock_store(cfg.store.path)
    except StoreLocked:
        return await _through_daemon(cfg, args.ports)
    try:
        results = await _by_itself(cfg, args.ports)
    finally:
        os.close(fd)
    return _print(results)


def _print(results: dict[str, Discovery]) -> int:
    if not results:
        print("sms-gateway: no modems: configure [[modem]] tables or give ports", file=sys.stderr)
        return 2
    for name, r in results.items():
        if r.phone:
            print(f"{render.visible(name)}: {r.phone} ({r.origin}: {render.visible(r.detail)})")
        else:
            print(f"{render.visible(name)}: no number: {render.visible(r.detail)}")
    return 0 if any(r.phone for r in results.values()) else 1


def _bound(cfg: Config) -> float:
    queries = cfg.partner.number_query if cfg.partner is not None else ()
    longest = max((q.timeout for q in queries), default=0.0)
    return longest + _COMMANDS * cfg.modems.command_timeout + 5.0


async def _through_daemon(cfg: Config, ports: Sequence[str]) -> int:
    if not cfg.http.status_token:
        raise GatewayError(
            "the daemon holds the ports; asking it needs http.status_token (or status_token_file)"
            " in the config"
        )
    host, port = local_address(cfg.http.listen)
    url = f"http://{host}:{port}{DISCOVER_PATH}"
    headers = {"Authorization": f"Bearer {cfg.http.status_token}"}
    timeout = aiohttp.ClientTimeout(total=_bound(cfg))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"ports": list(ports)}, headers=headers) as resp,
        ):
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise GatewayError(
            f"the daemon did not answer at {url}: {exc or type(exc).__name__}"
        ) from exc
    if resp.status != 200 or not isinstance(body, dict) or "results" not in body:
        detail = body.get("error") if isinstance(body, dict) else None
        raise GatewayError(f"the daemon refused discovery ({resp.status}): {detail or body!r}")
    results = {
        str(name): Discovery(r.get("phone"), r.get("origin"), str(r.get("detail", "")))
        for name, r in body["results"].items()
        if isinstance(r, dict)
    }
    return _print(results)


def _targets(cfg: Config, ports: Sequence[str]) -> list[ModemConfig]:
    if not ports:
        return list(cfg.modem)
    out = []
    for wanted in ports:
        found = next((m for m in cfg.modem if wanted in (m.name, m.port)), None)
        out.append(found or ModemConfig(port=wanted, name=os.path.basename(wanted) or wanted))
    return out


async def _by_itself(cfg: Config, ports: Sequence[str]) -> dict[str, Discovery]:
    """No daemon: open each port in turn, find the number, record it in the store."""
    targets = _targets(cfg, ports)
    if not targets:
        return {}
    outbox = await Outbox.open(cfg.store.path, node=cfg.ids.node, nodes=cfg.ids.nodes)
    inventory = Inventory(
        PartnerBook(outbox, read_mark=False),
        names=cfg.partner.names if cfg.partner is not None else {},
    )
    try:
        await inventory.start()
        intake = Intake(outbox)
        queries = cfg.partner.number_query if cfg.partner is not None else ()
        results = {}
        for modem in targets:
            results[modem.name] = await _discover_port(cfg, modem, queries, intake, inventory)
        return results
    finally:
        try:
            await inventory.stop()
        finally:
            await outbox.close()


async def _discover_port(
    cfg: Config,
    modem: ModemConfig,
    queries: Sequence[NumberQueryConfig],
    intake: Intake,
    inventory: Inventory,
) -> Discovery:
    try:
        link = await open_serial_link(modem.port, baudrate=modem.baudrate)
    except LinkOpenError as exc:
        return Discovery(None, None, str(exc))
    pending: list[PendingAnswer] = []
    resend = asyncio.Event()

    def on_urc(urc: Urc) -> None:
        if urc.name.upper() != "+CUSD" or not pending:
            return
        try:
            reply = parse_cusd(f"+CUSD: {urc.args}")
        except DecodeError as exc:
            pending[0].finish(Discovery(None, None, f"unreadable USSD answer: {exc}"))
            return
        if pending[0].on_cusd(reply) == "retry_packed":
            resend.set()

    channel = AtChannel(link, on_urc=on_urc)
    channel.start()
    try:
        session = Session(channel, timeout=cfg.modems.command_timeout)
        await session.wake(reset_if_silent=False)
        await session.unlock(modem.pin)
        identity = await session.identify()
        network = await session.network()
        outcome = await _ask(session, identity.imsi, identity.cnum, identity.phonebook, queries,
                             pending, resend, intake, modem, identity.iccid)  # fmt: skip
        if outcome.phone:
            state = SimState.READY if network.registered else SimState.NOT_REGISTERED
            inventory.report(
                Sighting(
                    source=modem_source(modem),
                    location=modem.name,
                    state=state,
                    iccid=identity.iccid,
                    imsi=identity.imsi,
                    phone=outcome.phone,
                    phone_origin=outcome.origin,
                    signal=network.signal_dbm,
                    network_name=network.operator or "",
                )
            )
            inventory.gone(modem_source(modem), modem.name)  # the daemon is not running
        return outcome
    except SimNotReady as exc:
        return Discovery(None, None, str(exc))
    except AtCommandError as exc:
        return Discovery(None, None, f"the modem did not answer as expected: {exc}")
    except LinkClosed as exc:
        return Discovery(None, None, f"the port closed: {exc}")
    finally:
        await channel.close()


async def _ask(
    session: Session,
    imsi: str | None,
    cnum: str | None,
    phonebook: str | None,
    queries: Sequence[NumberQueryConfig],
    pending: list[PendingAnswer],
    resend: asyncio.Event,
    intake: Intake,
    modem: ModemConfig,
    iccid: str | None,
) -> Discovery:
    said = cnum or phonebook
    if said:
        digits = "".join(c for c in said if c.isdigit())
        return Discovery(digits, "cnum" if cnum else "phonebook", "the SIM")
    query = query_for(queries, imsi)
    if query is None:
        return Discovery(
            None,
            None,
            "the SIM does not say its number and no [[partner.number_query]] matches its"
            f" network (IMSI {imsi or 'unknown'})",
        )
    answer = PendingAnswer(query, packed=query.request == "packed")
    pending.append(answer)
    await _send(session, answer)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.timeout
    sim = sim_identity(iccid, imsi, modem.name)
    while not answer.done and loop.time() < deadline:
        if resend.is_set():
            resend.clear()
            answer.packed = True
            await _send(session, answer)
        if query.answer == "sms":
            await _take_answer_sms(session, answer, intake, modem, sim)
        left = deadline - loop.time()
        if answer.done or left <= 0:
            break
        await asyncio.wait([answer.result], timeout=min(left, _SMS_POLL))
    answer.expire()
    return answer.result.result()


async def _send(session: Session, answer: PendingAnswer) -> None:
    try:
        reply = await session.send_ussd(answer.query.code, packed=answer.packed)
    except ValueError as exc:
        answer.finish(Discovery(None, None, str(exc)))
        return
    except AtCommandError as exc:
        if not answer.packed and answer.query.request == "auto":
            answer.packed = True
            await _send(session, answer)
            return
        answer.finish(Discovery(None, None, f"the modem refused the USSD request: {exc}"))
        return
    for line in reply.lines:
        if line.upper().startswith("+CUSD"):
            try:
                answer.on_cusd(parse_cusd(line))
            except DecodeError as exc:
                answer.finish(Discovery(None, None, f"unreadable USSD answer: {exc}"))


async def _take_answer_sms(
    session: Session, answer: PendingAnswer, intake: Intake, modem: ModemConfig, sim: str
) -> None:
    """Look through the SIM for the operator's answer; commit it held, then delete it. Other
    messages stay on the SIM for the daemon."""
    try:
        stored = await session.list_all()
    except (AtCommandError, DecodeError):
        return
    for index, stat, pdu in stored:
        if stat in (2, 3):
            continue
        where = Received(modem_source(modem), sim, None, str(index), time.time())
        try:
            item = to_item(pdu, where)
        except DecodeError:
            continue
        if not isinstance(item, Incoming):
            continue
        held = answer.claim(item)
        if held is None:
            continue
        try:
            await intake.accept([held])
        except StoreUnavailable:
            return  # stays on the SIM: the daemon commits it (as an ordinary SMS) later
        await session.delete(index)
        return
