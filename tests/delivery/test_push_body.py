"""push_body writes the PUSH_SMS JSON by hand: it must be byte for byte what json.dumps gives."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway import config
from gateway.config import UpstreamConfig
from gateway.delivery.worker import push_body
from gateway.outbox import Message, State

T0 = 1_700_000_000.0


def upstream(phone_type: str, api_key: str) -> UpstreamConfig:
    cfg = config.parse(
        {"upstream": {"url": "https://h/v1/PUSH_SMS", "api_key": "k", "phone_type": phone_type}}
    ).upstream
    return dataclasses.replace(cfg, api_key=api_key)  # any string, not only what TOML accepts


def message(sms_id: int, phone: str, phone_from: str, text: str) -> Message:
    return Message(
        sms_id=sms_id,
        source="http",
        source_ref=None,
        phone=phone,
        phone_from=phone_from,
        text=text,
        received_at=T0,
        accepted_at=T0,
        state=State.QUEUED,
        due_at=T0,
        attempts=0,
        finished_at=None,
        final_code=None,
    )


def reference(m: Message, cfg: UpstreamConfig) -> bytes:
    body: dict[str, Any] = {
        "smsId": m.sms_id,
        "phoneFrom": m.phone_from,
        "phone": int(m.phone) if cfg.phone_type == "integer" else m.phone,
        "text": m.text,
        "action": "PUSH_SMS",
        "key": cfg.api_key,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


tricky = [
    "",
    '"',
    "\\",
    '\\"',
    "\x00\x01\x1f\x7f",
    "\u2028\u2029",
    "🙂👍🏽🇷🇺",
    "Код",
    "\ufeff",
    "</script>",
]


@given(
    sms_id=st.integers(min_value=1, max_value=2**63 - 1),
    phone=st.text(alphabet="0123456789", min_size=1, max_size=20),
    phone_from=st.one_of(st.sampled_from(tricky), st.text()),
    text=st.one_of(st.sampled_from(tricky), st.text()),
    api_key=st.one_of(st.sampled_from(tricky), st.text()),
    phone_type=st.sampled_from(["string", "integer"]),
)
@example(1, "79001234567", "Instagram", "Your code is 800142", "key-123", "string")
@example(2**63 - 1, "0079001234567", 'A "quoted" \\ name', "line\nline\r\ttab", "k", "integer")
@example(3, "0", "\x00", "\U0010ffff", "\x7f", "integer")
def test_push_body_is_byte_for_byte_json_dumps(
    sms_id: int, phone: str, phone_from: str, text: str, api_key: str, phone_type: str
) -> None:
    cfg = upstream(phone_type, api_key)
    m = message(sms_id, phone, phone_from, text)
    body = push_body(m, cfg)
    assert body == reference(m, cfg)
    decoded = json.loads(body)
    assert list(decoded) == ["smsId", "phoneFrom", "phone", "text", "action", "key"]
    assert isinstance(decoded["phone"], int if phone_type == "integer" else str)


@pytest.mark.parametrize("phone_type", ["string", "integer"])
def test_the_same_message_gives_the_same_bytes_every_time(phone_type: str) -> None:
    cfg = upstream(phone_type, "key-123")
    m = message(42, "79001234567", "Сбер", "Код 4417 🙂")
    assert push_body(m, cfg) == push_body(m, cfg) == reference(m, cfg)
    assert "Код 4417 🙂".encode() in push_body(m, cfg)  # raw UTF-8, no \\u escapes


@pytest.mark.parametrize("field", ["phone_from", "text", "api_key"])
@pytest.mark.parametrize(
    "surrogate", [chr(0xD800), chr(0xDFFF), f"a{chr(0xDC80)}b"], ids=["D800", "DFFF", "aDC80b"]
)
def test_a_lone_surrogate_fails_as_json_dumps_would(field: str, surrogate: str) -> None:
    values = {"phone_from": "S", "text": "t", "api_key": "k", field: surrogate}
    cfg = upstream("string", values["api_key"])
    m = message(1, "79001234567", values["phone_from"], values["text"])
    with pytest.raises(UnicodeEncodeError) as expected:
        reference(m, cfg)
    with pytest.raises(UnicodeEncodeError) as got:
        push_body(m, cfg)
    assert (got.value.encoding, got.value.reason) == (
        expected.value.encoding,
        expected.value.reason,
    )
    assert got.value.object[got.value.start : got.value.end] == surrogate.strip("ab")
