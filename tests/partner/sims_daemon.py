"""The real daemon (`gateway.daemon.Daemon.run`) with N SIMs fed to its partner side through the
inventory's listener interface, for subprocess tests until simulated modems feed the inventory.

Run as a `DaemonProcess` prefix: `python -m tests.partner.sims_daemon N -- python -m gateway run
-c CONFIG`; everything after `--` is read for `-c CONFIG` only.
"""

from __future__ import annotations

import asyncio
import sys

from gateway import config, logs
from gateway.daemon import Components, Daemon
from tests.partner.test_service import records


class SimsDaemon(Daemon):
    def __init__(self, cfg: config.Config, sims: int) -> None:
        super().__init__(cfg)
        self._sims = sims

    async def _start_parts(self, p: Components) -> None:
        await super()._start_parts(p)
        assert p.partner is not None, "the config has no [partner] table"
        p.partner.on_inventory(records(self._sims))


def main(argv: list[str]) -> int:
    sims = int(argv[0])
    rest = argv[argv.index("--") + 1 :]
    cfg = config.load(rest[rest.index("-c") + 1])
    logs.configure(cfg.log.level, cfg.log.format, config.secret_values(cfg), once=True)
    return asyncio.run(SimsDaemon(cfg, sims).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
