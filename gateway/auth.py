"""Secret tokens and passwords compared in constant time, whatever carries them (HTTP, UDP)."""

from __future__ import annotations

import hmac

__all__ = ["token_matches"]


def token_matches(given: str | None, expected: str | bytes) -> bool:
    """Constant-time comparison so the token cannot be guessed byte by byte."""
    if not expected or given is None:
        return False
    if isinstance(expected, str):
        expected = expected.encode("utf-8")
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected)
