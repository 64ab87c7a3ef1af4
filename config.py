"""Settings of bmi-rpc, each declared once: its name, default, check and meaning.

A value comes from the program's flag for it when one is given, else from the environment variable
of the same name, else from the default. Settings() checks every value at once, so that a program
refuses a bad one at start, in one line naming it, before it does anything.
"""
import os
import re
import socket
import sys

# Where the project's other files are (scripts/, systemd/, tools/install-service): in a checkout
# beside this file; in an installed package (pyproject.toml), in the bmi package, as its data.
ROOT = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(ROOT, "scripts")):
    ROOT = os.path.join(ROOT, "bmi")

# What names may be (bmi/names.py checks them; the settings below take them too)
IMAGE_FORM = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NODE_MAX_LENGTH = 63
NODE_FORM = "^[a-z0-9][a-z0-9.-]{0,%d}$" % (NODE_MAX_LENGTH - 1)   # becomes part of an IQN, which is lower case
IQN_MAX_BYTES = 223   # RFC 3720, 3.2.6.1: PREFIX:NODE must fit
GATEWAY_FORM = "^[a-z0-9][a-z0-9-]{0,31}$"   # part of object names in RADOS and the name server
PROJECT_FORM = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"   # a project of nodes and images (bmi/rights.py)


# --- checks: each takes the text of a value and returns the value, or raises ValueError --------

def text(value):
    return value


def non_empty(value):
    if not value:
        raise ValueError("must not be empty")
    return value


def integer(low, high=None):
    def check(value):
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < low or (high is not None and number > high):
            raise ValueError("must be a whole number %s" % ("from %d to %d" % (low, high) if high is not None
                                                          else "of at least %d" % low))
        return number
    return check


MAX_SECONDS = 86400   # a day: each becomes a time limit of a socket, a lock or epoll (at most ~24.8 days)


def seconds(value):
    """Seconds written out as a plain decimal number, read literally: no inf, nan, exponent or
    underscore, which float() would take; above 0 and at most MAX_SECONDS."""
    number = float(value) if re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", value) else 0.0
    if not 0 < number <= MAX_SECONDS:
        raise ValueError("must be a number of seconds above 0 and at most %d (a day)" % MAX_SECONDS)
    return number


UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
MAX_SIZE = 1 << 62   # 4 EiB: the scripts compare sizes in bash, whose numbers are signed 64-bit


def size(value):
    """A size in bytes: a whole number, or a number with a binary unit (K or KiB, ... E or EiB; B alone
    for bytes). Decimal units (KB, TB) are refused: they would be read as one thing or the other."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?) ?(?:([KMGTPE])(?:iB)?|B)?", value)
    number = None
    if match and (match.group(2) or "." not in match.group(1)):
        number = int(float(match.group(1)) * UNITS[match.group(2) or ""])
        if "." in match.group(1) and float(match.group(1)) * UNITS[match.group(2)] != number:
            number = None   # not a whole number of bytes
    if number is None or not 512 <= number <= MAX_SIZE:
        raise ValueError("must be a size in bytes from 512 to 4 EiB, as a whole number or with a binary unit "
                         "(16TiB, 500 GiB, 2G)")
    return number


def iqn_prefix(value):
    """The IQN prefix: PREFIX:NODE, with the longest node name, must stay within RFC 3720's 223 bytes."""
    if not re.fullmatch(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.-]*", value):
        raise ValueError("must be iqn.YYYY-MM.reversed.domain, in lower case")
    room = IQN_MAX_BYTES - 1 - NODE_MAX_LENGTH
    if len(value.encode()) > room:
        raise ValueError("must be at most %d bytes, so that PREFIX:NODE with the longest node name (%d) stays within "
                         "an IQN's %d bytes" % (room, NODE_MAX_LENGTH, IQN_MAX_BYTES))
    return value


port = integer(1, 65535)


def host(value):
    if not re.fullmatch(r"[A-Za-z0-9.:_-]+", value):
        raise ValueError("must be a host name or an IP address")
    return value


def portal(value):
    """host:port, as tgtd and iPXE write it ([v6 address]:port for IPv6)."""
    name, _, number = value.rpartition(":")
    try:
        host(name.strip("[]"))
        port(number)
    except ValueError:
        raise ValueError("must be HOST:PORT")
    return value


def advertised(value):
    """Empty, HOST, or HOST:PORT ([v6 address]:PORT for IPv6): where others reach a server."""
    if value:
        name, colon, number = value.rpartition(":") if not value.endswith("]") else ("", "", "")
        try:
            if colon and not name.startswith("[") and ":" in name:   # a bare IPv6 address, no port
                host(value)
            elif colon:
                host(name.strip("[]"))
                port(number)
            else:
                host(value.strip("[]"))
        except ValueError:
            raise ValueError("must be HOST or HOST:PORT")
    return value


def name_servers(value):
    """One name server or several: HOST or HOST:PORT each ([v6 address]:PORT), separated by ','."""
    for entry in value.split(","):
        try:
            advertised(non_empty(entry))
        except ValueError:
            raise ValueError("must be a host name or an IP address, or several, HOST[:PORT] separated by ','")
    return value


def directories(value):
    """Absolute directories separated by ':' (empty: none)."""
    if value and any(not part.startswith("/") or "\0" in part for part in value.split(":")):
        raise ValueError("must be absolute directories separated by ':'")
    return value


def pattern(regex, form):
    def check(value):
        if not re.fullmatch(regex, value):
            raise ValueError("must be %s" % form)
        return value
    return check


def script_in(kind):
    """The name of one of the project's scripts/KIND/ scripts: adding a backend is adding a script."""
    def check(value):
        folder = os.path.join(ROOT, "scripts", kind)
        known = sorted(name for name in os.listdir(folder) if os.access(os.path.join(folder, name), os.X_OK))
        if value not in known:
            raise ValueError("must be one of %s (the scripts in %s)" % (", ".join(known), folder))
        return value
    return check


class Setting:
    def __init__(self, name, default, check, meaning, flag=None):
        self.name, self.default, self.check, self.meaning, self.flag = name, default, check, meaning, flag


SETTINGS = {setting.name: setting for setting in [
    Setting("BMI_NS_HOST", "127.0.0.1", name_servers,
            "the Pyro4 name servers, HOST[:PORT] separated by ',': the main server registers with each, the client "
            "asks each in turn; a name server listens on the first", "--ns-host"),
    Setting("BMI_NS_PORT", "9090", port, "port of the name servers that BMI_NS_HOST gives none", "--ns-port"),
    Setting("BMI_NS_ADVERTISE", "", advertised,
            "HOST[:PORT] the name server gives as its own, when it listens on all interfaces (0.0.0.0)"),
    Setting("BMI_SERVER_HOST", "127.0.0.1", host, "address the main server listens on (0.0.0.0: all)", "--host"),
    Setting("BMI_SERVER_PORT", "9091", port, "port the main server listens on", "--port"),
    Setting("BMI_SERVER_ADVERTISE", "", advertised,
            "HOST[:PORT] the main server registers with the name server (empty: its listening address; "
            "on all interfaces, that of the interface that reaches the name server)"),
    Setting("BMI_METRICS_HOST", "127.0.0.1", host, "address the main server serves its Prometheus metrics on"),
    Setting("BMI_METRICS_PORT", "9293", integer(0, 65535), "port of the main server's Prometheus metrics (0: none)"),
    Setting("BMI_GATEWAY", socket.gethostname().split(".")[0].lower(), pattern(GATEWAY_FORM,
            "lower-case letters, digits and '-', at most 32"), "this main server's name among the service's gateways"),
    Setting("BMI_OBJECT_NAME", "bmi.mainserver", pattern(r"[A-Za-z0-9._-]+", "letters, digits, '.', '_' or '-'"),
            "name the main server registers under with the name server"),
    Setting("BMI_KEY_FILE", "/etc/bmi-rpc/hmac.key", non_empty, "shared secret that authenticates every message"),
    Setting("BMI_TLS_CERT", "", text, "TLS: this program's certificate (empty: no TLS)"),
    Setting("BMI_TLS_KEY", "", text, "TLS: the certificate's private key"),
    Setting("BMI_TLS_CA", "", text, "TLS: the CA that signed every program's certificate"),
    Setting("BMI_ROLES_FILE", "", text,
            "who may do what (README, Security: Rights): the roles of the TLS certificates' subjects, read again "
            "when it changes (empty: every caller is an administrator)"),
    Setting("BMI_IMPORT_DIRS", "", directories,
            "directories import_image reads images from, separated by ':' (empty: anywhere, as root may; "
            "needed with BMI_ROLES_FILE)"),
    Setting("BMI_AUDIT_LOG", "", text, "audit log, one JSON line a call (empty: BMI_STATE_DIR/audit.log)"),
    Setting("BMI_LOG_FILE", "", text, "the server's log (empty: standard error)"),
    Setting("BMI_THREADPOOL_SIZE", "160", integer(1), "client connections the main server serves at once"),
    Setting("BMI_STATE_DIR", "/var/lib/bmi", non_empty,
            "images and node disks (file backend), boot scripts, node records", "--state-dir"),
    Setting("BMI_BACKEND", "file", script_in("storage"), "storage backend: a script in scripts/storage/", "--backend"),
    Setting("BMI_SCRIPT_TIMEOUT", "120", seconds, "seconds a quick storage or target command may run"),
    Setting("BMI_STALL_TIMEOUT", "120", seconds,
            "seconds a copy (import, snapshot, a clone that copies) may go without progress"),
    Setting("BMI_IMAGE_SIZE_CAP", "16TiB", size,
            "the largest virtual size of an image import_image takes (bytes, or with a unit: 16TiB, 500GiB)"),
    Setting("BMI_CLIENT_TIMEOUT", "30", seconds,
            "seconds the client waits for an answer of the servers (a long operation's progress counts)"),
    Setting("BMI_CLONE_CONCURRENCY", str(2 * (os.cpu_count() or 1)), integer(1), "node disks cloned at once"),
    Setting("BMI_TGT_CONTROL_PORT", "0", integer(0, 32767), "which tgtd the main server drives (tgtadm -C)"),
    Setting("BMI_TGT_CHECK_SECONDS", "3", seconds,
            "how often the main server checks that tgtd has every target, and which gateways are alive"),
    Setting("BMI_RESCAN_SECONDS", "60", seconds,
            "with changes pushed (rbd): how often the main server reads every record again anyway, a safety net"),
    Setting("BMI_TGT_PARAMETERS", "MaxRecvDataSegmentLength=262144 FirstBurstLength=262144 MaxBurstLength=1048576 "
            "InitialR2T=No", pattern(r"([A-Za-z0-9]+=[A-Za-z0-9]+( |$))*", "NAME=VALUE words"),
            "tgt's parameters of every target, set before any login (README, Benchmark)"),
    Setting("BMI_LOCK_DIR", "/run/lock", non_empty,
            "where the main server holds the lock on its tgtd, which every main server of the host must share"),
    Setting("BMI_PEER_TIMEOUT", "10", seconds, "seconds a gateway waits for another's answer before it counts it down"),
    Setting("BMI_BMC_TIMEOUT", "5", integer(1, 300), "whole seconds a power driver waits for a BMC's answer"),
    Setting("BMI_BMC_CA", "", text,
            "the CA bundle that verifies BMCs' HTTPS certificates (Redfish; empty: the system's CAs)"),
    Setting("BMI_POWER_TIMEOUT", "60", seconds,
            "seconds a node may take to show the power state its BMC was asked for (on, off)"),
    Setting("BMI_PATHS", "2", integer(1), "gateways that export each node (all of them while fewer answer)"),
    Setting("BMI_ISCSI_PORTAL", "127.0.0.1:3260", portal, "HOST:PORT tgtd serves the targets on"),
    Setting("BMI_BOOT_PORTAL", "", lambda value: value and portal(value),
            "HOST:PORT written into boot scripts (empty: BMI_ISCSI_PORTAL)"),
    Setting("BMI_IQN_PREFIX", "iqn.2026-11.io.bmi-rpc", iqn_prefix, "a node's target is PREFIX:NODE"),
    Setting("BMI_CEPH_CONF", "/etc/ceph/ceph.conf",
            pattern(r"/[^;\x00-\x1f\x7f]*", "an absolute path, without ';' (tgt's options of an rbd disk) or control characters"),
            "rbd backend: the cluster's configuration file"),
    Setting("BMI_CEPH_ID", "admin", pattern(r"[A-Za-z0-9._-]+", "a cephx client id"), "rbd backend: cephx client id"),
    Setting("BMI_CEPH_POOL", "rbd", pattern(r"[A-Za-z0-9._-]+", "a pool name"),
            "rbd backend: pool of the images and node disks"),
    Setting("BMI_CEPH_TIMEOUT", "30", integer(1, 3600),
            "rbd backend: whole seconds one Ceph operation may take before it fails rather than hangs "
            "(rados_osd_op_timeout, rados_mon_op_timeout, client_mount_timeout of every Ceph client bmi-rpc runs)"),
    Setting("BMI_DHCP_MODE", "off", pattern(r"off|proxy|full", "off, proxy or full"),
            "boot service (dnsmasq, README: Booting real nodes): off, proxy (beside the site's DHCP) or full DHCP"),
    Setting("BMI_DHCP_INTERFACE", "", pattern(r"([A-Za-z0-9._@-]{1,15})?", "a network interface's name"),
            "boot service: the interface on the nodes' network"),
    Setting("BMI_DHCP_RANGE", "", pattern(r"([0-9]{1,3}(\.[0-9]{1,3}){3})?(,[0-9]{1,3}(\.[0-9]{1,3}){3}){0,2}",
                                          "IPv4 addresses separated by ','"),
            "boot service: full: START,END[,NETMASK] of the nodes' addresses; proxy: the subnet, NETWORK[,NETMASK]"),
    Setting("BMI_DHCP_NETNS", "", pattern(r"([A-Za-z0-9._-]{1,64})?", "a network namespace's name"),
            "boot service: the network namespace BMI_DHCP_INTERFACE is in, where dnsmasq runs (empty: the host's)"),
    Setting("BMI_BOOT_DIR", "/var/lib/bmi-boot", non_empty,
            "boot service: what dnsmasq serves (outside BMI_STATE_DIR, which dnsmasq's user cannot enter)"),
]}

# what each program reads: its --help lists these
CLIENT = ["BMI_NS_HOST", "BMI_NS_PORT", "BMI_KEY_FILE", "BMI_TLS_CERT", "BMI_TLS_KEY", "BMI_TLS_CA",
          "BMI_OBJECT_NAME", "BMI_CLIENT_TIMEOUT"]
NAME_SERVER = CLIENT[:6] + ["BMI_NS_ADVERTISE", "BMI_LOG_FILE"]
MAIN_SERVER = [name for name in SETTINGS if name not in ("BMI_CLIENT_TIMEOUT", "BMI_NS_ADVERTISE")]


class Settings:
    """Every setting's checked value, read as an attribute (settings.BMI_NS_PORT).

    Keyword arguments override the environment; None stands for "not given". A bad value raises
    ValueError with one line that names the setting.
    """

    def __init__(self, **overrides):
        unknown = set(overrides) - set(SETTINGS)
        if unknown:
            raise TypeError("unknown settings: " + ", ".join(sorted(unknown)))
        for name, setting in SETTINGS.items():
            value = overrides.get(name)
            value = str(value if value is not None else os.environ.get(name, setting.default))
            try:
                setattr(self, name, setting.check(value))
            except ValueError as err:
                raise ValueError("%s %s, not %r" % (name, err, value)) from None
        self._derived = {name for name in ("BMI_BOOT_PORTAL", "BMI_AUDIT_LOG") if not getattr(self, name)}
        if not self.BMI_BOOT_PORTAL:
            self.BMI_BOOT_PORTAL = self.BMI_ISCSI_PORTAL
        if not self.BMI_AUDIT_LOG:
            self.BMI_AUDIT_LOG = os.path.join(self.BMI_STATE_DIR, "audit.log")
        if bool(self.BMI_TLS_CERT) != bool(self.BMI_TLS_CA):
            raise ValueError("BMI_TLS_CERT and BMI_TLS_CA go together: TLS needs this program's certificate "
                             "and the CA that signed every program's certificate")
        if self.BMI_ROLES_FILE and not (self.BMI_TLS_CERT and self.BMI_IMPORT_DIRS):
            raise ValueError("BMI_ROLES_FILE needs TLS (BMI_TLS_CERT), whose client certificates tell the callers "
                             "apart, and BMI_IMPORT_DIRS, outside which import_image reads nothing")
        dhcp_parts = len(self.BMI_DHCP_RANGE.split(",")) if self.BMI_DHCP_RANGE else 0
        if self.BMI_DHCP_MODE != "off" and (not self.BMI_DHCP_INTERFACE or dhcp_parts not in (
                (2, 3) if self.BMI_DHCP_MODE == "full" else (1, 2))):
            raise ValueError("BMI_DHCP_MODE=%s needs BMI_DHCP_INTERFACE and BMI_DHCP_RANGE (%s)" % (
                self.BMI_DHCP_MODE, "START,END[,NETMASK]" if self.BMI_DHCP_MODE == "full" else "NETWORK[,NETMASK]"))

    def environment(self, names=None):
        """The settings (all, or those named) as environment variables; empty where the value is
        derived from others (the audit log's from the state directory, say), so that it follows them."""
        return {name: "" if name in self._derived else str(getattr(self, name))
                for name in (SETTINGS if names is None else names)}


def describe(names):
    """Lines for a program's --help: each setting it reads, its flag, default and meaning."""
    lines = ["settings (environment variables; a flag overrides its variable):"]
    for name in names:
        setting = SETTINGS[name]
        lines.append("  %-24s %-14s %s (default: %s)" % (name, setting.flag or "", setting.meaning,
                                                         setting.default or "empty"))
    return "\n".join(lines)


def from_command_line(program, description, names, argv):
    """The Settings of a server program, from its flags (--flag VALUE, --flag=VALUE) and the
    environment; exits 2 with one line on a bad flag or value."""
    import argparse   # here: the client, whose start-up time counts, does not need it

    parser = argparse.ArgumentParser(prog=program, description=description, epilog=describe(names),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in names:
        if SETTINGS[name].flag:
            parser.add_argument(SETTINGS[name].flag, dest=name, metavar="VALUE", help="sets " + name)

    def usage_error(message):
        print("%s: %s" % (program, message), file=sys.stderr)
        sys.exit(2)

    parser.error = lambda message: usage_error(message + " (see --help)")
    try:
        return Settings(**vars(parser.parse_args(argv)))
    except ValueError as err:
        usage_error(err)


def settings_file():
    """An environment file of every setting, for the systemd units: each with its meaning and,
    commented out, its default; the two the tgtd unit reads set to their defaults."""
    lines = ["# bmi-rpc settings (README, Configuration), read by its systemd units. A line NAME=VALUE",
             "# overrides a default; the name server and the main server read this file alike."]
    for name, setting in SETTINGS.items():
        active = name in ("BMI_TGT_CONTROL_PORT", "BMI_ISCSI_PORTAL")   # bmi-tgtd.service's command line
        lines += ["", "# " + setting.meaning, "%s%s=%s" % ("" if active else "#", name, setting.default)]
    return "\n".join(lines)
