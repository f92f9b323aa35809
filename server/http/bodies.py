"""Reading request bodies with a size limit, refused before the body is buffered."""

from __future__ import annotations

from fastapi import Request

from ..errors import BodyTooLarge


async def read_limited(request: Request, limit: int, flag: str) -> bytes:
    """The body, or BodyTooLarge as soon as its declared or received size passes `limit`
    (chunked bodies are counted as they arrive)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit is {limit} ({flag})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body exceeds {limit} bytes ({flag})")
        chunks.append(chunk)
    return b"".join(chunks)
