# The configuration-error suite (docs/configuration.md "Configuration check"): each invalid
# configuration gives the documented severity, key and message, and never quotes a secret.
# Runs on both runtimes; the hypothesis fuzz of check() is host_tests/integration/
# test_config_fuzz.py (CPython), a seeded one is here too.
import unittest

from rng import Rng

from firmware import log
from firmware.app import config

PW = "0123456789AB"  # B-route format: 12 letters and digits
RBID = "00112233445566778899AABBCCDDEEFF"
PSK = "wpa2-Secret-Passphrase-7731"
KEEP, SETUP = config.KEEP_DEFAULT, config.SETUP


def good(**sections):
    """A usable configuration (Wi-Fi board) with sections overridden."""
    c = {"radio": {"pana_password": PW}, "lan": {"wifi_ssid": "plant-ap", "wifi_psk": PSK}}
    for k, v in sections.items():
        c.setdefault(k, {}).update(v)
    return c


class ConfigCheckTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def check(self, overrides, kind="wifi"):
        cfg = config.merge(overrides)
        return cfg, config.check(cfg, kind)

    def only(self, overrides, kind="wifi"):
        cfg, probs = self.check(overrides, kind)
        self.assertEqual(len(probs), 1, probs)
        return cfg, probs[0]

    def test_usable_configuration_has_no_problem(self):
        cfg, probs = self.check(good())
        self.assertEqual(probs, [])
        cfg, probs = self.check({"radio": {"pana_password": PW}}, "ethernet")
        self.assertEqual(probs, [])

    def test_typo_in_optional_key_keeps_default(self):
        cfg, p = self.only(good(meter={"timeout_msec": 100}))
        self.assertEqual(p, (KEEP, "meter.timeout_msec", "unknown key; ignored (a typo? "
                             "docs/config-reference.md lists the keys)"))
        self.assertEqual(cfg["meter"]["timeout_ms"], 5000)

    def test_wrong_type_keeps_default(self):
        cfg, p = self.only(good(meter={"retries": "3"}))
        self.assertEqual(p, (KEEP, "meter.retries", "is a str, expected a int; default kept"))
        self.assertEqual(cfg["meter"]["retries"], 3)

    def test_text_of_the_wrong_type_is_not_echoed(self):
        # a password typed into an int key: not registered as a secret, so never shown
        cfg, p = self.only(good(meter={"port": "Qx7Rt2Wy9Zp4"}))
        self.assertEqual(p, (KEEP, "meter.port", "is a str, expected a int; default kept"))
        self.assertNotIn("Qx7Rt2Wy9Zp4", "\n".join(self.lines))

    def test_out_of_range_keeps_default_and_says_range(self):
        cfg, p = self.only(good(clock={"slew_max_s": 99999}))
        self.assertEqual(p, (KEEP, "clock.slew_max_s",
                             "= 99999 is out of range; expected 0..3600; default 60 kept"))
        self.assertEqual(cfg["clock"]["slew_max_s"], 60)

    def test_bad_enum_keeps_default(self):
        cfg, p = self.only(good(dlms={"energy_type": "u16"}))
        self.assertEqual(p[:2], (KEEP, "dlms.energy_type"))
        self.assertIn("expected one of 'u64', 'u32'", p[2])
        self.assertEqual(cfg["dlms"]["energy_type"], "u64")

    def test_missing_pana_password_enters_setup(self):
        cfg, p = self.only({"lan": {"wifi_ssid": "plant-ap", "wifi_psk": PSK}})
        self.assertEqual(p, (SETUP, "radio.pana_password",
                             "is missing: the radio cannot join without it"))

    def test_malformed_password_enters_setup_with_credentials_message(self):
        secret = "0123456789A-"
        cfg, p = self.only(good(radio={"pana_password": secret}))
        self.assertEqual(p, (SETUP, "radio.pana_password",
                             "character 12 is not a letter or digit (expected 12 letters and "
                             "digits)"))
        self.assertNotIn(secret, "\n".join(self.lines))

    def test_free_credential_format(self):
        cfg, probs = self.check(good(radio={"pana_password": "a long pass-phrase!",
                                            "credential_format": "free"}))
        self.assertEqual([p for p in probs if p[1] != "radio.pana_password"], [])
        self.assertIn("printable", probs[0][2])  # the space is not printable ASCII here
        cfg, probs = self.check(good(radio={"pana_password": "long-pass-phrase!",
                                            "credential_format": "free"}))
        self.assertEqual(probs, [])

    def test_malformed_route_b_id_enters_setup(self):
        cfg, p = self.only(good(radio={"route_b_id": RBID[:31] + "O"}))
        self.assertEqual(p, (SETUP, "radio.route_b_id", "character 32 is the letter O, not a "
                                                        "hexadecimal digit (the digit 0?)"))

    def test_b_route_needs_an_id(self):
        cfg, p = self.only(good(radio={"route": "b"}))
        self.assertEqual(p[:2], (SETUP, "radio.route_b_id"))
        cfg, probs = self.check(good(radio={"route": "b", "route_b_id": RBID}))
        self.assertEqual(probs, [])

    def test_unusable_radio_section_enters_setup(self):
        cfg, p = self.only(good(radio={"route": "c"}))
        self.assertEqual(p, (SETUP, "radio.route",
                             "is not an allowed value; expected one of 'han', 'b'"))
        cfg, p = self.only(good(radio={"sm_mac": "001D12901234567G"}))
        self.assertEqual(p, (SETUP, "radio.sm_mac", "expected 16 hexadecimal digits"))

    def test_open_network_enters_setup(self):
        cfg, p = self.only({"radio": {"pana_password": PW}, "lan": {"wifi_ssid": "plant-ap"}})
        self.assertEqual(p, (SETUP, "lan.wifi_psk", "is empty: open networks are not allowed; "
                             "expected a WPA2/WPA3 passphrase of 8 to 63 characters"))

    def test_bad_ssid_and_short_psk_enter_setup(self):
        cfg, probs = self.check({"radio": {"pana_password": PW},
                                 "lan": {"wifi_ssid": "", "wifi_psk": "Zq7#x"}})
        self.assertEqual(sorted(probs), [  # dicts keep no order on MicroPython
            (SETUP, "lan.wifi_psk", "has 5 characters; expected a passphrase of 8 to 63 "
                                    "(WPA2/WPA3)"),
            (SETUP, "lan.wifi_ssid", "is 0 bytes long; expected 1 to 32 bytes")])
        self.assertNotIn("Zq7#x", "\n".join(self.lines))

    def test_wifi_keys_not_needed_on_a_wired_board(self):
        cfg, probs = self.check({"radio": {"pana_password": PW}}, "ethernet")
        self.assertEqual(probs, [])

    def test_secret_value_in_a_non_secret_key_enters_setup(self):
        cfg, probs = self.check(good(meter={"metered_id": PSK}))
        self.assertEqual(probs, [(SETUP, "meter.metered_id", "holds the value of lan.wifi_psk, "
                                  "a secret; a secret goes only in its own key")])
        self.assertNotIn(PSK, "\n".join(self.lines))

    def test_credential_shaped_value_in_a_clear_key_enters_setup(self):
        cfg, p = self.only(good(dlms={"ldn": RBID}))
        self.assertEqual(p, (SETUP, "dlms.ldn", "looks like a Wi-SUN authentication ID (32 "
                             "hexadecimal digits); a secret in the wrong field? put it in "
                             "radio.route_b_id"))
        self.assertEqual(cfg["dlms"]["ldn"], RBID)  # not "fixed" to the default: setup decides
        self.assertNotIn(RBID, "\n".join(self.lines))  # registered as a secret from now on
        cfg, p = self.only(good(lan={"wifi_ssid": RBID}))
        self.assertEqual(p[:2], (SETUP, "lan.wifi_ssid"))

    def test_password_shaped_ssid_only_when_the_password_is_missing(self):
        # an SSID of 12 letters and digits is legal; it is suspicious only when the radio has
        # no usable password (the user typed it in the wrong field)
        cfg, probs = self.check(good(lan={"wifi_ssid": "Buffalo12345"}))
        self.assertEqual(probs, [])
        cfg, probs = self.check({"lan": {"wifi_ssid": "QW12ER34TY56", "wifi_psk": PSK}})
        self.assertEqual(sorted([p[:2] for p in probs]), [(SETUP, "lan.wifi_ssid"),
                                                          (SETUP, "radio.pana_password")])
        self.assertIn("looks like a Wi-SUN password", [p for p in probs
                                                       if p[1] == "lan.wifi_ssid"][0][2])

    def test_default_equal_to_a_secret_is_not_misplaced(self):
        # dlms.device_id's default is twelve zeros, a legal (if silly) password
        cfg, probs = self.check(good(radio={"pana_password": "000000000000"}))
        self.assertEqual(probs, [])

    def test_merge_problems_come_first_and_once(self):
        cfg = config.merge({"nosuch": {}, "meter": 5})
        probs = config.check(cfg, "host")
        self.assertEqual(sorted(probs[:2]), [
            (KEEP, "meter", "must be an object of keys; defaults used"),
            (KEEP, "nosuch", "unknown section; ignored (a typo?)")])
        self.assertEqual(config.check(cfg, "host")[:1], [probs[2]])  # not repeated

    def test_net_kind_defaults_to_lan_kind(self):
        cfg = config.merge({"radio": {"pana_password": PW}, "lan": {"kind": "wifi"}})
        self.assertEqual(sorted([p[1] for p in config.check(cfg)]),
                         ["lan.wifi_psk", "lan.wifi_ssid"])

    def test_seeded_fuzz_never_raises_never_echoes(self):
        rng = Rng(11)
        keys = []
        for sect, d in config.DEFAULTS.items():
            for k in d:
                keys.append((sect, k))
        keys += [("radio", "pana_password"), ("radio", "route_b_id"), ("radio", "sm_mac")]
        secret = "Sx9" + "q" * 9
        values = [0, -1, 1 << 40, True, None, "", "x", secret, RBID, PW, [], {}, [1, "a"],
                  {"a": secret}, 3.5, "1.2.3.4", "0.0.25.9.0.255", "\u00e9" * 40]
        leaked = []
        log.set_sink(lambda line: leaked.append(line) if secret in line else None)
        for _ in range(300):
            over = {"radio": {"pana_password": secret}}
            for _j in range(rng.below(6)):
                s, k = keys[rng.below(len(keys))]
                over.setdefault(s, {})[k] = values[rng.below(len(values))]
            cfg = config.merge(over)
            probs = config.check(cfg, ("wifi", "ethernet", None)[rng.below(3)])
            for p in probs:
                self.assertEqual(len(p), 3)
                self.assertIn(p[0], (KEEP, SETUP))
                self.assertNotIn(secret, p[2])
        self.assertEqual(leaked, [])


if __name__ == "__main__":
    unittest.main()
