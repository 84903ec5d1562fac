"""Stable digests for the dedup keys (``source_ref``) of sources that have no id of their own."""

from __future__ import annotations

import hashlib

__all__ = ["digest"]


def digest(*parts: str | bytes) -> str:
    """A short, stable hash of ``parts`` (joined unambiguously) for dedup keys."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()[:16]
