"""Reading a request body within the size limit (413 before reading when announced)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import validation
from api.state import SETTINGS


async def read_body(request: web.Request) -> bytes:
    """The raw body; aiohttp's client_max_size enforces the same limit while reading."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await request.read()


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body parsed as a JSON object (400 naming `body` otherwise)."""
    return validation.parse_json_object(await read_body(request))
