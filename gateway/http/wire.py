"""What every route shares on the wire: JSON bodies read within limits, JSON answers, the bearer
token of a request."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["MAX_BODY", "bearer", "json_response", "read_json"]

MAX_BODY = 1024 * 1024
_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps with options builds one per call


def json_response(data: Any, status: int = 200, **kw: Any) -> web.Response:
    return web.Response(
        body=_JSON.encode(data).encode("utf-8"),
        status=status,
        content_type="application/json",
        charset="utf-8",
        **kw,
    )


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or an HTTP error: 413 over 1 MiB, 400 naming `body` when it is not
    JSON this gateway can read."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()  # client_max_size enforces the limit without Content-Length
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad_body(f"not valid UTF-8 JSON ({e})") from None
    except RecursionError:
        # A tiny body of nested brackets must be a bad request, not a server error.
        raise _bad_body("JSON nested too deeply") from None
    except ValueError:
        # Python refuses to convert an integer of more than 4,300 digits (int_max_str_digits).
        raise _bad_body("a number in it is too long") from None


def _bad_body(problem: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": f"body: {problem}", "field": "body"}),
        content_type="application/json",
    )
