"""A real mosquitto broker on a loopback address, with a configuration file in a work directory
(persistence on, so that a subscriber's session and its queued QoS 1 messages survive a stop and
start of the broker). Started by the MQTT tests and by the bench's everything-on heap scenario.
A missing mosquitto is an error that says what to install (no test is skipped)."""

import os
import shutil
import socket
import subprocess
import time

MOSQUITTO = "/usr/sbin/mosquitto"


def require_mosquitto():
    path = MOSQUITTO if os.path.exists(MOSQUITTO) else shutil.which("mosquitto")
    assert path, ("mosquitto is not installed: run `apt-get install -y mosquitto` (make test "
                  "installs it as root)")
    return path


def port_open(host, port):
    try:
        socket.create_connection((host, port), 0.2).close()
        return True
    except OSError:
        return False


class Broker:
    """mosquitto on (host, port) [+ a TLS listener on tls_port with ca/cert/key files]."""

    def __init__(self, workdir, host, port=1883, tls=None, tls_port=8883):
        self.exe = require_mosquitto()
        self.dir = workdir
        self.host = host
        self.port = port
        self.tls_port = tls_port
        self.proc = None
        self.log_path = os.path.join(workdir, "mosquitto.log")
        lines = ["per_listener_settings false", "allow_anonymous true", "user root",
                 "persistence true", "persistence_location %s/" % workdir,
                 "log_dest file %s" % self.log_path, "log_type all",
                 "listener %d %s" % (port, host)]
        if tls is not None:
            lines += ["listener %d %s" % (tls_port, host), "cafile %s" % tls["ca"],
                      "certfile %s" % tls["cert"], "keyfile %s" % tls["key"]]
        self.conf = os.path.join(workdir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout_s=10):
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        t = time.monotonic() + timeout_s
        while time.monotonic() < t:
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited: %s" % self.log())
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        raise AssertionError("mosquitto did not listen on %s:%d" % (self.host, self.port))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-3000:]
        except OSError:
            return ""
