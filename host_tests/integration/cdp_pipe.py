"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: the
browser reads NUL-terminated JSON commands on fd 3 and writes answers and events on fd 4), with
the standard library only. No debugging port is opened, so nothing else on the machine can
drive it; every network request other than loopback fails (no DNS, no proxy, no background
traffic).

    with Chromium() as br:
        br.open("http://127.0.0.1:8080/")
        br.eval("document.title")
        br.screenshot("build/artefacts/page.png")
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
INSTALL_HINT = ("Chromium is missing (%s): install it with the setup step "
                "`sudo apt-get install -y chromium` (Debian package; see README/CI)" % CHROMIUM)


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
        self.profile = None
        self._id = 0
        self._buf = b""
        self.events = []
        self.session = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        exe = find_chromium()
        self.profile = tempfile.mkdtemp(prefix="cdp-profile-")
        # fds 3 and 4 of the child: our write end -> its fd 3, its fd 4 -> our read end
        cmd_r, self._cmd_w = os.pipe()
        self._ans_r, ans_w = os.pipe()
        # the child's ends above 9, so that moving them to 3 and 4 never overwrites one another
        for_child = []
        for fd in (cmd_r, ans_w):
            for_child.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 10))
            os.close(fd)
        cmd_r, ans_w = for_child
        args = [exe, "--headless=new", "--no-sandbox", "--remote-debugging-pipe",
                "--user-data-dir=" + self.profile, "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--no-proxy-server", "--mute-audio",
                # no name resolves: loopback addresses only
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.*",
                "--window-size=%d,%d" % self.size,
                "about:blank"]

        # bash puts the pipe ends on fds 3 and 4 (subprocess may use those numbers itself
        # while it starts the child, so no dup2 from Python)
        shell = 'exec "$0" "$@" 3<&%d 4>&%d %d<&- %d>&-' % (cmd_r, ans_w, cmd_r, ans_w)
        self.proc = subprocess.Popen(["/bin/bash", "-c", shell] + args, pass_fds=(cmd_r, ans_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(ans_w)
        targets = self.call("Target.getTargets")["targetInfos"]
        page = [t for t in targets if t["type"] == "page"]
        tid = page[0]["targetId"] if page else \
            self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=tid,
                                 flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def close(self):
        if self.proc is not None:
            try:
                self.call("Browser.close", timeout_s=5)
            except (CdpError, OSError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
            for fd in (self._cmd_w, self._ans_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
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

    def call(self, method, session=False, timeout_s=None, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self._send(msg)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            ans = self._recv(deadline)
            if ans.get("id") == self._id:
                if "error" in ans:
                    raise CdpError("%s: %s" % (method, ans["error"]))
                return ans.get("result", {})
            self.events.append(ans)

    def wait_event(self, method, timeout_s=None):
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    del self.events[i]
                    return e.get("params", {})
            self.events.append(self._recv(deadline))

    # -- what a test does -----------------------------------------------------------------------

    def open(self, url):
        self.events = []
        res = self.call("Page.navigate", session=True, url=url)
        if res.get("errorText"):
            raise CdpError("navigation to %s failed: %s" % (url, res["errorText"]))
        self.wait_event("Page.loadEventFired")

    def eval(self, expr):
        """The value of a JavaScript expression (a promise is awaited)."""
        res = self.call("Runtime.evaluate", session=True, expression=expr, awaitPromise=True,
                        returnByValue=True)
        if "exceptionDetails" in res:
            raise CdpError("script failed: %s" % res["exceptionDetails"].get("exception", res))
        return res["result"].get("value")

    def wait_for(self, expr, timeout_s=None, step_s=0.1):
        """Poll a JavaScript expression until it is truthy; its last value."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            v = self.eval(expr)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(step_s)

    def type_into(self, selector, text):
        """Focus an input and type text into it as keyboard input (Input.insertText)."""
        self.eval("document.querySelector(%s).focus()" % json.dumps(selector))
        self.call("Input.insertText", session=True, text=text)

    def click(self, selector):
        self.eval("document.querySelector(%s).click()" % json.dumps(selector))

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True)["data"]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path
