"""Headless Chromium driven over the DevTools protocol (no Playwright): type, click, read, shoot."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.servers import free_port, wait_http

QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        call_id = self.last_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        """Poll until the JavaScript `expression` is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(f"!!({expression})"):
                    return
            except RuntimeError:  # evaluated mid-navigation
                pass
            time.sleep(0.25)
        raise TimeoutError(f"timed out waiting for: {expression}")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def center(self, selector: str) -> tuple[float, float]:
        box = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        return float(box[0]), float(box[1])

    def click(self, selector: str) -> None:
        x, y = self.center(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Focus the field, then type as a keyboard would (trusted input events); retried
        once if the page was still settling and the text went elsewhere."""
        field = f"document.querySelector({json.dumps(selector)})"
        for _ in range(3):
            self.eval(f"{field}.focus()")
            self.send("Input.insertText", text=text)
            try:
                self.wait_for(f"{field}.value === {json.dumps(text)}", timeout=5)
                return
            except TimeoutError:
                self.eval(
                    f"(() => {{ const e = {field}; e.value = '';"
                    " e.dispatchEvent(new Event('input', {bubbles: true})); }})()"
                )
        raise TimeoutError(f"could not type into {selector}")

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose files in an `<input type=file>` as a user would in the file dialog."""
        root = self.send("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise RuntimeError(f"no element {selector}")
        self.send("DOM.setFileInputFiles", files=[str(path) for path in paths], nodeId=node)

    def text(self, selector: str = "body") -> str:
        return str(self.eval(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''"))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@contextmanager
def browser(executable: str) -> Iterator[Page]:
    profile = Path(tempfile.mkdtemp(prefix="scholia-chromium-"))
    port = free_port()
    log = profile.with_name(profile.name + ".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                executable,
                *QUIET_FLAGS,
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/json/version", process, log, timeout=60, interval=0.1)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(page_url, max_size=None, open_timeout=30) as ws:
            page = Page(ws)
            page.send("Page.enable")
            page.send("Runtime.enable")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
        log.unlink(missing_ok=True)
