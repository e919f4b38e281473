"""Headless Chromium driven over the DevTools protocol (CDP) from the tests: a real browser
clicking through a real page. aiohttp (installed with tuspy) speaks the WebSocket."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium: install Debian's `chromium` (scripts/bootstrap.sh does)")


class JSError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page; `async with Browser(profile, size) as page`."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 900):
        self.profile, self.width, self.height = profile, width, height
        self.proc: subprocess.Popen | None = None
        self._ids = 0
        self._pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.console: list[str] = []

    async def __aenter__(self) -> "Browser":
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             "--hide-scrollbars", f"--window-size={self.width},{self.height}", "--remote-debugging-port=0",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline and port is None:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line or "")
            if found:
                port = int(found.group(1))
            elif not line and self.proc.poll() is not None:
                break
        assert port, "Chromium did not start its DevTools endpoint"
        self.http = aiohttp.ClientSession()
        for _ in range(50):
            async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t["type"] == "page"]
            if pages:
                break
            await asyncio.sleep(0.1)
        self.ws = await self.http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Network", "DOM"):
            await self.send(f"{domain}.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                        deviceScaleFactor=1, mobile=False)
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(data["params"]["exceptionDetails"])[:500])
            else:
                self.events.append(data)

    async def send(self, method: str, **params) -> dict:
        self._ids += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = future
        await self.ws.send_str(json.dumps({"id": self._ids, "method": method, "params": params}))
        data = await asyncio.wait_for(future, 120)
        if "error" in data:
            raise JSError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def eval(self, expression: str, gesture: bool = False):
        """The value of a JS expression (promises awaited); `gesture`: run as if the user acted
        (what opening a tab from a click needs)."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                                 userGesture=gesture)
        if "exceptionDetails" in result:
            raise JSError(f"{expression[:200]}: {json.dumps(result['exceptionDetails'])[:800]}")
        return result["result"].get("value")

    async def wait(self, expression: str, timeout: float = 60, every: float = 0.2, what: str = ""):
        """Poll until a JS expression is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = await self.eval(expression)
            except JSError as err:          # e.g. the page is still loading: no body yet
                value = err
            if value and not isinstance(value, JSError):
                return value
            await asyncio.sleep(every)
        raise AssertionError(f"timed out waiting for {what or expression} (last: {value!r}); "
                             f"console: {self.console[-15:]}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def click(self, selector: str) -> None:
        await self.eval(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                        f"if (!el) throw new Error('no ' + {json.dumps(selector)}); el.click(); return true; }})()",
                        gesture=True)

    async def tap(self, x: float, y: float) -> None:
        """A finger's tap at (x, y) (CSS pixels of the viewport), with touch emulation on."""
        await self.send("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=1)
        point = [{"x": x, "y": y}]
        await self.send("Input.dispatchTouchEvent", type="touchStart", touchPoints=point)
        await self.send("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])

    async def axe(self, script: Path) -> list[dict]:
        """axe-core's violations on the page as it is now (the script injected once)."""
        if not await self.eval("!!window.axe"):
            await self.eval(script.read_text() + "\n;true")
        return await self.eval("axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => "
                               "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))"
                               ".slice(0, 5)})))")

    async def fill(self, selector: str, value: str) -> None:
        await self.eval(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.value = "
                        f"{json.dumps(value)}; el.dispatchEvent(new Event('input', {{bubbles: true}})); "
                        f"el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()")

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        doc = await self.send("DOM.getDocument", depth=1)
        node = await self.send("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector=selector)
        await self.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(p) for p in paths])

    async def drop_files(self, selector: str, paths: list[Path]) -> None:
        """Drag files from outside the page and drop them on `selector`, as a user does from a
        file manager (Input.dispatchDragEvent: the page sees real dragenter/dragover/drop
        events whose DataTransfer holds the files)."""
        box = await self.eval(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                              "el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect(); "
                              "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            await self.send("Input.dispatchDragEvent", type=kind, x=box[0], y=box[1], data=data)

    async def screenshot(self, path: Path) -> bytes:
        shot = await self.send("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data
