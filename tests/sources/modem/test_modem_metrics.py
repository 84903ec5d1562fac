"""The modem gauges the alert rules read (deploy/prometheus/alerts.yml), set by a real Modem on a
simulated modem's pty: signal, registration, SIM storage, and no stale signal reading."""

from __future__ import annotations

import math

from gateway.metrics import Metrics
from tests.sources.modem.conftest import SCANNING, FakeFactory, LogWatch, ModemFactory


async def test_the_gauges_follow_signal_registration_and_storage(
    fakes: FakeFactory, modems: ModemFactory, metrics: Metrics, logs: LogWatch
) -> None:
    fake = fakes(capacity=30)
    modem = modems(fake, settings=SCANNING)  # signal, registration and storage read every 0.3 s

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"sms_gateway_modem_{name}", {"modem": modem.name})

    await fake.wait_until(lambda: sample("signal") == -73)  # AT+CSQ 20
    assert sample("up") == 1
    assert sample("registered") == 1
    assert sample("storage_capacity") == 30
    assert sample("storage_used") == 0

    # AT+CSQ 99 (not known): no reading, not the last one.
    fake.rssi = 99
    await fake.wait_until(lambda: math.isnan(sample("signal") or 0.0))
    assert modem.status().signal_dbm is None

    # Searching (+CREG 2): not registered, while still up.
    fake.set_registration(2)
    await fake.wait_until(lambda: sample("registered") == 0)
    assert sample("up") == 1

    fake.rssi = 10
    fake.set_registration(1)
    await fake.wait_until(lambda: sample("signal") == -93 and sample("registered") == 1)

    # Unplugged: down, not registered, and no reading kept.
    fake.unplug()
    await logs.wait("modem.port_unavailable", modem=modem.name)
    assert sample("up") == 0
    assert sample("registered") == 0
    assert math.isnan(sample("signal") or 0.0)
