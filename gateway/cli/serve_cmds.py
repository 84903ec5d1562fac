"""`sms-gateway stand-in`: serve the stand-in PUSH_SMS endpoint until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from gateway.errors import GatewayError
from gateway.play.standin import StandIn


async def stand_in(args: argparse.Namespace) -> int:
    server = StandIn(
        key=args.key,
        active_phones=args.active,
        bad_senders=args.bad_service,
        rate_limit=args.rate,
        keep=1000,
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
