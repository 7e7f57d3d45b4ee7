"""Fetch the third-party MicroPython libraries the firmware uses into lib/ (not committed).

  python tools/fetch_lib.py [--check]

umqtt.simple (MQTT telemetry, firmware/app/telemetry.py) comes from micropython-lib's PyPI package
`micropython-umqtt.simple`, whose only release file is an sdist without setup.py: pip cannot
install it. This script finds the pinned release through PyPI's JSON API, downloads it, verifies
the pinned SHA-256 of the archive and of the extracted module, and writes lib/umqtt/simple.py.
tools/deploy.py copies lib/ to the device; host runs put lib/ on MICROPYPATH / sys.path. Where
micropython.org is reachable, `mpremote mip install umqtt.simple` is the documented alternative.

Nothing is fetched when lib/umqtt/simple.py is already there with the pinned hash. --check: exit 1
(saying what to run) instead of fetching.
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "lib")

# (PyPI project, version, sha256 of the sdist, member path in it, sha256 of the member, target)
PINNED = (
    ("micropython-umqtt.simple", "1.3.4",
     "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
     "micropython-umqtt.simple-1.3.4/umqtt/simple.py",
     "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5",
     "umqtt/simple.py"),
)
_TIMEOUT_S = 60


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _present(target, member_sha):
    try:
        with open(os.path.join(LIB, target), "rb") as f:
            return _sha(f.read()) == member_sha
    except OSError:
        return False


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:
            return r.read()
    except OSError as e:  # URLError, timeouts: say what failed and what to do
        raise SystemExit("fetch_lib: cannot fetch %s (%s): PyPI must be reachable, or copy "
                         "umqtt/simple.py into lib/ yourself" % (url, e))


def _sdist_url(project, version, sha):
    meta = json.loads(_get("https://pypi.org/pypi/%s/json" % project))
    for f in meta.get("releases", {}).get(version, []):
        if f.get("packagetype") == "sdist" and f.get("digests", {}).get("sha256") == sha:
            return f["url"]
    raise SystemExit("fetch_lib: %s %s with the pinned sha256 is not on PyPI" % (project, version))


def fetch(project, version, sha, member, member_sha, target):
    data = _get(_sdist_url(project, version, sha))
    if _sha(data) != sha:
        raise SystemExit("fetch_lib: %s %s: archive sha256 mismatch" % (project, version))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        body = tf.extractfile(member).read()
    if _sha(body) != member_sha:
        raise SystemExit("fetch_lib: %s in %s %s: sha256 mismatch" % (member, project, version))
    dst = os.path.join(LIB, target)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".%d.tmp" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(body)
    os.replace(tmp, dst)  # atomic: parallel test workers may run this at once
    print("fetch_lib: %s %s -> lib/%s" % (project, version, target))


def main(argv):
    check = "--check" in argv
    missing = [p for p in PINNED if not _present(p[5], p[4])]
    if check and missing:
        print("fetch_lib: missing %s: run `python tools/fetch_lib.py` (or `make lib`)"
              % ", ".join("lib/" + p[5] for p in missing))
        return 1
    for p in missing:
        fetch(*p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
