// IoT-route wireless terminal: ESP32-WROOM-32, 4 MiB flash, no PSRAM.
// os.uname().machine reads "<BOARD_NAME> with <MCU_NAME>"; tools/deploy.py checks it.
#define MICROPY_HW_BOARD_NAME "IoT-route wireless terminal"
#define MICROPY_HW_MCU_NAME "ESP32"

// No Bluetooth (mpconfigboard.cmake leaves out boards/sdkconfig.ble).
#define MICROPY_PY_BLUETOOTH (0)
