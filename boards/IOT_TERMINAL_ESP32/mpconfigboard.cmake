# IoT-route wireless terminal on an ESP32-WROOM-32 (4 MiB flash, no PSRAM): MicroPython board
# definition for the esp32 port, built out of tree (docs/board-build.md):
#   cd micropython/ports/esp32 && make BOARD_DIR=/abs/path/to/boards/IOT_TERMINAL_ESP32
set(IDF_TARGET esp32)

# The partition table. ESP-IDF resolves CONFIG_PARTITION_TABLE_CUSTOM_FILENAME relative to the IDF
# project directory, which is the port directory (ports/esp32), not this folder. So the absolute
# path of the CSV next to this file goes into a generated sdkconfig fragment that comes last in
# SDKCONFIG_DEFAULTS: the port's CMakeLists.txt concatenates the fragments in list order and the
# last setting wins (sdkconfig.base names the port's own partitions-4MiBplus.csv).
set(IOT_TERMINAL_PARTITION_CSV ${CMAKE_CURRENT_LIST_DIR}/partitions-4MiB-meterlog.csv)
set(IOT_TERMINAL_PARTITION_FRAGMENT ${CMAKE_BINARY_DIR}/sdkconfig.partition)
file(WRITE ${IOT_TERMINAL_PARTITION_FRAGMENT} "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${IOT_TERMINAL_PARTITION_CSV}\"\n")

# No boards/sdkconfig.ble: the terminal has no use for Bluetooth, and with CONFIG_BT_ENABLED the
# ESP32's BT controller keeps its DRAM reserved whether or not Python ever activates it.
# mpconfigboard.h turns MicroPython's bluetooth module off to match.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${IOT_TERMINAL_PARTITION_FRAGMENT}
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
