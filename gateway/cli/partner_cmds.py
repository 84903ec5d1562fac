"""`sms-gateway activations list / show / finish`: Onlinesim's activations, for operators.

`list` and `show` read the store (read-only, no secrets). `finish` settles one activation by
hand, exactly as Onlinesim's FINISH_ACTIVATION would: while a daemon runs on the store it is
sent to that daemon's partner listener (so the daemon's desk, which owns the activations in
memory, stays right; this needs the partner key, so `finish` reads secrets); otherwise it is
applied to the store directly through the same desk rules, holding the daemon's lock meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from gateway.cli import render
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.outbox import Outbox
from gateway.outbox.partner import Activation, FinishStatus, PartnerBook
from gateway.partner.desk import Desk
from gateway.partner.requests import FinishActivation
from gateway.partner.service import local_address

__all__ = ["STATUS_NAMES", "activation_json", "reading_book", "run"]

STATUS_NAMES = {
    FinishStatus.NOT_FOR_SERVICE: "not for this service",
    FinishStatus.SOLD: "sold",
    FinishStatus.CANCELLED: "cancelled",
    FinishStatus.REFUNDED: "refunded",
}
CALL_TIMEOUT = 10.0


async def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.action == "finish":
        return await finish(args, cfg)
    async with reading_book(cfg) as book:
        if args.action == "list":
            found = await book.activations(open_only=args.open, limit=args.limit)
            if args.json:
                print(render.dumps([activation_json(a) for a in found]))
            else:
                print(list_text(found, time.time()))
            return 0
        a = await book.activation(args.activation_id)
        if a is None:
            print(f"sms-gateway: no activation {args.activation_id}", file=sys.stderr)
            return 1
        print(render.dumps(activation_json(a)) if args.json else show_text(a))
        return 0


@contextlib.asynccontextmanager
async def reading_book(cfg: Config) -> AsyncIterator[PartnerBook]:
    """The partner tables of an existing store, read-only: nothing created or migrated, and
    the activation id mark left unread (a daemon may own the store meanwhile)."""
    outbox = await Outbox.open(
        cfg.store.path,
        node=cfg.ids.node,
        nodes=cfg.ids.nodes,
        create=False,
        migrate=False,
        readonly=True,
    )
    try:
        yield PartnerBook(outbox, read_mark=False)
    finally:
        await outbox.close()


def activation_json(a: Activation) -> dict[str, Any]:
    data = dataclasses.asdict(a)
    data["state"] = a.state.value
    data["status"] = int(a.status) if a.status is not None else None
    return data


def _status_text(a: Activation) -> str:
    if a.status is None:
        return ""
    return f"{int(a.status)} {STATUS_NAMES[a.status]}"


def list_text(found: Sequence[Activation], now: float) -> str:
    """One line per activation, newest first; every cell through render.visible."""
    return render.table(
        ["id", "state", "status", "phone", "service", "opened", "ends", "finished"],
        [
            [
                a.activation_id,
                a.state.value,
                _status_text(a),
                a.phone,
                a.service,
                render.when(a.opened_at),
                ("in " + render.age(now, a.ends_at)) if a.ends_at > now else render.when(a.ends_at),
                render.when(a.finished_at),
            ]
            for a in found
        ],
    )


def show_text(a: Activation) -> str:
    lines = []
    for key, value in activation_json(a).items():
        if key == "status" and a.status is not None:
            value = _status_text(a)
        elif key.endswith("_at") and isinstance(value, float):
            value = render.when(value)
        lines.append(f"{key:13} {render.visible(str(value))}")
    return "\n".join(lines)


# --- finish -------------------------------------------------------------------------------


async def finish(args: argparse.Namespace, cfg: Config) -> int:
    status = FinishStatus(args.status)
    from gateway.daemon import StoreLocked, lock_store

    try:
        fd = lock_store(cfg.store.path)
    except StoreLocked:
        if cfg.partner is None:
            # No desk in the daemon: the store is the only copy, and the writer is shared.
            return await _finish_in_store(cfg, args.activation_id, status)
        return await _finish_through_daemon(cfg, args.activation_id, status)
    try:
        return await _finish_in_store(cfg, args.activation_id, status)
    finally:
        os.close(fd)


async def _finish_in_store(cfg: Config, activation_id: int, status: FinishStatus) -> int:
    outbox = await Outbox.open(
        cfg.store.path, node=cfg.ids.node, nodes=cfg.ids.nodes, create=False, migrate=False
    )
    try:
        book = PartnerBook(outbox)
        await book.start()
        services = cfg.partner.services if cfg.partner is not None else ()
        desk = Desk(store=book, services=services, clock=time.time)
        desk.load(await book.activations(), await book.ledger())
        before = desk.activation(activation_id)
        answer = await desk.finish(FinishActivation(False, activation_id, status, None))
        return _report(activation_id, status, answer, before)
    finally:
        await outbox.close()


async def _finish_through_daemon(cfg: Config, activation_id: int, status: FinishStatus) -> int:
    assert cfg.partner is not None
    host, port = local_address(cfg.partner.listen)
    tls = _client_tls(cfg.partner.tls_cert) if cfg.partner.tls_cert else None
    scheme = "https" if tls else "http"
    url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}/finishActivation"
    body = {
        "action": "FINISH_ACTIVATION",
        "activationId": activation_id,
        "status": int(status),
        "key": cfg.partner.key or cfg.upstream.api_key,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as session,
            session.post(url, json=body, ssl=tls if tls is not None else False) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as e:
        raise GatewayError(
            f"the daemon runs, but its partner listener ({scheme}://{host}:{port}) did not answer:"
            f" {type(e).__name__} {e}. Is 127.0.0.1 (or ::1) in [partner] allow?"
        ) from e
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"status": "ERROR", "error": f"HTTP {response.status}"}
    if not isinstance(answer, dict):
        answer = {"status": "ERROR", "error": f"HTTP {response.status}"}
    print("(sent to the running daemon's partner listener)", file=sys.stderr)
    return _report(activation_id, status, answer, None)


def _client_tls(cert_file: str) -> ssl.SSLContext:
    """Trust exactly the listener's own certificate: the call goes to 127.0.0.1, which is not
    the name in the certificate, so the name is not checked, the certificate itself is."""
    context = ssl.create_default_context(cafile=cert_file)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf as its own anchor
    context.check_hostname = False
    return context


def _report(
    activation_id: int, status: FinishStatus, answer: dict[str, Any], before: Activation | None
) -> int:
    if answer.get("status") == "SUCCESS":
        if before is not None and before.status is not None:
            print(
                f"activation {activation_id}: already finished with status"
                f" {_status_text(before)}; nothing changed"
            )
        else:
            print(
                f"activation {activation_id}: finished, status {int(status)} {STATUS_NAMES[status]}"
            )
        return 0
    error = render.visible(str(answer.get("error", answer)))
    if error == "NO_ACTIVATION":
        print(f"sms-gateway: no activation {activation_id}", file=sys.stderr)
    else:
        print(f"sms-gateway: activation {activation_id} not finished: {error}", file=sys.stderr)
    return 1
