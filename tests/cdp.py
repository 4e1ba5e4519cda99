"""A small Chrome DevTools Protocol client: a headless Chromium the tests drive over a websocket.

    with Chromium.start(binary, folder) as page:
        page.open("file:///.../index.html")
        page.evaluate("document.title")
        page.errors()          # console errors, uncaught exceptions, log errors (CSP violations among them)
        page.screenshot(path)

Only `websockets` (already a dependency of the venv) and the standard library.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from websockets.sync.client import connect

BINARIES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


class CDPError(RuntimeError):
    pass


def _end_group(process: subprocess.Popen) -> None:
    """Kill what is left of the browser's process group (it was started in a session of its own)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class Chromium:
    """One headless browser process and its first page, driven over the DevTools protocol."""

    def __init__(self, process: subprocess.Popen, url: str):
        self.process = process
        self._stack = ExitStack()
        self.socket = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
        self.events: list[dict] = []
        self._ids = itertools.count(1)

    @classmethod
    def start(cls, binary: str, folder: Path, width: int = 1400, height: int = 1000) -> Chromium:
        profile = folder / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # an earlier browser's port: not this one's
        # --no-sandbox: the tests may run as root (containers), where Chromium's sandbox refuses to start.
        process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=(folder / "chromium.log").open("wb"),
            # Its own process group: closing ends its helpers (zygotes, crash handler) with it.
            start_new_session=True)
        # With port 0 Chromium picks a free port and writes it, first line, to DevToolsActivePort.
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                _end_group(process)
                log = (folder / "chromium.log").read_text(errors="replace")[-2000:]
                raise CDPError(f"{binary} did not start (exit {process.poll()}): {log}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not pages:
            _end_group(process)
            raise CDPError(f"{binary} opened no page")
        page = cls(process, pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        return page

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        # Browser.close lets Chromium shut down cleanly (a killed one can leave its profile locked).
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - the browser may be gone already; the group is ended below
            pass
        self._stack.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _end_group(self.process)

    def call(self, method: str, **params) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile are kept in `events`."""
        call_id = next(self._ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for_event(self, method: str, timeout: float = CALL_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method:
                    self.events.remove(event)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no {method} event within {timeout} s")
            try:
                message = json.loads(self.socket.recv(timeout=remaining))
            except TimeoutError:
                continue
            if "method" in message:
                self.events.append(message)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited); its exception raises."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"{expression[:80]!r} threw: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 10.0) -> None:
        """Poll `expression` until it is truthy in JavaScript (an element is: its JSON value {} is not)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.evaluate(f"!!({expression})"):
                return
            if time.monotonic() > deadline:
                raise CDPError(f"{expression!r} still false after {timeout} s")
            time.sleep(0.05)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations, failed loads) so far."""
        self.evaluate("0")  # drain the events already sent
        out = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
        return out

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
