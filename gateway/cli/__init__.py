"""The `sms-gateway` command: argument parsing and exit codes (0 ok, 1 runtime failure, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from gateway import __version__, config, logs
from gateway.cli import render, store_cmds
from gateway.errors import ConfigError, GatewayError, UsageError
from gateway.fields import normalize_phone
from gateway.outbox import State

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-gateway",
        description="Receives SMS from modems and gateways; delivers them to Onlinesim PUSH_SMS.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="config file (default: $SMS_GATEWAY_CONFIG, else /etc/sms-gateway/config.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the daemon until SIGTERM")
    sub.add_parser("check-config", parents=[common], help="validate and print the config")
    p = sub.add_parser("migrate", parents=[common], help="apply pending store migrations")
    p.add_argument(
        "--new-store",
        action="store_true",
        help="replace a lost (missing or empty) store with an empty one; smsIds continue",
    )
    p = sub.add_parser("status", parents=[common], help="what the store holds")
    p.add_argument("--json", action="store_true")

    msgs = sub.add_parser("messages", help="list, show or retry messages")
    msub = msgs.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = msub.add_parser("list", parents=[common], help="messages, newest first")
    # Every state the store has, `held` included (kept but never pushed: see its hold reason).
    p.add_argument("--state", choices=[s.value for s in State])
    p.add_argument("--phone", type=_phone, help="as /v1/sms takes it, e.g. '+7 900 123-45-67'")
    p.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true")
    p = msub.add_parser("show", parents=[common], help="one message with its attempts")
    p.add_argument("sms_id", type=int, metavar="SMSID")
    p.add_argument("--json", action="store_true")
    p = msub.add_parser(
        "retry",
        parents=[common],
        help="queue dropped/expired messages again (and, by SMSID, ones held no_activation);"
        " with --phone, give messages held no_phone their number and queue them",
    )
    p.add_argument("sms_ids", type=int, nargs="*", metavar="SMSID")
    p.add_argument("--state", choices=["dropped", "expired"])
    p.add_argument("--since", metavar="DURATION", help="finished within, e.g. 3600, 90m, 2h, 1d")
    p.add_argument(
        "--phone",
        type=_phone,
        metavar="NUMBER",
        help="the number that received them, as /v1/sms takes it: only the SMSIDs named that"
        " are held no_phone take it; they are queued (with [partner]: as the activation rule says)",
    )

    p = sub.add_parser("ingest", parents=[common], help="enqueue one message and exit")
    p.add_argument("--phone", help="the number that received the SMS, as /v1/sms takes it")
    p.add_argument("--from", dest="phone_from", help="the sender as received")
    p.add_argument("--text", help="the text (read from stdin when omitted)")
    p.add_argument("--id", dest="source_ref", help="the caller's own id: the same id twice is one")
    p.add_argument("--received-at", help="ISO-8601 time of receipt (default: now)")
    hook = p.add_mutually_exclusive_group()
    hook.add_argument(
        "--gammu",
        action="store_true",
        help="gammu-smsd RunOnReceive: read its environment and the files named",
    )
    hook.add_argument(
        "--smstools", metavar="FILE", help="smstools3 eventhandler: an incoming message file"
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="with --gammu: the inbox files")

    p = sub.add_parser("sims", parents=[common], help="the SIM inventory with its ledger")
    p.add_argument("--json", action="store_true")
    ssub = p.add_subparsers(dest="action", metavar="ACTION")
    d = ssub.add_parser(
        "discover",
        parents=[common],
        help="find each SIM's own number now (reads secrets)",
        description="AT+CNUM, the own-number phonebook, then [[partner.number_query]]. With the"
        " daemon running it is asked (http.status_token); otherwise the ports are opened here.",
    )
    d.add_argument("ports", nargs="*", metavar="PORT", help="modem names or ports (default: all)")

    acts = sub.add_parser("activations", help="Onlinesim's activations (the partner side)")
    asub = acts.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = asub.add_parser("list", parents=[common], help="activations, newest first")
    p.add_argument("--open", action="store_true", help="only those still open")
    p.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true")
    p = asub.add_parser("show", parents=[common], help="one activation")
    p.add_argument("activation_id", type=int, metavar="ID")
    p.add_argument("--json", action="store_true")
    p = asub.add_parser(
        "finish",
        parents=[common],
        help="settle one by hand, as Onlinesim's FINISH_ACTIVATION would (reads secrets)",
        description="Finish an activation as Onlinesim's FINISH_ACTIVATION does; idempotent."
        " With the daemon running the call goes to its partner listener with the partner key,"
        " so this command reads the config's secrets; otherwise the store is changed directly.",
    )
    p.add_argument("activation_id", type=int, metavar="ID")
    p.add_argument(
        "--status",
        type=int,
        required=True,
        choices=(1, 3, 4, 5),
        help="1 not for this service, 3 sold, 4 cancelled, 5 refunded",
    )

    modems = sub.add_parser("modems", help="work with the serial modems")
    modems_sub = modems.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = modems_sub.add_parser(
        "probe", parents=[common], help="identify modems and print [[modem]]/[[sim]] tables"
    )
    p.add_argument("ports", nargs="*", metavar="PORT", help="default: the configured ports")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per AT command")

    p = sub.add_parser("stand-in", parents=[common], help="a local PUSH_SMS endpoint for trials")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--key", help="accept only this API key (default: any)")
    p.add_argument(
        "--active",
        action="append",
        default=[],
        metavar="PHONE",
        help="phones with an active operation (default: all); others get NO_OPERATION",
    )
    p.add_argument(
        "--bad-service",
        action="append",
        default=[],
        metavar="SENDER",
        help="senders answered BAD_SERVICE",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="requests per second before 429 TOO_MANY_ATTEMPTS (0: no limit)",
    )
    p.add_argument("--quiet", action="store_true", help="log warnings only, not every push")
    p.add_argument(
        "--partner-url",
        metavar="URL",
        help="also play Onlinesim toward this partner API ([partner] listen, e.g."
        " http://127.0.0.1:8081): GET_SERVICES, GET_NUMBER, FINISH_ACTIVATION; then only"
        " numbers it ordered (and --active ones) get 200, others NO_OPERATION",
    )
    p.add_argument(
        "--partner-key",
        metavar="KEY",
        help="the partner key (visible in ps: prefer --partner-key-file or the environment"
        " variable SMS_GATEWAY_STANDIN_PARTNER_KEY)",
    )
    p.add_argument("--partner-key-file", metavar="PATH", help="read the partner key from a file")
    p.add_argument("--order", metavar="SERVICE", help="the service GET_NUMBER orders")
    p.add_argument("--country", help="the country ordered (default: the one offering most)")
    p.add_argument("--operator", default="any", help="the operator ordered (default: any)")
    p.add_argument(
        "--order-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="one GET_NUMBER this often (default 0: only on POST /order)",
    )
    p.add_argument(
        "--services-every",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="GET_SERVICES this often (default 120, as Onlinesim; 0: only on POST /services)",
    )
    p.add_argument(
        "--activation-time",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="FINISH 4 when no SMS came this long after GET_NUMBER (default 900)",
    )
    p.add_argument(
        "--finish-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="FINISH 3 this long after the first SMS (default 0)",
    )
    p = sub.add_parser("demo", parents=[common], help="everything on one machine, no hardware")
    p.add_argument("--port", type=int, default=8080, help="the daemon's HTTP port (0: any free)")
    p.add_argument("--dir", default="demo-data", help="where the demo keeps its store and config")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _phone(text: str) -> str:
    """The number as stored (digits), by the same rule as /v1/sms's `phone`."""
    digits = normalize_phone(text)
    if digits is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a phone number: expected 3 to 20 digits"
            " (+, spaces, dashes, dots, parentheses allowed)"
        )
    return digits


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
        return code
    except BrokenPipeError:
        # The reader went away (`status | head`): stop quietly, as other Unix tools do.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILURE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, UsageError) as e:
        print(f"sms-gateway: {e}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as e:
        print(f"sms-gateway: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _load(args: argparse.Namespace, *, read_secrets: bool = True) -> config.Config:
    cfg = config.load(args.config or config.default_path(), read_secrets=read_secrets)
    for warning in cfg.warnings:  # before logging is set up; stderr reaches journald too
        print(f"sms-gateway: warning: {warning}", file=sys.stderr)
    return cfg


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "stand-in":
        logs.configure("warning" if args.quiet else "info", "console")
        from gateway.cli.serve_cmds import stand_in

        return asyncio.run(stand_in(args))
    if cmd == "demo":
        logs.configure("warning", "console")
        from gateway.play.demo import run_demo

        return asyncio.run(run_demo(port=args.port, directory=args.dir))
    if cmd == "modems":
        logs.configure("warning", "console")
        from gateway.cli.modem_cmds import probe

        probe_cfg = None
        if not args.ports:
            probe_cfg = _load(args, read_secrets=True)
        return asyncio.run(probe(args, probe_cfg))
    # Store commands (status, messages, ingest, migrate) need no credentials: hooks and
    # operators can run them without access to the service's API key.
    # `activations finish` may call the daemon's partner listener: it needs the partner key.
    finishing = cmd == "activations" and args.action == "finish"
    # `sims discover` asks the daemon with the status token, or opens the ports (PINs).
    finishing = finishing or (cmd == "sims" and args.action == "discover")
    cfg = _load(args, read_secrets=cmd in ("run", "check-config") or finishing)
    secrets = config.secret_values(cfg)  # every key the config marks secret
    if cmd == "check-config":
        print(f"# {cfg.source_path}: valid")
        print(render.toml(config.masked(cfg)), end="")
        return EXIT_OK
    if cmd == "run":
        logs.configure(cfg.log.level, cfg.log.format, secrets, once=True)
        from gateway.daemon import Daemon

        return asyncio.run(Daemon(cfg).run())
    # `messages retry --phone` changes what is pushed, by hand: its sms.released lines show.
    giving_phone = cmd == "messages" and args.action == "retry" and args.phone is not None
    logs.configure("info" if giving_phone else "warning", "console", secrets)
    if cmd == "activations":
        from gateway.cli import partner_cmds

        return asyncio.run(partner_cmds.run(args, cfg))
    if cmd == "sims":
        from gateway.cli import sims_cmds

        return asyncio.run(sims_cmds.run(args, cfg))
    if giving_phone and (args.state or args.since is not None or not args.sms_ids):
        raise UsageError(
            "messages retry --phone: name the messages held no_phone by SMSID"
            " (--state and --since do not go with --phone)"
        )
    if cmd == "messages" and args.action == "retry" and not args.sms_ids and not args.state:
        raise UsageError("messages retry: give SMSIDs or --state dropped|expired")
    if getattr(args, "since", None) is not None:
        args.since = parse_duration(args.since)
    return asyncio.run(store_cmds.run(cmd, args, cfg))


def parse_duration(text: str) -> float:
    """'90' seconds, or with a unit: 90s, 15m, 2h, 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    scale = units.get(t[-1:])
    number = t[:-1] if scale else t
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise UsageError(
            f"--since: {text!r} is not a duration such as 3600, 90m, 2h or 1d"
        ) from None
    if value < 0:
        raise UsageError("--since: must not be negative")
    return value
