"""HTTP pieces every route of the local endpoint uses: the bearer key, a bounded JSON body, a client that left."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import HTTPException, Request


def bearer_token(authorization: str | None) -> str:
    """The key of `Authorization: Bearer <key>` (the scheme in any case, as RFC 9110 allows); "" for anything else:
    a bare key is not one of the documented forms."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def read_json_body(request: Request, max_bytes: int) -> object:
    """The request's JSON, read no further than `max_bytes` (413), parsed without ever raising a 500."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(status_code=413, detail=f"request body is {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(status_code=413, detail=f"request body is over the limit of {max_bytes} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(status_code=400, detail=f"body is not JSON: {type(exc).__name__}") from None


async def watch_disconnect(request: Request, gone: threading.Event) -> None:
    """Set `gone` when the client disconnects: generation checks it between tokens and stops."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.2)
    gone.set()
