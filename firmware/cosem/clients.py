# Who may associate: the client table built from the `dlms` configuration (docs/dlms.md
# "Security"). Three clients by default (SPEC: the IoT-route spec is not public):
#   public  SAP 16  no authentication              ROLE_PUBLIC
#   reader  SAP 17  LLS (or HLS-GMAC)               ROLE_READER
#   mgmt    SAP 1   HLS-GMAC (or LLS, weaker)       ROLE_MGMT
# A client whose credentials are not configured is disabled; one whose credentials are malformed
# is disabled with an error that names the key, never its value. Every secret is registered with
# the log's redaction before anything can print it.
from firmware import log
from firmware.cosem import acse
from firmware.cosem.objects import ROLE_MGMT, ROLE_PUBLIC, ROLE_READER

_TAG = "cosem"
MECHANISMS = {"lls": acse.MECH_LLS, "gmac": acse.MECH_GMAC}
TITLE_LEN = 8
KEY_LEN = 16


class Client:
    """One configured client: SAP, role, mechanism, LLS password, suite 0 keys (or None: no
    ciphering) and the system title it must use (None: any 8-byte title)."""

    def __init__(self, sap, role, mechanism, password=None, keys=None, title=None):
        self.sap = sap
        self.role = role
        self.mechanism = mechanism
        self.password = password
        self.keys = keys
        self.title = title


class ConfigError(ValueError):
    """A malformed dlms security setting; the message names the key, never the value."""


def _register_hex(text):
    log.add_secret(text)
    log.add_secret(text.lower())
    log.add_secret(text.upper())


def hex_setting(cfg, key, n, secret):
    """bytes of the hex text cfg[key] (exactly n bytes), None when empty."""
    v = cfg.get(key, "")
    if secret and isinstance(v, str) and v:
        _register_hex(v)
    if v == "" or v is None:
        return None
    if not isinstance(v, str) or len(v) != 2 * n:
        raise ConfigError("dlms.%s must be %d hex digits" % (key, 2 * n))
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise ConfigError("dlms.%s must be %d hex digits" % (key, 2 * n)) from None


def password_setting(cfg, key):
    pw = cfg.get(key, "") or ""
    if isinstance(pw, str):
        log.add_secret(pw)
        pw = pw.encode()
    else:
        pw = bytes(pw)
        log.add_secret(pw)
    return pw or None


def server_title(cfg):
    """Our system title (8 bytes) from dlms.system_title; ConfigError when malformed."""
    t = hex_setting(cfg, "system_title", TITLE_LEN, False)
    if t is None:
        raise ConfigError("dlms.system_title must be %d hex digits" % (2 * TITLE_LEN))
    return t


def _authenticated(cfg, name, sap, role, aes_ecb, title_ok):
    mech_name = cfg.get(name + "_mechanism", "")
    mech = MECHANISMS.get(mech_name)
    if mech is None:
        raise ConfigError("dlms.%s_mechanism must be 'lls' or 'gmac'" % name)
    pw = password_setting(cfg, "lls_password" if name == "reader" else name + "_password")
    ek = hex_setting(cfg, name + "_ek", KEY_LEN, True)
    ak = hex_setting(cfg, name + "_ak", KEY_LEN, True)
    title = hex_setting(cfg, name + "_title", TITLE_LEN, False)
    if (ek is None) != (ak is None):
        raise ConfigError("dlms.%s_ek and dlms.%s_ak must both be set or both empty"
                          % (name, name))
    if ek is not None and not title_ok:
        raise ConfigError("dlms.%s keys need a valid dlms.system_title" % name)
    if ek is not None and aes_ecb is None:
        raise ConfigError("dlms.%s keys need AES (the server was given no aes_ecb)" % name)
    if mech == acse.MECH_LLS and pw is None:
        return None  # not configured: the client is disabled
    if mech == acse.MECH_GMAC and ek is None:
        return None
    keys = None
    if ek is not None:
        from firmware.cosem.security import Keys

        keys = Keys(aes_ecb, ek, ak)
    return Client(sap, role, mech, pw, keys, title)


def build(cfg, aes_ecb):
    """{client SAP: Client} from the dlms section; malformed entries are logged and their
    client disabled (metering goes on). aes_ecb: the HAL's AES block function (None: no
    ciphering available)."""
    clients = {cfg["public_client_sap"]: Client(cfg["public_client_sap"], ROLE_PUBLIC,
                                                acse.MECH_NONE)}
    title_ok = True
    try:
        server_title(cfg)
    except ConfigError as e:
        log.error(_TAG, "%s; ciphered clients disabled" % e)
        title_ok = False
    for name, role in (("reader", ROLE_READER), ("mgmt", ROLE_MGMT)):
        sap = cfg[name + "_client_sap"]
        try:
            c = _authenticated(cfg, name, sap, role, aes_ecb, title_ok)
        except ConfigError as e:
            log.error(_TAG, "%s; %s client disabled" % (e, name))
            continue
        if c is None:
            log.info(_TAG, "%s client (SAP %d) not configured: disabled" % (name, sap))
            continue
        if sap in clients:
            log.error(_TAG, "dlms.%s_client_sap %d is already used; %s client disabled"
                      % (name, sap, name))
            continue
        clients[sap] = c
    return clients
