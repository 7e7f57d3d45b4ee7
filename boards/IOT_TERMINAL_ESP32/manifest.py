# ruff: noqa: F821
# (include and package are provided by MicroPython's tools/manifestfile.py.)
# Frozen into the IOT_TERMINAL_ESP32 image (docs/board-build.md). MicroPython's manifestfile.py
# runs this with the working directory set to this folder.
import os

# The port's own frozen modules: _boot, inisetup, flashbdev, asyncio, ntptime, ...
include("$(PORT_DIR)/boards/manifest.py")

# Everything under firmware/ is device code except these host-only modules (termios, the NOR
# emulator). tools/check_board.py keeps its own copy of this list and checks that they agree,
# that every frozen module compiles for xtensawin and imports only frozen or built-in modules.
HOST_ONLY = ("hal/host.py", "hal/norflash.py")


def device_files(pkg_dir):
    found = []
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), pkg_dir).replace(os.sep, "/")
                if rel not in HOST_ONLY:
                    found.append(rel)
    return found


# opt=2: `assert` statements and `if __debug__:` blocks are compiled out (the firmware validates
# with exceptions, never with assert: check_board.py fails on any assert or __debug__ in frozen
# code); source line numbers stay, so tracebacks in the log name the line. -O3 would drop them to
# save about 7 KB of the 4 MiB flash.
package("firmware", files=device_files("../../firmware"), base_path="../..", opt=2)

# umqtt.simple from micropython-lib, exactly the file the tests run (tools/fetch_lib.py puts the
# sha256-pinned PyPI release in lib/: `make lib` before building the image), as micropython-lib's
# own manifest freezes it (package "umqtt"). opt=0: its asserts check the broker's answers
# (CONNACK, SUBACK) and must stay, as they are in the tests.
package("umqtt", base_path="../../lib", opt=0)
