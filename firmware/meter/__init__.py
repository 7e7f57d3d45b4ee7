# Meter side: ECHONET Lite codec, class 0x028E decoding, the meter client (controller).
