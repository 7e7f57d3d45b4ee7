# The setup page's pure parts (firmware/app/setup.py): POST body parsing, validation with the
# credential checks' own messages, the scan list, the config merge and the AP key; and the
# handlers' state machine against a fake HAL (no sockets).
import asyncio
import json
import os
import unittest

from web_fakes import Req, Resp

from firmware import log
from firmware.app import credentials, setup
from firmware.app.config import merge
from firmware.hal.wifipolicy import MIXED, STRONG, why_not

GOOD_ID = "0123456789abcdef0123456789ABCDEF"
GOOD_PW = "Z7pQ4xW2mN8k"
GOOD_PSK = "correct horse"
TMP = "/tmp/_setup_unit_%d" % os.getpid() if hasattr(os, "getpid") else "/tmp/_setup_unit"


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


class ParseBodyTest(unittest.TestCase):
    def test_form_urlencoded_with_escapes_and_plus(self):
        v, e = setup.parse_body(b"ssid=caf%C3%A9+net&psk=a%2Bb%26c+d&id=00&password=x%3Dy")
        self.assertEqual(e, {})
        self.assertEqual(v, {"ssid": "caf\u00e9 net", "psk": "a+b&c d", "id": "00",
                             "password": "x=y"})

    def test_json_object(self):
        v, e = setup.parse_body(b' {"ssid": "home", "psk": "p\\u00e4ss", "id": ""}')
        self.assertEqual(e, {})
        self.assertEqual(v, {"ssid": "home", "psk": "p\u00e4ss", "id": ""})

    def test_json_lone_surrogate_is_not_text(self):
        # found by the fuzz: a cut "\ud800\udc00" pair leaves a str that cannot be encoded
        v, e = setup.parse_body(b'{"ssid": "a\\udc00b", "psk": "correct horse"}')
        if "ssid" in v:  # MicroPython's parser may decode it otherwise: then it must be text
            self.assertEqual(v["ssid"].encode().decode(), v["ssid"])
        else:
            self.assertEqual(e, {"ssid": "is not UTF-8 text"})
        self.assertEqual(v["psk"], "correct horse")

    def test_empty_body_has_no_values(self):
        self.assertEqual(setup.parse_body(b""), ({}, {}))

    def test_non_utf8_value_is_an_error_of_that_field_only(self):
        v, e = setup.parse_body(b"ssid=%83e%83X%83g&psk=%ff%fe&id=" + GOOD_ID.encode())
        self.assertEqual(e, {"ssid": "is not UTF-8 text", "psk": "is not UTF-8 text"})
        self.assertEqual(v, {"id": GOOD_ID})

    def test_broken_escapes(self):
        for body in (b"psk=%", b"psk=ab%4", b"psk=%zz", b"psk=%4g"):
            v, e = setup.parse_body(body)
            self.assertEqual(e, {"psk": "is not properly URL-encoded"}, body)
            self.assertEqual(v, {})
        v, e = setup.parse_body(b"ps%k=1")
        self.assertEqual(list(e), ["form"])

    def test_unknown_and_repeated_fields(self):
        v, e = setup.parse_body(b"ssid=a&admin=1")
        self.assertEqual(e, {"form": "the form has a field this page does not know"})
        v, e = setup.parse_body(b"psk=secret-one&psk=secret-two")
        self.assertEqual(e, {"psk": "is given twice"})
        self.assertNotIn("psk", v)

    def test_json_not_an_object_or_not_text(self):
        self.assertEqual(setup.parse_body(b'{"psk": ')[1], {"form": "the body is not valid JSON"})
        # not JSON (MicroPython's parser takes it, with a key that is no field): refused either way
        self.assertEqual(list(setup.parse_body(b"{1: 2}")[1]), ["form"])
        v, e = setup.parse_body(b'{"psk": 12345678, "id": null, "ssid": ["x"]}')
        self.assertEqual(e, {"psk": "must be text", "id": "must be text", "ssid": "must be text"})
        self.assertEqual(setup.parse_body(b'{"x": "y"}')[1],
                         {"form": "the form has a field this page does not know"})

    def test_over_long_body(self):
        v, e = setup.parse_body(b"psk=" + b"a" * setup.MAX_BODY)
        self.assertEqual(e, {"form": "the form is over %d bytes" % setup.MAX_BODY})
        self.assertEqual(v, {})


class ValidateTest(unittest.TestCase):
    def cfg(self, **radio):
        return merge({"radio": radio})

    def test_good_values_become_updates(self):
        u, e = setup.validate({"ssid": "home", "psk": GOOD_PSK, "id": GOOD_ID,
                               "password": GOOD_PW}, self.cfg(), True)
        self.assertEqual(e, {})
        self.assertEqual(u, {"lan": {"wifi_ssid": "home", "wifi_psk": GOOD_PSK},
                             "radio": {"route_b_id": GOOD_ID, "pana_password": GOOD_PW}})

    def test_errors_are_the_credential_checks_own_messages(self):
        bad = {"ssid": "x" * 33, "psk": "p" * 65, "id": GOOD_ID[:-1] + "O",
               "password": "short"}
        u, e = setup.validate(bad, self.cfg(), True)
        self.assertEqual(e, {"ssid": credentials.check_ssid(bad["ssid"]),
                             "psk": credentials.check_psk(bad["psk"]),
                             "id": credentials.check_id(bad["id"]),
                             "password": credentials.check_password("short")})
        self.assertEqual(e["id"],
                         "character 32 is the letter O, not a hexadecimal digit (the digit 0?)")

    def test_over_long_values_are_refused_without_quoting_them(self):
        secret = "Q" * 200
        u, e = setup.validate({"ssid": secret, "psk": secret, "id": secret, "password": secret},
                              self.cfg(), True)
        self.assertEqual(sorted(e), ["id", "password", "psk", "ssid"])
        for m in e.values():
            self.assertNotIn("QQ", m)

    def test_missing_values_are_required(self):
        u, e = setup.validate({}, self.cfg(), True)
        self.assertEqual(e, {"ssid": "choose a network", "psk": "enter the network's key (PSK)",
                             "id": "is required", "password": "is required"})

    def test_empty_fields_keep_configured_values_that_pass_their_check(self):
        cfg = merge({"lan": {"wifi_ssid": "home", "wifi_psk": GOOD_PSK},
                     "radio": {"route_b_id": GOOD_ID, "pana_password": GOOD_PW}})
        u, e = setup.validate({"id": "", "password": ""}, cfg, True)
        self.assertEqual(e, {})
        self.assertEqual(u, {"lan": {"wifi_ssid": "home", "wifi_psk": GOOD_PSK}})
        # another network: its key must be given
        u, e = setup.validate({"ssid": "other"}, cfg, True)
        self.assertEqual(e, {"psk": "enter the network's key (PSK)"})
        # a configured value that fails its check is not kept
        cfg["radio"]["route_b_id"] = "O" * 32
        u, e = setup.validate({"password": ""}, cfg, True)
        self.assertEqual(e, {"id": "is required"})

    def test_free_credential_format(self):
        cfg = self.cfg(credential_format="free")
        u, e = setup.validate({"id": GOOD_ID, "password": "any-printable!"}, cfg, False)
        self.assertEqual(e, {})
        self.assertEqual(u, {"radio": {"route_b_id": GOOD_ID, "pana_password": "any-printable!"}})

    def test_wifi_fields_ignored_without_wifi(self):
        u, e = setup.validate({"ssid": "x" * 40, "psk": "1", "id": GOOD_ID, "password": GOOD_PW},
                              self.cfg(), False)
        self.assertEqual(e, {})
        self.assertNotIn("lan", u)


class ScanPolicyTest(unittest.TestCase):
    def test_every_refusal_has_its_reason(self):
        self.assertEqual(why_not("SEC_OPEN"), "open network (no encryption)")
        self.assertEqual(why_not("SEC_WEP"), "WEP (broken encryption) is below WPA2")
        self.assertEqual(why_not("SEC_WPA"), "WPA (TKIP) is below WPA2")
        self.assertEqual(why_not("SEC_WPA_WPA2"),
                         "WPA/WPA2 mixed is allowed only with lan.wifi_allow_wpa_wpa2_mixed")
        self.assertIsNone(why_not("SEC_WPA_WPA2", allow_mixed=True))
        self.assertIn("enterprise", why_not("SEC_WPA2_ENT"))
        self.assertIn("OWE", why_not("SEC_OWE"))
        self.assertEqual(why_not("security 99"), "security 99 is not WPA2/WPA3")
        for name in STRONG:
            self.assertIsNone(why_not(name))
        self.assertNotIn(MIXED, STRONG)

    def test_networks_strongest_first_and_unstorable_names_not_selectable(self):
        scan = [(b"home", b"\x02\x00\x00\x00\x00\x01", -60, "SEC_WPA2", True, None),
                (b"\x83e\x83X\x83g", b"\x02\x00\x00\x00\x00\x02", -30, "SEC_WPA3", True, None),
                (b"", b"\x02\x00\x00\x00\x00\x03", -40, "SEC_WPA2", True, None),
                (b"old", b"\x02\x00\x00\x00\x00\x04", -50, "SEC_WPA", False,
                 why_not("SEC_WPA"))]
        rows = list(setup.networks(scan))
        self.assertEqual([r["bssid"][-2:] for r in rows], ["02", "03", "04", "01"])
        sj, hidden, old, home = rows
        self.assertEqual((sj["ssid"], sj["ssid_hex"], sj["ok"]), (None, "836583588367", False))
        self.assertIn("not UTF-8", sj["why"])
        self.assertEqual((hidden["ok"], hidden["why"]), (False, "hidden network (no name)"))
        self.assertEqual((old["ok"], old["why"], old["sec"]),
                         (False, "WPA (TKIP) is below WPA2", "WPA"))
        self.assertEqual((home["ssid"], home["ok"], home["why"], home["sec"], home["rssi"]),
                         ("home", True, "", "WPA2", -60))

    def test_networks_capped(self):
        scan = [(b"n%d" % i, bytes(6), -i, "SEC_WPA2", True, None) for i in range(60)]
        rows = list(setup.networks(scan))
        self.assertEqual(len(rows), setup.MAX_NETS)
        self.assertEqual(rows[0]["ssid"], "n0")


class ConfigFileTest(unittest.TestCase):
    def setUp(self):
        _mkdir(TMP)
        self.path = TMP + "/config.json"
        for p in (self.path, self.path + ".broken", self.path + ".tmp"):
            _rm(p)

    def test_merge_keeps_other_keys_and_leaves_no_temp_file(self):
        with open(self.path, "w") as f:
            f.write(json.dumps({"lan": {"bind_ip": "10.0.0.5", "wifi_ssid": "old"},
                                "meter": {"ip": "10.0.0.9"}}))
        setup.write_config(self.path, {"lan": {"wifi_ssid": "home", "wifi_psk": GOOD_PSK},
                                       "radio": {"route_b_id": GOOD_ID}})
        with open(self.path) as f:
            data = json.load(f)
        self.assertEqual(data, {"lan": {"bind_ip": "10.0.0.5", "wifi_ssid": "home",
                                        "wifi_psk": GOOD_PSK},
                                "meter": {"ip": "10.0.0.9"},
                                "radio": {"route_b_id": GOOD_ID}})
        self.assertRaises(OSError, os.stat, self.path + ".tmp")

    def test_missing_file_is_created(self):
        setup.write_config(self.path, {"radio": {"pana_password": GOOD_PW}})
        with open(self.path) as f:
            self.assertEqual(json.load(f), {"radio": {"pana_password": GOOD_PW}})

    def test_broken_file_is_kept_aside(self):
        for text in ("{not json", "[1, 2]", '{"lan": 5}'):
            _rm(self.path + ".broken")
            with open(self.path, "w") as f:
                f.write(text)
            setup.write_config(self.path, {"lan": {"wifi_ssid": "home"}})
            with open(self.path) as f:
                self.assertEqual(json.load(f)["lan"], {"wifi_ssid": "home"})
            if text != '{"lan": 5}':  # an object with a bad section is merged into, not kept
                with open(self.path + ".broken") as f:
                    self.assertEqual(f.read(), text)


class ApKeyTest(unittest.TestCase):
    def setUp(self):
        _mkdir(TMP)
        _rm(TMP + "/" + setup.KEY_FILE)
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def cfg(self, psk=""):
        return merge({"store": {"state_path": TMP + "/state.json"}, "web": {"setup_psk": psk}})

    def test_new_key_alphabet_length_and_no_bias_source(self):
        k = setup.new_key(lambda n: bytes(range(250, 256)) + bytes(range(n)))
        self.assertEqual(len(k), setup.KEY_LEN)
        for c in k:
            self.assertIn(c, "abcdefghjkmnpqrstuvwxyz23456789")
        self.assertEqual(k[:2], "ab")  # 250..255 (above the last whole alphabet) rejected
        self.assertIsNone(credentials.check_psk(k))

    def test_generated_once_kept_and_reused(self):
        k, made = setup.ap_key(self.cfg())
        self.assertTrue(made)
        self.assertIsNone(credentials.check_psk(k))
        with open(TMP + "/" + setup.KEY_FILE) as f:
            self.assertEqual(f.read(), k)
        self.assertEqual(setup.ap_key(self.cfg()), (k, False))

    def test_configured_key_wins_and_a_bad_one_is_refused(self):
        self.assertEqual(setup.ap_key(self.cfg("configured key")), ("configured key", False))
        k, made = setup.ap_key(self.cfg("short"))
        self.assertTrue(made)
        self.assertNotEqual(k, "short")
        self.assertIn("web.setup_psk has 5 characters", "\n".join(self.lines))

    def test_a_kept_key_that_is_not_a_wpa2_key_is_replaced(self):
        with open(TMP + "/" + setup.KEY_FILE, "w") as f:
            f.write("bad")
        k, made = setup.ap_key(self.cfg())
        self.assertTrue(made)
        self.assertEqual(len(k), setup.KEY_LEN)


class FakeHal:
    def __init__(self, results):
        self.board = {"network": {"kind": "wifi"}}
        self.results = list(results)
        self.joins = []
        self.stops = 0
        self.resets = 0
        self.ap_stops = 0

    def wifi_scan(self):
        return [(b"home", b"\x02\x00\x00\x00\x00\x01", -50, "SEC_WPA2", True, None)]

    def station_join(self, ssid, psk):
        self.joins.append((ssid, psk))

    def station_result(self):
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]

    def station_stop(self):
        self.stops += 1

    def ap_stop(self):
        self.ap_stops += 1

    def reset(self):
        self.resets += 1


class HandlerTest(unittest.TestCase):
    def setUp(self):
        _mkdir(TMP)
        self.path = TMP + "/config.json"
        with open(self.path, "w") as f:
            f.write('{"meter": {"ip": "10.0.0.9"}}')
        self.lines = []
        log.set_sink(self.lines.append)

    def tearDown(self):
        log.set_sink(None)

    def make(self, results):
        self.hal = FakeHal(results)
        # the state dir in TMP: a saved configuration clears the boot-loop count next to it
        cfg = merge({"store": {"state_path": TMP + "/state.json"}})
        s = setup.Setup(self.hal, cfg, 2, [(2, "radio.route_b_id", "has 0 characters")],
                        self.path, True)
        s.restart_ms = 0
        return s

    def call(self, handler, body=b""):
        resp = Resp()
        asyncio.run(handler(Req(body), resp))
        return resp.status, json.loads(resp.body) if resp.body[:1] == b"{" else resp.body

    def body(self, psk=GOOD_PSK, wid=GOOD_ID):
        return json.dumps({"ssid": "home", "psk": psk, "id": wid,
                           "password": GOOD_PW}).encode()

    def test_info_and_scan_and_page(self):
        s = self.make([("joined", "10.0.0.5")])
        st, d = self.call(s.info)
        self.assertEqual(st, 200)
        self.assertEqual((d["why"], d["state"], d["wifi"]), (2, "setup", True))
        self.assertEqual(d["problems"], [{"severity": 2, "key": "radio.route_b_id",
                                          "message": "has 0 characters"}])
        st, d = self.call(s.scan)
        self.assertEqual(d["networks"][0]["ssid"], "home")
        self.hal.wifi_scan = lambda: []
        self.assertEqual(self.call(s.scan), (200, {"networks": []}))
        st, page = self.call(s.page)
        self.assertEqual(st, 200)
        self.assertIn(b"/api/result", page)

    def test_refused_form_answers_400_per_field_and_writes_nothing(self):
        s = self.make([("joined", "10.0.0.5")])
        st, d = self.call(s.submit, self.body(wid=GOOD_ID[:-1] + "O"))
        self.assertEqual(st, 400)
        self.assertEqual(d, {"ok": False, "errors": {"id": credentials.check_id(
            GOOD_ID[:-1] + "O")}})
        self.assertEqual(s.state, "setup")
        self.assertEqual(self.hal.joins, [])

    def apply(self, s, body):
        async def go():
            resp = Resp()
            await s.submit(Req(body), resp)
            if s._task is not None:
                await s._task
            return resp

        return asyncio.run(go())

    def test_only_json_is_taken_a_cross_site_form_is_refused(self):
        # an HTML form on another site can post text/plain that reads as JSON (CSRF)
        s = self.make([("joined", "10.0.0.5")])
        for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
            resp = Resp()
            asyncio.run(s.submit(Req(self.body(), ctype), resp))
            self.assertEqual(resp.status, 415)
        self.assertEqual((self.hal.joins, s.state), ([], "setup"))

    def test_joined_then_written_then_restart(self):
        from firmware.app import safeboot

        sb = safeboot.path_for(TMP + "/state.json")
        for _ in range(5):  # a boot loop brought the device here
            safeboot.enter(sb)
        s = self.make([("joining", ""), ("joined", "10.0.0.5")])
        resp = self.apply(s, self.body())
        self.assertEqual(safeboot.enter(sb), 1)  # written: the count started again
        self.assertEqual(json.loads(resp.body), {"ok": True, "state": "joining"})
        self.assertEqual(self.hal.joins, [("home", GOOD_PSK)])
        self.assertEqual((s.state, s.detail), ("joined", "10.0.0.5"))
        with open(self.path) as f:
            data = json.load(f)
        self.assertEqual(data["lan"], {"wifi_ssid": "home", "wifi_psk": GOOD_PSK})
        self.assertEqual(data["radio"], {"route_b_id": GOOD_ID, "pana_password": GOOD_PW})
        self.assertEqual(data["meter"], {"ip": "10.0.0.9"})
        self.assertEqual((self.hal.ap_stops, self.hal.resets), (1, 1))
        st, d = self.call(s.result)
        self.assertEqual(d, {"state": "joined", "detail": "10.0.0.5"})
        st, d = self.call(s.submit, self.body())  # busy now: not a second join
        self.assertEqual(st, 503)
        text = "\n".join(self.lines)
        for secret in (GOOD_PSK, GOOD_ID, GOOD_PW):
            self.assertNotIn(secret, text)

    def test_failed_join_writes_nothing_and_the_form_may_be_sent_again(self):
        s = self.make([("failed", "the access point refused the key (wrong PSK)")])
        self.apply(s, self.body(psk="wrong key here"))
        self.assertEqual((s.state, s.detail),
                         ("failed", "the access point refused the key (wrong PSK)"))
        self.assertEqual(self.hal.stops, 1)
        self.assertEqual(self.hal.resets, 0)
        with open(self.path) as f:
            self.assertEqual(json.load(f), {"meter": {"ip": "10.0.0.9"}})
        self.hal.results = [("joined", "10.0.0.5")]
        self.apply(s, self.body())
        self.assertEqual(s.state, "joined")

    def test_board_without_wifi_saves_without_joining(self):
        s = self.make([("failed", "must not be asked")])
        s.wifi = False
        resp = self.apply(s, json.dumps({"id": GOOD_ID, "password": GOOD_PW}).encode())
        self.assertEqual(json.loads(resp.body)["state"], "saved")
        self.assertEqual(s.state, "saved")
        self.assertEqual(self.hal.joins, [])
        with open(self.path) as f:
            self.assertNotIn("lan", json.load(f))


class ServeSetupTest(unittest.TestCase):
    def test_an_access_point_that_cannot_start_is_logged_and_the_watchdog_fed(self):
        from firmware.compat import wait_ms

        class Hal:
            board = {"network": {"kind": "wifi"}}
            fed = 0

            def ap_start(self, ssid, psk):
                raise OSError("Wifi Invalid Password")

            def feed_watchdog(self):
                Hal.fed += 1

        lines = []
        log.set_sink(lines.append)
        _mkdir(TMP)
        cfg = merge({"store": {"state_path": TMP + "/state.json"}})
        try:
            asyncio.run(wait_ms(setup.serve_setup(Hal(), cfg, 2, [], None, TMP + "/c.json"),
                                1500))
        except asyncio.TimeoutError:
            pass  # it runs until the device restarts: stopped here
        finally:
            log.set_sink(None)
        self.assertIn("ERROR setup: setup access point could not start: Wifi Invalid Password",
                      lines)
        self.assertGreaterEqual(Hal.fed, 2)
