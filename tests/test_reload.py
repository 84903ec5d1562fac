"""SIGHUP to a real daemon: the config is read again, what the reading warns about is said, and
new [[sim]] entries apply to every source at once (gateway boxes and SMPP as modems)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.play.standin import StandIn
from gateway.sources.smpp.pdu import Command, Status
from tests.fakes.daemon import API_KEY, DaemonProcess
from tests.sources.smpp.peer import Peer, sm
from tests.sources.smpp.test_kill9 import free_port


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


DINSTAR_TOKEN = "dinstar-token-0123456789"


def dinstar_push(sms_id: int, port: int, text: str) -> dict[str, Any]:
    """A push as a Dinstar box sends it: one SMS received on `port`."""
    return {
        "sn": "da00-0030-1901-2817",
        "sms": [{"incoming_sms_id": sms_id, "port": port, "number": "6717", "text": text}],
    }


async def post_dinstar(daemon: DaemonProcess, box: str, body: dict[str, Any]) -> None:
    status, answer = await daemon.request(
        "POST", f"/v1/inbound/dinstar/{box}", token=None, params={"token": DINSTAR_TOKEN}, json=body
    )
    assert (status, answer) == (200, {"error_code": 200})


def add_to_config(daemon: DaemonProcess, tables: str) -> None:
    with daemon.config_path.open("a", encoding="utf-8") as f:
        f.write(tables)


def pushed_to(standin: StandIn, phone: str) -> list[dict[str, Any]]:
    return [p.body for p in standin.pushes if p.body and p.body.get("phone") == phone]


async def test_a_sim_added_for_a_box_port_applies_to_its_next_sms_after_a_reload(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    """An operator sees port 3 of a Dinstar box held for want of a phone, adds its [[sim]] and
    reloads: the box's next SMS on that port must carry the number, without a restart."""
    boxes = f'[[dinstar]]\nname = "box-1"\ntoken = "{DINSTAR_TOKEN}"\n'
    daemon: DaemonProcess = await daemon_factory(extra=boxes)
    await post_dinstar(daemon, "box-1", dinstar_push(1, 3, "before the sim"))
    held = await daemon.logged("sms.held", source="dinstar:box-1", reason="no_phone")

    add_to_config(
        daemon, '\n[[sim]]\nsource = "dinstar:box-1"\nport = "3"\nphone = "79001110003"\n'
    )
    daemon.signal(signal.SIGHUP)
    reloaded = await daemon.logged("daemon.reloaded")
    assert reloaded["sims"] == 1
    await post_dinstar(daemon, "box-1", dinstar_push(2, 3, "after the sim"))
    await standin.wait_for(lambda s: pushed_to(s, "79001110003"), timeout=10)
    (pushed,) = pushed_to(standin, "79001110003")
    assert pushed["text"] == "after the sim" and pushed["smsId"] != held["sms_id"]
    # Which port the held one came in on is in its raw only: it waits for `messages retry
    # --phone` (the docs say so), it is not released by a port's entry.
    assert not [e for e in daemon.logs() if e.get("event") == "sms.released"]
    assert await daemon.stop() == 0


async def test_a_sim_added_for_a_whole_box_releases_what_it_held_after_a_reload(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    """A box with one number for all its ports: once its [[sim]] names that number, what it
    held for want of a phone goes out on the reload, as it would at start."""
    boxes = f'[[dinstar]]\nname = "box-2"\ntoken = "{DINSTAR_TOKEN}"\n'
    daemon: DaemonProcess = await daemon_factory(extra=boxes)
    await post_dinstar(daemon, "box-2", dinstar_push(1, 5, "held until the reload"))
    held = await daemon.logged("sms.held", source="dinstar:box-2", reason="no_phone")

    add_to_config(daemon, '\n[[sim]]\nsource = "box-2"\nphone = "79001110005"\n')
    daemon.signal(signal.SIGHUP)
    reloaded = await daemon.logged("daemon.reloaded")
    assert reloaded["released_from_boxes"] == 1
    released = await daemon.logged("sms.released", sms_id=held["sms_id"])
    assert released["phone"] == "79001110005"
    await standin.wait_for(lambda s: pushed_to(s, "79001110005"), timeout=10)
    (pushed,) = pushed_to(standin, "79001110005")
    assert (pushed["smsId"], pushed["text"]) == (held["sms_id"], "held until the reload")

    await post_dinstar(daemon, "box-2", dinstar_push(2, 6, "after the reload"))
    await standin.wait_for(lambda s: len(pushed_to(s, "79001110005")) == 2, timeout=10)
    assert await daemon.stop() == 0


async def test_a_sim_added_for_an_smpp_destination_applies_to_its_next_message_after_a_reload(
    daemon_factory: Callable[..., Any], standin: StandIn
) -> None:
    """A box bound over SMPP names its port in destination_addr ("port7"); with no [[sim]] for
    it the message is held. After the operator adds one and reloads, the next message to that
    port carries the number: the phone remembered per destination is forgotten on a reload."""
    port = free_port()
    server = f'[smpp_server]\nlisten = "127.0.0.1:{port}"\n\n'
    server += '[[smpp_server.account]]\nsystem_id = "box1"\npassword = "boxpw"\n'
    daemon: DaemonProcess = await daemon_factory(extra=server)
    box = Peer()
    await box.connect(port)
    try:
        assert (await box.bind("box1", "boxpw")).status == Status.ROK
        box.send_message(sm(1, b"before the sim", dst="port7", command=Command.SUBMIT_SM))
        h, _ = await box.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK
        await daemon.logged("sms.held", source="smpp-server:box1", reason="no_phone")

        add_to_config(
            daemon,
            '\n[[sim]]\nsource = "smpp-server:box1"\nport = "port7"\nphone = "79001110007"\n',
        )
        daemon.signal(signal.SIGHUP)
        await daemon.logged("daemon.reloaded")
        box.send_message(sm(2, b"after the sim", dst="port7", command=Command.SUBMIT_SM))
        h, _ = await box.read_until(Command.SUBMIT_SM_RESP)
        assert h.status == Status.ROK
        await standin.wait_for(lambda s: pushed_to(s, "79001110007"), timeout=10)
        (pushed,) = pushed_to(standin, "79001110007")
        assert pushed["text"] == "after the sim"
    finally:
        await box.close()
    assert await daemon.stop() == 0
