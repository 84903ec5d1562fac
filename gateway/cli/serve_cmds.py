"""`sms-gateway stand-in`: serve the stand-in PUSH_SMS endpoint until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from gateway.errors import GatewayError, UsageError
from gateway.play.standin import PartnerPlay, StandIn

PARTNER_KEY_ENV = "SMS_GATEWAY_STANDIN_PARTNER_KEY"


def partner_play(args: argparse.Namespace) -> PartnerPlay | None:
    """Onlinesim's side, when --partner-url is given; the key from the option, a file or the
    environment (a key on the command line shows in `ps`)."""
    if not args.partner_url:
        if args.order or args.partner_key or args.partner_key_file:
            raise UsageError("stand-in: --order and --partner-key need --partner-url")
        return None
    key = args.partner_key or os.environ.get(PARTNER_KEY_ENV, "")
    if args.partner_key_file:
        try:
            key = Path(args.partner_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"stand-in: --partner-key-file: cannot read it: {e}") from e
    if not key:
        raise UsageError(
            f"stand-in: --partner-url needs the partner key: --partner-key-file PATH,"
            f" {PARTNER_KEY_ENV} or --partner-key"
        )
    try:
        return PartnerPlay(
            args.partner_url,
            key,
            service=args.order,
            country=args.country,
            operator=args.operator,
            services_interval=args.services_every,
            order_interval=args.order_every,
            activation_time=args.activation_time,
            finish_after=args.finish_after,
        )
    except ValueError as e:
        raise UsageError(f"stand-in: {e}") from e


async def stand_in(args: argparse.Namespace) -> int:
    server = StandIn(
        key=args.key,
        active_phones=args.active,
        bad_senders=args.bad_service,
        rate_limit=args.rate,
        keep=1000,
        partner=partner_play(args),
    )
    try:
        await server.start(args.host, args.port)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise GatewayError(
            f"stand-in: cannot listen on {args.host}:{args.port}: {reason};"
            " choose another port with --port"
        ) from e
    print(f"stand-in PUSH_SMS listening: http://{args.host}:{server.port}{server.path}", flush=True)
    print(f"what it received: http://{args.host}:{server.port}/received", flush=True)
    if server.partner is not None:
        print(
            f"playing Onlinesim toward {server.partner.url}:"
            f" its activations http://{args.host}:{server.port}/activations,"
            f" order one: curl -X POST http://{args.host}:{server.port}/order"
            + (' -d \'{"service": "vk"}\'' if not server.partner.service else ""),
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
