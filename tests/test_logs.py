"""Log lines (gateway/logs.py): one JSON object a line, UTC timestamps, secrets never shown."""

from __future__ import annotations

import errno
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage

from gateway import logs
from gateway.config import MASK

SECRETS = ["api-key-0123", "ingest-token-abc", "api-key"]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    out = io.StringIO()
    logs.configure("info", "json", secrets=SECRETS, stream=out)
    yield out
    structlog.configure(**saved)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_event_is_one_json_line_with_level_and_utc_timestamp(stream: io.StringIO) -> None:
    before = time.time()
    structlog.get_logger("t").info("sms.accepted", sms_id=7, phone_from="Банк")
    structlog.get_logger("t").debug("not shown at info")
    (line,) = lines(stream)
    assert (line["event"], line["level"], line["sms_id"], line["phone_from"]) == (
        "sms.accepted",
        "info",
        7,
        "Банк",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])
    stamped = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamped.tzinfo == UTC
    assert before - 0.001 <= stamped.timestamp() <= time.time() + 0.001
    assert "Банк" in stream.getvalue()  # raw UTF-8, not \u escapes


def test_a_secret_in_any_field_is_masked(stream: io.StringIO) -> None:
    structlog.get_logger("t").warning(
        "oops", error="rejected api-key-0123 and api-key", url="https://x/?t=ingest-token-abc"
    )
    (line,) = lines(stream)
    assert line["error"] == f"rejected {MASK} and {MASK}"
    assert line["url"] == f"https://x/?t={MASK}"
    assert not any(s in stream.getvalue() for s in SECRETS)


class Odd:
    def __repr__(self) -> str:
        return "Odd()"


def test_values_json_cannot_encode_are_written_as_their_repr(stream: io.StringIO) -> None:
    structlog.get_logger("t").info("odd", value=Odd())
    assert lines(stream)[0]["value"] == "Odd()"


def test_stamps_within_one_second_keep_their_microseconds() -> None:
    clock = iter([1_800_000_000.25, 1_800_000_000.999999, 1_800_000_001.0])
    stamp = logs._UtcStamp(clock=lambda: next(clock))
    got = [stamp(None, "info", {})["timestamp"] for _ in range(3)]
    assert got == [
        "2027-01-15T08:00:00.250000Z",
        "2027-01-15T08:00:00.999999Z",
        "2027-01-15T08:00:01.000000Z",
    ]


def test_malformed_requests_log_one_line_each_and_at_a_bounded_rate(
    stream: io.StringIO,
) -> None:
    server_log = logging.getLogger("aiohttp.server")
    for i in range(1000):
        try:
            raise BadHttpMessage(f"Invalid header value char {i}")
        except BadHttpMessage as e:
            server_log.exception("Error handling request from %s", f"192.0.2.{i % 250}", exc_info=e)
    out = lines(stream)
    assert 1 <= len(out) <= 5
    assert "Traceback" not in stream.getvalue()
    assert all(line["level"] == "warning" for line in out)
    assert "BadHttpMessage" in out[0]["event"]


def test_running_out_of_descriptors_on_accept_is_logged_at_a_bounded_rate(
    stream: io.StringIO,
) -> None:
    # What asyncio's default exception handler logs when accept() fails with EMFILE.
    loop_log = logging.getLogger("asyncio")
    for fd in range(1000):
        loop_log.error(
            f"socket.accept() out of system resource\nsocket: <socket fd={fd}>",
            exc_info=OSError(errno.EMFILE, "Too many open files"),
        )
    out = lines(stream)
    assert 1 <= len(out) <= 5
    assert out[0]["event"].startswith("socket.accept() out of system resource: OSError")
    assert "\n" not in out[0]["event"]


def test_rate_limit_tells_how_many_were_held_back() -> None:
    now = [0.0]
    limit = logs.RateLimit(period=10.0, burst=2, clock=lambda: now[0])
    assert [limit.take("k") for _ in range(5)] == [0, 0, None, None, None]
    assert limit.take("other") == 0
    now[0] = 10.0
    assert limit.take("k") == 3
