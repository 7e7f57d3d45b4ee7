# AES-128 block encryption (ECB, one 16-byte block at a time): the only primitive DLMS security
# suite 0 needs from the platform (firmware/cosem/security.py builds GCM on it). MicroPython's
# `cryptolib` (mbedTLS-backed on the ESP32, also in the unix port); the `cryptography` package on
# CPython (host only: tools/check_board.py skips the CPython branch). AES rounds are never
# written by hand.
#
# ecb(key) -> object with encrypt(src16, dst16): dst16 (a bytearray) receives E_K(src16).
from firmware.compat import IS_MICROPYTHON


def _check(key):
    if len(key) != 16:
        raise ValueError("AES-128 key must be 16 bytes")


if IS_MICROPYTHON:
    import cryptolib

    def ecb(key):
        """AES-128-ECB encryptor for a 16-byte key."""
        _check(key)
        return cryptolib.aes(bytes(key), 1)

else:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class _CryptographyEcb:
        def __init__(self, key):
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, src, dst):
            dst[0:16] = self._enc.update(bytes(src[0:16]))

    def ecb(key):
        """AES-128-ECB encryptor for a 16-byte key."""
        _check(key)
        return _CryptographyEcb(key)
