"""The load generator's request stream, against a recording HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import json

from bench.loadgen import freeze_client_heap, run_load
from bench.server_bench import first_requests, request_maker


async def _recording_server(bodies: list[dict]) -> asyncio.Server:
    """Answers every POST with 200 and keeps its JSON body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            length = 0
            while line not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                line = await reader.readline()
            bodies.append(json.loads(await reader.readexactly(length)))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_one_client_sends_the_requests_its_bare_reference_is_timed_on():
    """The 1-client target divides the server's p50 by a bare forward of first_requests():
    those must be the inputs the 1-client load really sends."""
    bodies: list[dict] = []

    async def scenario() -> int:
        server = await _recording_server(bodies)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await run_load(f"http://127.0.0.1:{port}", request_maker(1, 1), 1, 0.3)
        return len(result.latencies)

    answered = asyncio.run(scenario())
    assert answered == len(bodies) > 10
    assert [b["inputs"] for b in bodies] == [[x] for x in first_requests(len(bodies))]


def test_a_load_generator_exempts_what_it_holds_from_later_collections():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_client_heap()
        assert gc.get_freeze_count() > 1000  # pytest, torch and this module at least
    finally:
        gc.unfreeze()
