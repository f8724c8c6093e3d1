"""An HTTP server that records the webhooks the stack sends a merchant; can fail the first N."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from testkit.ports import free_port


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


class WebhookReceiver:
    """`await start()`, give merchants `url(path)`, read `received`, `await stop()`.
    `fail_first[path] = n` answers the next n deliveries to path 500."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.fail_first: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body))
        path = request.match_info["path"]
        if self.fail_first.get(path, 0) > 0:
            self.fail_first[path] -= 1
            return web.Response(status=500, text="try again")
        return web.Response(status=200, text="ok")

    def events(self, path: str) -> list[Received]:
        """What was delivered to url(path), oldest first."""
        return [r for r in self.received if r.path == f"/{path}"]
