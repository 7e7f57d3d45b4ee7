# Wi-SUN radio: J11 frame codec and reassembler, module driver, join/session state machine.
