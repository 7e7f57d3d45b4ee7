# Runs before main.py on the device. Keep it trivial and unable to fail: the watchdog is started by
# the HAL as the first thing main.py does, and a broken boot.py would leave the device at the REPL.
import gc

gc.collect()
