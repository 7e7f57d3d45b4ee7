"""Headless Chromium (the Debian package) driven over the DevTools protocol on
--remote-debugging-pipe: no extra Python package (no Selenium, no chromedriver, no websocket
client). Commands go to the browser's fd 3 and answers come from its fd 4, each a JSON object
ended by a NUL byte. Every wait is bounded; close() always ends the browser process.

    with Chromium() as b:
        page = b.new_page()
        b.call("Network.setExtraHTTPHeaders", {"headers": {...}}, page)
        b.navigate(page, url)
        b.wait_for(page, "document.body.dataset.ready === '1'", 20)
        b.evaluate(page, "...")            # the value, returned by value
        b.screenshot(page, "shot.png")
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = ("headless Chromium not found at %s: install it with the suite's system packages "
                "(apt-get install chromium; see the CI script)" % CHROMIUM)


def find_chromium():
    """The browser's path, or None."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    return shutil.which("chromium")


class CdpError(RuntimeError):
    pass


class Chromium:
    def __init__(self, path=None, timeout_s=30, width=1000, height=2400):
        self.path = path or find_chromium()
        if self.path is None:
            raise CdpError(INSTALL_HINT)
        self.timeout_s = timeout_s
        self.size = (width, height)
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self._id = 0
        self._buf = b""
        self.events = []
        # pipes: the browser reads commands on its fd 3 and writes answers on its fd 4
        cmd_r, self._cmd_w = os.pipe()
        self._ans_r, ans_w = os.pipe()
        # the browser's ends moved above 4 first, so that dup2 onto 3 and 4 cannot clobber one
        hi_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(ans_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_r)
        os.close(ans_w)
        cmd_r, ans_w = hi_r, hi_w

        def fds():  # in the child: dup2 clears close-on-exec on 3 and 4 only
            os.dup2(cmd_r, 3)
            os.dup2(ans_w, 4)

        self.proc = subprocess.Popen(
            [self.path, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--mute-audio",
             "--user-data-dir=" + self.profile, "--remote-debugging-pipe",
             "--window-size=%d,%d" % self.size, "about:blank"],
            close_fds=False, preexec_fn=fds, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(ans_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- protocol ---------------------------------------------------------------------------
    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("no answer from Chromium in time")
            r, _, _ = select.select([self._ans_r], [], [], left)
            if not r:
                continue
            chunk = os.read(self._ans_r, 65536)
            if not chunk:
                raise CdpError("Chromium closed its DevTools pipe (exit %s)" % self.proc.poll())
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout_s=None):
        """Send one command (to a page's session when given) and return its result."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise CdpError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            self.events.append(m)

    # --- pages ------------------------------------------------------------------------------
    def new_page(self):
        """A new tab; returns its session id (flat mode)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Network.enable", session=session)
        w, h = self.size
        self.call("Emulation.setDeviceMetricsOverride", {"width": w, "height": h,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        return session

    def navigate(self, session, url):
        r = self.call("Page.navigate", {"url": url}, session)
        if r.get("errorText"):
            raise CdpError("navigation to %s failed: %s" % (url, r["errorText"]))
        return r

    def evaluate(self, session, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, session)
        if "exceptionDetails" in r:
            raise CdpError("script failed: %s" % r["exceptionDetails"])
        return r["result"].get("value")

    def wait_for(self, session, expression, timeout_s):
        """Poll a script expression until it is truthy; its last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            v = self.evaluate(session, expression)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.1)

    def screenshot(self, session, path):
        r = self.call("Page.captureScreenshot", {"format": "png"}, session)
        data = base64.b64decode(r["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.call("Browser.close", timeout_s=5)
                except (CdpError, OSError):
                    pass
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            for fd in (self._cmd_w, self._ans_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)
