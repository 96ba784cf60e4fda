"""Headless Chromium over the DevTools protocol: open a page, wait for what it renders, read its DOM, its console
errors and a screenshot. Used by the browser test of the MLflow UI and the sweep report, and by
`benchmarks/readme_screenshots.py`.

    with Browser() as b:                                   # Debian's `chromium` (apt-get install -y chromium)
        b.open("http://127.0.0.1:5000/#/experiments/1/runs")
        b.wait_for("document.body.innerText.includes('fusion-a-red-circle-s0')")
        b.screenshot("out.png"); b.errors                  # console errors and uncaught exceptions

No browser is downloaded (that cannot work offline): a missing binary raises `BrowserMissingError` with the
install command. The websocket client is aiohttp's (installed with ray[default]); nothing else is needed.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install -y chromium   (Debian's package; `make setup` and .ci/run install it when missing)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-default-apps", "--hide-scrollbars", "--mute-audio"]
# MLflow 3.17's UI opens its Assistant panel by itself on a loopback host, once per browser profile
# (localStorage `mlflow.assistant.fab.autoOpenedOnFirstLoad_v1`); a profile that has seen it closed keeps it closed.
QUIET_MLFLOW_UI = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false"}


class BrowserMissingError(RuntimeError):
    pass


def find_chromium() -> str:
    """The Chromium binary on PATH (or $CHROMIUM); BrowserMissingError names the install command."""
    candidates = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else list(BINARIES)
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissingError(f"no Chromium binary found (looked for {', '.join(candidates)} on PATH): install it "
                              f"with `{INSTALL}`, or set $CHROMIUM to the binary")


class Browser:
    """One headless Chromium with one page, driven over its DevTools websocket (synchronous API)."""

    def __init__(self, width: int = 1600, height: int = 1100, binary: str | None = None):
        self.width, self.height = width, height
        self.binary = binary or find_chromium()
        self.errors: list[str] = []        # console.error messages, uncaught exceptions, failed page loads
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._proc: subprocess.Popen | None = None
        self._profile: str | None = None
        self._session = self._ws = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60.0) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        cmd = [self.binary, *FLAGS, f"--window-size={self.width},{self.height}", "--remote-debugging-port=0",
               "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self._profile}", "about:blank"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{self.binary} did not open its DevTools port in {timeout:.0f}s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            pages = [t for t in json.load(resp) if t.get("type") == "page"]
        self._loop.run_until_complete(self._connect(pages[0]["webSocketDebuggerUrl"]))
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain)
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    async def _connect(self, url: str) -> None:
        import aiohttp  # late: only the browser checks need it (~0.3 s)

        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)

    def close(self) -> None:
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
            self._session = self._ws = None
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            self._proc = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None
        self._loop.close()

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ protocol
    def send(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        return self._loop.run_until_complete(asyncio.wait_for(self._send(method, params), timeout))

    async def _send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self._ws.receive()).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                             for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                   or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    # ------------------------------------------------------------------------------------------ the page
    def open(self, url: str, local_storage: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        """Navigate to `url` (with `local_storage` set for its origin first: the page reads it on load)."""
        if local_storage:
            origin = url.split("#")[0]
            self.send("Page.navigate", url=origin)
            self.wait_for("document.readyState === 'complete'", timeout)
            script = ";".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)})" for k, v in local_storage.items())
            self.evaluate(script)
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"{url}: {result['errorText']}")
        if local_storage and "#" in url:
            self.evaluate("location.reload()")
        self.wait_for("document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, poll: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; TimeoutError (with the page's text) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = (self.evaluate("document.body ? document.body.innerText : ''") or "")[:1500]
                raise TimeoutError(f"not true after {timeout:.0f}s: {expression}\npage text: {text}")
            self._loop.run_until_complete(self._drain(poll))

    async def _drain(self, seconds: float) -> None:
        """Wait, reading the events that arrive meanwhile (console errors)."""
        end = self._loop.time() + seconds
        while (left := end - self._loop.time()) > 0:
            try:
                msg = await asyncio.wait_for(self._ws.receive(), left)
            except asyncio.TimeoutError:
                return
            self._event(json.loads(msg.data))

    def settle(self, seconds: float = 1.0) -> None:
        self._loop.run_until_complete(self._drain(seconds))

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML") or ""

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
