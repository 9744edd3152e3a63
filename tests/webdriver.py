"""A minimal W3C WebDriver client for Debian's chromedriver (headless Chromium), for the report tests.

Five endpoints of the protocol are all the tests need (new session, navigate, execute script, window
size, screenshot); Selenium's current release needs a newer certifi than requirements.txt pins, and an
older one brings trio and a dozen other packages, so the protocol is spoken here with urllib.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

CHROMIUM_ARGS = [
    # as the machine's own probe starts it: headless, no sandbox (root), and no background networking
    # (the closed network refuses it, many connections at a time)
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
]


def find_driver() -> tuple[str | None, str | None]:
    """(chromedriver, chromium) on this machine, or None for what is missing."""
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    browser = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"))
                    if p and os.path.exists(p)), None)
    return driver, browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium, driven through chromedriver on a loopback port."""

    def __init__(self, driver: str, browser: str, user_data_dir: str, width: int = 1366, height: int = 768):
        self.port = _free_port()
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError(f"chromedriver did not start on port {self.port}")
                time.sleep(0.2)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser, "args": CHROMIUM_ARGS + [f"--window-size={width},{height}",
                                                         f"--user-data-dir={user_data_dir}"]}}}}
        try:
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.proc.kill()
            raise

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 120):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return json.loads(res.read().decode() or "{}").get("value")
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"webdriver {method} {path}: {err.read().decode()[:500]}") from None

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def run(self, script: str, *args):
        """Run JavaScript in the page (a function body: `return ...`) and return its value."""
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def set_viewport(self, width: int, height: int) -> tuple[int, int]:
        """Make the page's viewport width x height (the window's frame, if any, added); returns the viewport."""
        self._call("POST", self._s("/window/rect"), {"width": width, "height": height})
        inner = self.run("return [window.innerWidth, window.innerHeight]")
        dw, dh = width - inner[0], height - inner[1]
        if dw or dh:
            self._call("POST", self._s("/window/rect"), {"width": width + dw, "height": height + dh})
            inner = self.run("return [window.innerWidth, window.innerHeight]")
        return tuple(inner)

    def screenshot(self, path) -> None:
        png = base64.b64decode(self._call("GET", self._s("/screenshot")))
        with open(path, "wb") as fh:
            fh.write(png)

    def close(self) -> None:
        try:
            self._call("DELETE", self._s(""), timeout=30)
        except Exception:  # noqa: BLE001 - the driver is stopped below anyway
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
