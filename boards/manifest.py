# Freeze the terminal into an ESP32 MicroPython image, so its bytecode runs from flash and the
# ~100 KB heap is left for data (imported from .py/.mpy files the code itself would take most of
# it: see `firmware.import_heap_kb` in bench/results.json).
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/this/repo/boards/manifest.py \
#        PART_SRC=/path/to/this/repo/boards/partitions-4MiB-meterlog.csv
include("$(PORT_DIR)/boards/manifest.py")
package("firmware", base_path="..")
