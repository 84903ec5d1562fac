"""Commands that work on the store directly, with or without the daemon running."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from gateway.cli import render
from gateway.config import Config
from gateway.errors import DecodeError, GatewayError, StoreUnavailable, UsageError
from gateway.fields import FieldError, checked_incoming
from gateway.http.ingest import parse_body
from gateway.intake import Intake
from gateway.outbox import Attempt, Drop, Incoming, Message, Outbox, State


async def run(cmd: str, args: argparse.Namespace, cfg: Config) -> int:
    # Only migrate and ingest change the schema; reading commands never migrate a store
    # an older daemon may still be using.
    writes = cmd in ("migrate", "ingest")
    if cmd == "ingest":
        # Bad input is refused before the store is opened (or created): nothing to undo.
        items = ingest_items(args, cfg, time.time())
        if not items:
            print("sms-gateway: nothing to ingest", file=sys.stderr)
            return 0
    outbox = await Outbox.open(
        cfg.store.path,
        node=cfg.ids.node,
        nodes=cfg.ids.nodes,
        create=writes,
        migrate=writes,
        readonly=cmd == "status" or (cmd == "messages" and args.action != "retry"),
        new_store=cmd == "migrate" and args.new_store,
    )
    try:
        match cmd:
            case "migrate":
                print(f"{cfg.store.path}: schema up to date")
                return 0
            case "status":
                return await status(outbox, args, cfg)
            case "ingest":
                return await ingest(outbox, items)
            case "messages" if args.action == "retry" and args.phone is not None:
                return await give_phone(outbox, args, cfg)
            case "messages":
                return await messages(outbox, args)
        raise GatewayError(f"unknown command {cmd}")
    finally:
        await outbox.close()


async def status(outbox: Outbox, args: argparse.Namespace, cfg: Config) -> int:
    now = time.time()
    summary = await outbox.summary()
    drops = await outbox.recent_drops(10)
    oldest = summary.oldest_queued_received_at
    counts = {s.value: summary.counts.get(s, 0) for s in State}
    data = {
        "store": cfg.store.path,
        "messages": counts,
        "oldest_queued_age": round(now - oldest, 3) if oldest is not None else None,
        "last_delivered_at": summary.last_delivered_at,
        "recent_drops": [
            {
                "smsId": d.sms_id,
                "state": d.state.value,
                "code": d.code,
                "phone": d.phone,
                "phoneFrom": d.phone_from,
                "at": d.finished_at,
            }
            for d in drops
        ],
    }
    if args.json:
        print(render.dumps(data))
        return 0
    print(status_text(cfg.store.path, counts, oldest, summary.last_delivered_at, drops, now))
    return 0


def status_text(
    store: str,
    counts: dict[str, int],
    oldest: float | None,
    last_delivered: float | None,
    drops: Sequence[Drop],
    now: float,
) -> str:
    """`status` for people: every line and cell through render.visible (senders are untrusted)."""
    lines = [
        f"store: {render.visible(store)}",
        "messages: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        f"oldest queued: {render.age(oldest, now)} ago" if oldest else "oldest queued: -",
        f"last delivery: {render.when(last_delivered)}",
    ]
    if drops:
        lines.append("recent drops:")
        lines.append(
            render.table(
                ["smsId", "state", "code", "phone", "from", "at"],
                [
                    [
                        d.sms_id,
                        d.state.value,
                        d.code,
                        d.phone,
                        d.phone_from,
                        render.when(d.finished_at),
                    ]
                    for d in drops
                ],
            )
        )
    return "\n".join(lines)


def _message_json(m: Message) -> dict[str, Any]:
    data = dataclasses.asdict(m)
    data["state"] = m.state.value
    return data


async def messages(outbox: Outbox, args: argparse.Namespace) -> int:
    if args.action == "list":
        found = await outbox.list_messages(
            state=State(args.state) if args.state else None, phone=args.phone, limit=args.limit
        )
        if args.json:
            print(render.dumps([_message_json(m) for m in found]))
        else:
            print(list_text(found))
        return 0
    if args.action == "show":
        m = await outbox.get_message(args.sms_id)
        if m is None:
            print(f"sms-gateway: no message with smsId {args.sms_id}", file=sys.stderr)
            return 1
        attempts = await outbox.attempts_for(m.sms_id)
        if args.json:
            data = _message_json(m)
            data["attempts"] = [
                {**dataclasses.asdict(a), "outcome": a.outcome.value} for a in attempts
            ]
            print(render.dumps(data))
            return 0
        print(show_text(m, attempts))
        return 0
    # retry
    ids = await outbox.requeue(
        sms_ids=args.sms_ids, state=State(args.state) if args.state else None, since=args.since
    )
    print(f"queued again: {len(ids)}" + (f" ({', '.join(map(str, ids))})" if ids else ""))
    if args.sms_ids and len(ids) < len(args.sms_ids):
        missing = sorted(set(args.sms_ids) - set(ids))
        print(
            f"not dropped or expired (left alone): {', '.join(map(str, missing))}", file=sys.stderr
        )
    return 0


async def give_phone(outbox: Outbox, args: argparse.Namespace, cfg: Config) -> int:
    """`messages retry SMSID... --phone NUMBER`: the messages named that are held `no_phone`
    get the number and are queued, in one transaction, or with [partner] on go as the
    activation rule says (the running daemon's worker finds queued ones within 1 s, as after
    any retry). Any other smsId named is left alone and named on stderr with why."""
    phone = args.phone
    intake = Intake(outbox)
    if cfg.partner is not None:
        from gateway.outbox.partner import PartnerBook
        from gateway.partner.desk import Desk

        # The daemon's own lookup (its desk's open activations), from what it committed.
        book = PartnerBook(outbox, read_mark=False)
        desk = Desk(store=book, services=cfg.partner.services, clock=time.time)
        desk.load(await book.activations(open_only=True), {})
        intake = Intake(
            outbox,
            activation_for=desk.open_activation_for,
            push_without_activation=cfg.partner.push_without_activation,
        )
    try:
        given = await intake.give_phone(args.sms_ids, phone)
    except FieldError as e:  # _phone checked it already; the same rule, said the same way
        raise UsageError(f"--phone: {e.problem}") from None
    released = given.released.values()
    queued = [m for m in released if m.state is State.QUEUED]
    print(f"given phone {phone} and queued: {len(queued)}{_ids(queued)}")
    for activation_id in sorted({m.activation_id for m in queued if m.activation_id is not None}):
        pushed_for = [str(m.sms_id) for m in queued if m.activation_id == activation_id]
        print(f"  pushed for activation {activation_id}: {', '.join(pushed_for)}")
    held = [m for m in released if m.state is State.HELD]
    if held:
        print(
            f"given phone {phone}, held no_activation (no activation was open on it when they"
            f" came; `messages retry SMSID` pushes one anyway): {len(held)}{_ids(held)}"
        )
    if given.left:
        why = ", ".join(f"{i} ({_why_not(m)})" for i, m in given.left.items())
        print(f"not changed (only messages held no_phone take --phone): {why}", file=sys.stderr)
    return 0


def _ids(found: Sequence[Message]) -> str:
    return f" ({', '.join(str(m.sms_id) for m in found)})" if found else ""


def _why_not(m: Message | None) -> str:
    if m is None:
        return "no such message"
    if m.hold_reason is not None:
        return f"{m.state.value} {m.hold_reason.value}"
    return m.state.value


def list_text(found: Sequence[Message]) -> str:
    """`messages list` for people: one line per message, whatever its sender and text hold.
    An `activation` column when any message was accepted for one ([partner] on)."""
    partner = any(m.activation_id is not None for m in found)
    return render.table(
        ["smsId", "state", "phone", "from", "received", "tries", "code"]
        + (["activation"] if partner else [])
        + ["text"],
        [
            [
                m.sms_id,
                m.state.value,
                m.phone,
                m.phone_from,
                render.when(m.received_at),
                m.attempts,
                m.final_code or m.hold_reason,  # a held message has no code: why it is held
                *([_activation(m)] if partner else []),
                render.one_line(m.text),
            ]
            for m in found
        ],
    )


def _activation(m: Message) -> str | None:
    if m.activation_id is None:
        return None
    return f"{m.activation_id} ({m.rent_service})" if m.rent_service else str(m.activation_id)


def show_text(m: Message, attempts: Sequence[Attempt]) -> str:
    """`messages show` for people: one line per field, then the attempts as a table."""
    lines = []
    for key, value in _message_json(m).items():
        if key in ("activation_id", "rent_service") and value is None:
            continue  # pushed without an activation (or [partner] off): nothing to say
        if key.endswith("_at") and isinstance(value, float):
            value = render.when(value)
        lines.append(f"{key:12} {render.visible(str(value))}")
    lines.append(f"attempts ({len(attempts)}):")
    lines.append(
        render.table(
            ["time", "took", "outcome", "http", "code", "error", "body"],
            [
                [
                    render.when(a.started_at),
                    f"{a.duration:.3f}s",
                    a.outcome.value,
                    a.http_status,
                    a.code,
                    a.error,
                    render.one_line(a.body or "", 60),
                ]
                for a in attempts
            ],
        )
    )
    return "\n".join(lines)


def ingest_items(args: argparse.Namespace, cfg: Config, now: float) -> list[Incoming]:
    """What `ingest` was given, checked; UsageError (exit 2) names what is wrong."""
    names: dict[str, str] = {}
    try:
        if args.gammu:
            from gateway.sources.gammu import FIELD_NAMES, messages_from_gammu

            names = FIELD_NAMES
            items = messages_from_gammu(os.environ, args.files, cfg.gammu, args.phone, now)
        elif args.smstools:
            from gateway.sources.smstools import (
                FIELD_NAMES,
                message_from_smstools,
                read_message_file,
            )

            names = FIELD_NAMES
            data = read_message_file(args.smstools)
            items = [message_from_smstools(data, cfg.smstools, args.phone, now, args.smstools)]
        else:
            names = {"phone": "--phone", "phone_from": "--from", "text": "--text"}
            items = [_plain_item(args, now)]
        for item in items:  # the field rules Intake applies, before the store is opened
            checked_incoming(item, now)
    except FieldError as e:  # bad input, never a store fault: the hook must not retry it
        raise UsageError(f"ingest: {names.get(e.field, e.field)}: {e.problem}") from None
    except DecodeError as e:
        raise UsageError(f"ingest: {e}") from None
    except OSError as e:
        raise UsageError(f"ingest: cannot read {e.filename}: {e.strerror}") from None
    return items


async def ingest(outbox: Outbox, items: list[Incoming]) -> int:
    """Exit 0 only once committed: hooks (gammu, smstools) keep the message on anything else."""
    try:
        accepted = await Intake(outbox).accept(items)
    except StoreUnavailable as e:
        print(f"sms-gateway: not committed: {e}", file=sys.stderr)
        return 1
    except FieldError as e:  # checked before the store was opened; a usage error all the same
        print(f"sms-gateway: ingest: {e}", file=sys.stderr)
        return 2
    for a in accepted:
        print(a.sms_id)
    return 0


def _plain_item(args: argparse.Namespace, now: float) -> Incoming:
    text = args.text if args.text is not None else sys.stdin.read()
    payload: dict[str, Any] = {"phone": args.phone, "phoneFrom": args.phone_from, "text": text}
    if args.source_ref:
        payload["id"] = args.source_ref
    if args.received_at:
        payload["receivedAt"] = args.received_at
    try:
        return parse_body(payload, source="cli", now=now).items[0]
    except FieldError as e:
        flag = {
            "phone": "--phone",
            "phoneFrom": "--from",
            "id": "--id",
            "text": "--text",
            "receivedAt": "--received-at",
        }.get(e.field, e.field)
        raise UsageError(f"{flag}: {str(e).split(': ', 1)[1]}") from None
