"""SIGHUP to a real daemon: the config is read again, and what the reading warns about is said."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.daemon import API_KEY, DaemonProcess


async def test_a_reload_logs_each_config_warning(
    tmp_path: Path, daemon_factory: Callable[..., Any]
) -> None:
    """A secret file others can read is a warning on stderr at start; a SIGHUP that reads the
    config again must say it too, or the operator who loosened the mode never hears of it."""
    key_file = tmp_path / "api_key"
    key_file.write_text(API_KEY, encoding="utf-8")
    key_file.chmod(0o600)
    daemon: DaemonProcess = await daemon_factory(start=False)
    text = daemon.config_path.read_text(encoding="utf-8")
    text = text.replace(f"api_key = {json.dumps(API_KEY)}", f'api_key_file = "{key_file}"')
    daemon.config_path.write_text(text, encoding="utf-8")
    await daemon.start()
    key_file.chmod(0o644)
    daemon.signal(signal.SIGHUP)
    await daemon.logged("daemon.reloaded")
    warning = await daemon.logged("config.warning")
    assert warning["level"] == "warning"
    assert str(key_file) in warning["warning"] and "chmod o-r" in warning["warning"]
    assert API_KEY not in daemon.log_text()
    assert await daemon.stop() == 0
