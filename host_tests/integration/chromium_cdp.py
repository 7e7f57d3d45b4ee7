"""Headless Chromium (the Debian package) driven over the DevTools protocol on
--remote-debugging-pipe, with the standard library only (no Selenium, no chromedriver, no
websocket client): the browser reads NUL-terminated JSON commands on its fd 3 and writes answers
and events on its fd 4. No debugging port is opened, so nothing else on the machine can drive it;
no name resolves and no proxy is used (loopback addresses only). Every wait is bounded; close()
always ends the browser process.

    with Chromium() as b:
        page = b.new_page()
        page.call("Network.setExtraHTTPHeaders", {"headers": {...}})
        page.open("http://127.0.0.1:8080/")        # waits for the load event
        page.wait_for("document.body.dataset.ready === '1'", 20)
        page.evaluate("document.title")            # the value, returned by value
        page.click("#go"); page.type_into("#psk", "text")
        page.screenshot("build/artefacts/page.png")
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
INSTALL_HINT = ("Chromium is missing (%s): install it with the suite's system packages "
                "(`sudo apt-get install -y chromium`, Debian package; see README/CI)" % CHROMIUM)


class CdpError(RuntimeError):
    pass


def find_chromium():
    """The browser's path; AssertionError naming the install step when it is missing."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    assert path, INSTALL_HINT
    return path


class Chromium:
    def __init__(self, timeout_s=20, width=900, height=1400):
        self.timeout_s = timeout_s
        self.size = (width, height)
        self.proc = None
        self._fds = ()
        self._id = 0
        self._buf = b""
        self.events = []
        self.profile = tempfile.mkdtemp(prefix="cdp-profile-")
        try:
            self._start(find_chromium())
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self, exe):
        # fds 3 and 4 of the child: our write end -> its fd 3, its fd 4 -> our read end
        cmd_r, cmd_w = os.pipe()
        ans_r, ans_w = os.pipe()
        self._cmd_w, self._ans_r = cmd_w, ans_r
        self._fds = (cmd_w, ans_r)
        # the child's ends above 9, so that moving them to 3 and 4 never overwrites one another
        for_child = []
        for fd in (cmd_r, ans_w):
            for_child.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 10))
            os.close(fd)
        cmd_r, ans_w = for_child
        args = [exe, "--headless=new", "--no-sandbox", "--remote-debugging-pipe",
                "--user-data-dir=" + self.profile, "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-sync", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--no-proxy-server",
                "--mute-audio",
                # no name resolves: loopback addresses only
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.*",
                "--window-size=%d,%d" % self.size,
                "about:blank"]
        # bash puts the pipe ends on fds 3 and 4 (subprocess may use those numbers itself while
        # it starts the child, and a preexec_fn is unsafe with the tests' event loop threads)
        shell = 'exec "$0" "$@" 3<&%d 4>&%d %d<&- %d>&-' % (cmd_r, ans_w, cmd_r, ans_w)
        try:
            self.proc = subprocess.Popen(["/bin/bash", "-c", shell] + args,
                                         pass_fds=(cmd_r, ans_w), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(cmd_r)
            os.close(ans_w)

    def close(self):
        if self.proc is not None:
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
                self.proc = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = ()
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # -- the protocol ---------------------------------------------------------------------------

    def _send(self, msg):
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._cmd_w, data)
            data = data[n:]

    def _recv(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("no answer from Chromium within the time limit")
            r, _, _ = select.select([self._ans_r], [], [], left)
            if r:
                chunk = os.read(self._ans_r, 65536)
                if not chunk:
                    raise CdpError("Chromium closed the pipe (exit %s)" % self.proc.poll())
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout_s=None):
        """Send one command (to a page's session when given) and return its result; events
        that come before the answer are kept in self.events."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        self._send(msg)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            ans = self._recv(deadline)
            if ans.get("id") == self._id:
                if "error" in ans:
                    raise CdpError("%s: %s" % (method, ans["error"]))
                return ans.get("result", {})
            self.events.append(ans)

    def wait_event(self, method, session=None, timeout_s=None):
        """The parameters of the first event `method` (of that session when given)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        seen = 0
        while True:
            for i in range(seen, len(self.events)):
                e = self.events[i]
                if e.get("method") == method and (session is None
                                                  or e.get("sessionId") == session):
                    del self.events[i]
                    return e.get("params", {})
            seen = len(self.events)
            self.events.append(self._recv(deadline))

    def new_page(self):
        """A new tab (flat-mode session) of the browser's size."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Network.enable")  # for Network.setExtraHTTPHeaders
        w, h = self.size
        page.call("Emulation.setDeviceMetricsOverride", {"width": w, "height": h,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False})
        return page


class Page:
    """One tab: what a test does with it."""

    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    def call(self, method, params=None, timeout_s=None):
        return self.browser.call(method, params, self.session, timeout_s)

    def open(self, url):
        """Navigate and wait for the page's load event."""
        b = self.browser
        b.events = [e for e in b.events if e.get("sessionId") != self.session]
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise CdpError("navigation to %s failed: %s" % (url, res["errorText"]))
        b.wait_event("Page.loadEventFired", self.session)
        return res

    def evaluate(self, expr):
        """The value of a JavaScript expression (a promise is awaited), returned by value."""
        res = self.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                             "returnByValue": True})
        if "exceptionDetails" in res:
            raise CdpError("script failed: %s" % res["exceptionDetails"].get("exception", res))
        return res["result"].get("value")

    def wait_for(self, expr, timeout_s=None, step_s=0.1):
        """Poll a JavaScript expression until it is truthy; its last value."""
        deadline = time.monotonic() + (timeout_s or self.browser.timeout_s)
        while True:
            v = self.evaluate(expr)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(step_s)

    def type_into(self, selector, text):
        """Focus an input and type text into it as keyboard input (Input.insertText)."""
        self.evaluate("document.querySelector(%s).focus()" % json.dumps(selector))
        self.call("Input.insertText", {"text": text})

    def click(self, selector):
        self.evaluate("document.querySelector(%s).click()" % json.dumps(selector))

    def screenshot(self, path):
        """The whole page as PNG, written to path (its directory made); the bytes."""
        data = base64.b64decode(self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True})["data"])
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return data
