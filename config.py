"""Settings of bmi-rpc.

Every setting has a default here; an environment variable of the same name overrides it, and the
programs' command-line flags override both (they pass them to Settings as keyword arguments).
"""
import os

# name: (default, type)
DEFAULTS = {
    "BMI_NS_HOST": ("127.0.0.1", str),          # Pyro4 name server
    "BMI_NS_PORT": (9090, int),
    "BMI_SERVER_HOST": ("127.0.0.1", str),      # main server (Pyro4 daemon)
    "BMI_SERVER_PORT": (9091, int),
    "BMI_OBJECT_NAME": ("bmi.mainserver", str),  # name the main server registers under
    "BMI_KEY_FILE": ("/etc/bmi-rpc/hmac.key", str),  # shared secret authenticating every message
    "BMI_TLS_CERT": ("", str),                  # TLS: this program's certificate (empty: no TLS)
    "BMI_TLS_KEY": ("", str),                   # TLS: its private key
    "BMI_TLS_CA": ("", str),                    # TLS: the CA that signed every program's certificate
    "BMI_AUDIT_LOG": ("", str),                 # one line an operation; empty: STATE_DIR/audit.log
    "BMI_THREADPOOL_SIZE": (160, int),          # concurrent client connections the main server serves
    "BMI_STATE_DIR": ("/var/lib/bmi", str),     # images, node disks, boot scripts, node records
    "BMI_BACKEND": ("file", str),               # storage backend: a script in scripts/storage/
    "BMI_SCRIPT_TIMEOUT": (120.0, float),       # seconds one storage or target script may run
    "BMI_CLONE_CONCURRENCY": (2 * (os.cpu_count() or 1), int),  # node disks being cloned at once
    "BMI_TGT_CONTROL_PORT": (0, int),           # tgtadm -C: which tgtd instance to drive
    "BMI_TGT_CHECK_SECONDS": (3.0, float),      # how often the server checks tgtd still has every target
    "BMI_ISCSI_PORTAL": ("127.0.0.1:3260", str),  # host:port tgtd serves targets on
    "BMI_BOOT_PORTAL": ("", str),               # host:port written into boot scripts; empty: BMI_ISCSI_PORTAL
    "BMI_IQN_PREFIX": ("iqn.2026-11.io.bmi-rpc", str),  # a node's target is <prefix>:<node>
    "BMI_CEPH_CONF": ("/etc/ceph/ceph.conf", str),  # rbd backend: cluster to use
    "BMI_CEPH_ID": ("admin", str),              # rbd backend: cephx client id
    "BMI_CEPH_POOL": ("rbd", str),              # rbd backend: pool holding images and node disks
}


class Settings:
    """One value per name in DEFAULTS, read as attributes (settings.BMI_NS_PORT)."""

    def __init__(self, **overrides):
        unknown = set(overrides) - set(DEFAULTS)
        if unknown:
            raise TypeError("unknown settings: " + ", ".join(sorted(unknown)))
        for name, (default, kind) in DEFAULTS.items():
            value = overrides.get(name)
            if value is None:
                value = os.environ.get(name, default)
            try:
                setattr(self, name, kind(value))
            except ValueError:
                raise ValueError("setting %s must be %s, not %r" % (name, kind.__name__, value))
        if not self.BMI_BOOT_PORTAL:
            self.BMI_BOOT_PORTAL = self.BMI_ISCSI_PORTAL
        if not self.BMI_AUDIT_LOG:
            self.BMI_AUDIT_LOG = os.path.join(self.BMI_STATE_DIR, "audit.log")

    def environment(self):
        """The settings as environment variables, for the scripts the server runs."""
        return {name: str(getattr(self, name)) for name in DEFAULTS}
