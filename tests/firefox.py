"""Headless Firefox (Debian's firefox-esr) driven over WebDriver BiDi, for the browser tests.

Playwright drives Firefox only through its own patched build (not downloadable here) or,
for stock Firefox, through BiDi commands that Firefox ESR does not have yet
(emulation.setMediaFeaturesOverride), so the few commands the tests need are spoken
directly: open a page, run JavaScript in it.  Firefox's own fake camera (a synthetic
pattern, no face) stands in for the camera.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
PREFS = {
    "media.navigator.streams.fake": True,           # a synthetic camera
    "media.navigator.permission.disabled": True,    # no permission prompt
    "media.autoplay.default": 0,
    # the demo server is on loopback: offer loopback ICE candidates, as plain addresses
    # (Chromium needs --allow-loopback-in-peer-connection for the same)
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "browser.shell.checkDefaultBrowser": False,
    "app.update.disabledForTesting": True,
    "datareporting.policy.dataSubmissionEnabled": False,
}


class FirefoxError(Exception):
    pass


class Firefox:
    """One headless Firefox with one tab."""

    def __init__(self, timeout: float = 60) -> None:
        if FIREFOX is None:
            raise FirefoxError("firefox-esr is not installed")
        self._profile = tempfile.TemporaryDirectory(prefix="ff-profile-")
        prefs = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
        (Path(self._profile.name) / "user.js").write_text(prefs)
        self._proc = subprocess.Popen([FIREFOX, "--headless", "--no-remote", "--profile", self._profile.name,
                                       "--remote-debugging-port=0", "about:blank"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Firefox logs to stderr all along: a thread reads it, so that the pipe never fills
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self._proc.stderr], daemon=True).start()
        try:
            url = None
            deadline = time.monotonic() + timeout
            while url is None and time.monotonic() < deadline:
                try:
                    m = re.search(r"WebDriver BiDi listening on (ws://\S+)", lines.get(timeout=0.5))
                except queue.Empty:
                    if self._proc.poll() is not None:
                        break
                    continue
                url = m and m.group(1)
            if url is None:
                raise FirefoxError("Firefox did not start its WebDriver BiDi server")
            self._ids = itertools.count(1)
            # entered by hand (closed in close()): websockets wants connect() used as a context manager
            self._ws = connect(url + "/session", max_size=None, open_timeout=timeout).__enter__()
            self._command("session.new", {"capabilities": {}})
            self.context = self._command("browsingContext.getTree", {})["contexts"][0]["context"]
        except BaseException:
            self.close()
            raise

    def _command(self, method: str, params: dict, timeout: float = 60) -> dict:
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") != ident:
                continue                         # an event
            if reply.get("type") == "error":
                raise FirefoxError(f"{method}: {reply.get('error')}: {reply.get('message')}")
            return reply["result"]

    def goto(self, url: str) -> None:
        self._command("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def evaluate(self, expression: str, timeout: float = 60):
        """The value of a JavaScript expression (a promise is awaited): JSON-like values only."""
        result = self._command("script.evaluate", {
            "expression": f"(async () => JSON.stringify(await ({expression})))()",
            "target": {"context": self.context}, "awaitPromise": True}, timeout)
        if result["type"] == "exception":
            raise FirefoxError(result["exceptionDetails"].get("text", "JavaScript exception"))
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    def screenshot(self) -> bytes:
        """PNG of the page's viewport."""
        import base64

        result = self._command("browsingContext.captureScreenshot", {"context": self.context})
        return base64.b64decode(result["data"])

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise FirefoxError(f"timed out waiting for {expression}")
            time.sleep(0.2)

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._profile.cleanup()

    def __enter__(self) -> Firefox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
