"""Reading request bodies with a size limit, refused before the body is buffered."""

from __future__ import annotations

from fastapi import Request

from ..errors import BodyTooLarge
from ..limits import BodyLimit


async def read_limited(request: Request, limit: BodyLimit) -> bytes:
    """The body, or BodyTooLarge as soon as its declared or received size passes the limit
    (chunked bodies are counted as they arrive)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit.size:
        raise BodyTooLarge(
            f"the body is {declared} bytes; the limit is {limit.size} ({limit.setting})"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit.size:
            raise BodyTooLarge(f"the body exceeds {limit.size} bytes ({limit.setting})")
        chunks.append(chunk)
    return b"".join(chunks)
