"""Headless Chromium over the DevTools protocol (aiohttp's websocket): load, evaluate, screenshot.

Debian's `chromium` and nothing else: no driver, no browser download. Every
console error, uncaught exception and failed resource load is collected in
`Page.errors`, which is what "the page loads with no console errors" checks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from testkit.waiting import eventually


class DevToolsError(RuntimeError):
    """Chromium answered a DevTools command with an error, or a script threw."""


class Page:
    """One tab: commands go out with an id, answers and events come back on one socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self._event(data["method"], data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", "")
            self.errors.append(f"uncaught: {details.get('text', '')} {thrown}".strip())
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            self.errors.append(f"console.{params['type']}: {' '.join(args)}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise DevToolsError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

        async def loaded() -> bool:
            return await self.evaluate("document.readyState") == "complete"

        await eventually(loaded, timeout=30, what=f"{url} loaded")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises are awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        # The whole page, however long, and no blank window below it.
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": size["width"],
                                     "height": size["height"], "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium(profile: Path, *, width: int = 1440, height: int = 900) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab; stopped (by its own pid) on the way out."""
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: stack/install.sh installs it"
    profile.mkdir(parents=True, exist_ok=True)
    log = open(profile / "chromium.log", "wb")
    # --no-sandbox: tests run as root here, where Chromium's sandbox refuses to start.
    proc = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            port_file = profile / "DevToolsActivePort"

            async def listening() -> str | None:
                if proc.poll() is not None:
                    raise AssertionError(f"chromium exited {proc.returncode}; see {log.name}")
                text = port_file.read_text() if port_file.exists() else ""
                return text.split()[0] if text.strip() else None

            port = await eventually(listening, timeout=30, what="chromium's DevTools port")

            async def blank_tab() -> str | None:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    tabs = await resp.json()
                return next((t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page"),
                            None)

            url = await eventually(blank_tab, timeout=10, what="chromium's first tab")
            # Full-page screenshots are larger than aiohttp's default message limit.
            ws = await http.ws_connect(url, max_msg_size=0)
            page = Page(ws)
            try:
                for domain in ("Runtime", "Log", "Page"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                await page.close()
    finally:
        proc.terminate()
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 10:
            await asyncio.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
