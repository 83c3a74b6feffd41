"""The app under a real uvicorn server on loopback, asked over real TCP."""

from __future__ import annotations

import asyncio
import socket

import httpx
import uvicorn

from laterne.api.app import create_app

from .conftest import FakeReadModel


async def test_served_by_uvicorn_on_loopback(read_model: FakeReadModel) -> None:
    # Bind port 0 ourselves and hand the socket over: no race for a "free" port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(read_model), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn stopped before it started"
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            r = await client.get("/api/site")
            assert r.status_code == 200
            assert r.json()["site"] == "demo-town"
            assert r.json()["cycle"] == 42
            page = await client.get("/")
            assert page.status_code == 200
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()
