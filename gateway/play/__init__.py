"""Play code: fakes and the demo, never used by the running product.

The simulated modem (`modem`), the PDU encoder it needs (`pdu`), the stand-in PUSH_SMS
endpoint (`standin`) and `sms-gateway demo` (`demo`). Tests and benchmarks use them too, the way
procrastinate ships `testing.py` beside its real code.
"""
