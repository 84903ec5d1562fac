"""BindCounters: one SMPP bind's series in a real registry, labelled by source and bind."""

from __future__ import annotations

from pathlib import Path

from gateway import config
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.sources.smpp.client import SmppClient
from gateway.sources.smpp.counters import OUTCOMES, BindCounters
from gateway.sources.smpp.inbound import Inbound
from gateway.sources.smpp.session import BindStatus

SOURCE = "smpp-server:box1"


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_messages_and_errors_count_under_their_bind_only() -> None:
    metrics = Metrics()
    one = BindCounters(metrics, SOURCE, "box1#1")
    two = BindCounters(metrics, SOURCE, "box1#2")
    one.message("stored")
    two.message("stored")
    two.message("stored")
    two.error("frame")
    messages = "sms_gateway_smpp_messages_total"
    assert sample(metrics, messages, source=SOURCE, bind="box1#1", outcome="stored") == 1
    assert sample(metrics, messages, source=SOURCE, bind="box1#2", outcome="stored") == 2
    errors = "sms_gateway_smpp_errors_total"
    assert sample(metrics, errors, source=SOURCE, bind="box1#2", kind="frame") == 1
    assert sample(metrics, errors, source=SOURCE, bind="box1#1", kind="frame") is None


def test_every_outcome_is_shown_at_zero_from_the_start() -> None:
    metrics = Metrics()
    BindCounters(metrics, SOURCE, "box1#1")
    for outcome in OUTCOMES:
        labels = {"source": SOURCE, "bind": "box1#1", "outcome": outcome}
        assert sample(metrics, "sms_gateway_smpp_messages_total", **labels) == 0


def test_in_flight_reads_the_watched_status_at_scrape_time_and_idle_is_zero() -> None:
    metrics = Metrics()
    counters = BindCounters(metrics, SOURCE, "box1#1")
    labels = {"source": SOURCE, "bind": "box1#1"}
    assert sample(metrics, "sms_gateway_smpp_in_flight", **labels) == 0
    status = BindStatus(SOURCE)
    counters.watch(status)
    status.in_flight = 7
    assert sample(metrics, "sms_gateway_smpp_in_flight", **labels) == 7
    counters.idle()
    assert sample(metrics, "sms_gateway_smpp_in_flight", **labels) == 0
    later = BindStatus(SOURCE)  # the slot's next session
    counters.watch(later)
    later.in_flight = 2
    assert sample(metrics, "sms_gateway_smpp_in_flight", **labels) == 2


async def test_a_clients_counters_carry_its_name_as_the_bind(tmp_path: Path) -> None:
    cfg = config.parse(
        {
            "upstream": {"url": "http://127.0.0.1:9/push", "api_key": "k"},
            "store": {"path": str(tmp_path / "outbox.sqlite3")},
            "smpp_client": [
                {"name": "op1", "host": "127.0.0.1", "system_id": "esme1", "password": "pw"}
            ],
        }
    )
    metrics = Metrics()
    outbox = await Outbox.open(cfg.store.path)
    try:
        client = SmppClient(cfg.smpp_client[0], Inbound(Intake(outbox, metrics)), metrics)
        assert (client.counters.source, client.counters.bind) == ("smpp-client:op1", "op1")
        client.counters.error("connect")
        labels = {"source": "smpp-client:op1", "bind": "op1"}
        assert sample(metrics, "sms_gateway_smpp_errors_total", **labels, kind="connect") == 1
        assert sample(metrics, "sms_gateway_smpp_in_flight", **labels) == 0
        assert sample(metrics, "sms_gateway_smpp_binds", source="smpp-client:op1") == 0
        assert client.check().details["bind"] == "op1"
    finally:
        await outbox.close()
