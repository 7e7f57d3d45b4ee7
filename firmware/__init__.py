# IoT-route wireless terminal firmware (runs on MicroPython/ESP32 and on CPython for host tests).
