"""Settings of bmi-rpc, each declared once: its name, default, check and meaning.

A value comes from the program's flag for it when one is given, else from the environment variable
of the same name, else from the default. Settings() checks every value at once, so that a program
refuses a bad one at start, in one line naming it, before it does anything.
"""
import os
import re
import socket
import sys

from bmi import names

ROOT = os.path.dirname(os.path.abspath(__file__))


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


def seconds(value):
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ValueError("must be a number of seconds above 0")
    return number


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
    Setting("BMI_NS_HOST", "127.0.0.1", host, "address of the Pyro4 name server", "--ns-host"),
    Setting("BMI_NS_PORT", "9090", port, "port of the name server", "--ns-port"),
    Setting("BMI_NS_ADVERTISE", "", advertised,
            "HOST[:PORT] the name server gives as its own, when it listens on all interfaces (0.0.0.0)"),
    Setting("BMI_SERVER_HOST", "127.0.0.1", host, "address the main server listens on (0.0.0.0: all)", "--host"),
    Setting("BMI_SERVER_PORT", "9091", port, "port the main server listens on", "--port"),
    Setting("BMI_SERVER_ADVERTISE", "", advertised,
            "HOST[:PORT] the main server registers with the name server (empty: its listening address; "
            "on all interfaces, that of the interface that reaches the name server)"),
    Setting("BMI_GATEWAY", socket.gethostname().split(".")[0].lower(), pattern(names.GATEWAY_FORM,
            "lower-case letters, digits and '-', at most 32"), "this main server's name among the service's gateways"),
    Setting("BMI_OBJECT_NAME", "bmi.mainserver", pattern(r"[A-Za-z0-9._-]+", "letters, digits, '.', '_' or '-'"),
            "name the main server registers under with the name server"),
    Setting("BMI_KEY_FILE", "/etc/bmi-rpc/hmac.key", non_empty, "shared secret that authenticates every message"),
    Setting("BMI_TLS_CERT", "", text, "TLS: this program's certificate (empty: no TLS)"),
    Setting("BMI_TLS_KEY", "", text, "TLS: the certificate's private key"),
    Setting("BMI_TLS_CA", "", text, "TLS: the CA that signed every program's certificate"),
    Setting("BMI_AUDIT_LOG", "", text, "audit log, one JSON line a call (empty: BMI_STATE_DIR/audit.log)"),
    Setting("BMI_LOG_FILE", "", text, "the server's log (empty: standard error)"),
    Setting("BMI_THREADPOOL_SIZE", "160", integer(1), "client connections the main server serves at once"),
    Setting("BMI_STATE_DIR", "/var/lib/bmi", non_empty,
            "images and node disks (file backend), boot scripts, node records", "--state-dir"),
    Setting("BMI_BACKEND", "file", script_in("storage"), "storage backend: a script in scripts/storage/", "--backend"),
    Setting("BMI_SCRIPT_TIMEOUT", "120", seconds, "seconds a quick storage or target command may run"),
    Setting("BMI_STALL_TIMEOUT", "120", seconds,
            "seconds a copy (import, snapshot, a clone that copies) may go without progress"),
    Setting("BMI_CLIENT_TIMEOUT", "30", seconds,
            "seconds the client waits for an answer of the servers (a long operation's progress counts)"),
    Setting("BMI_CLONE_CONCURRENCY", str(2 * (os.cpu_count() or 1)), integer(1), "node disks cloned at once"),
    Setting("BMI_TGT_CONTROL_PORT", "0", integer(0, 32767), "which tgtd the main server drives (tgtadm -C)"),
    Setting("BMI_TGT_CHECK_SECONDS", "3", seconds, "how often the main server checks that tgtd has every target"),
    Setting("BMI_ISCSI_PORTAL", "127.0.0.1:3260", portal, "HOST:PORT tgtd serves the targets on"),
    Setting("BMI_BOOT_PORTAL", "", lambda value: value and portal(value),
            "HOST:PORT written into boot scripts (empty: BMI_ISCSI_PORTAL)"),
    Setting("BMI_IQN_PREFIX", "iqn.2026-11.io.bmi-rpc",
            pattern(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.-]*", "iqn.YYYY-MM.reversed.domain, in lower case"),
            "a node's target is PREFIX:NODE"),
    Setting("BMI_CEPH_CONF", "/etc/ceph/ceph.conf", non_empty, "rbd backend: the cluster's configuration file"),
    Setting("BMI_CEPH_ID", "admin", pattern(r"[A-Za-z0-9._-]+", "a cephx client id"), "rbd backend: cephx client id"),
    Setting("BMI_CEPH_POOL", "rbd", pattern(r"[A-Za-z0-9._-]+", "a pool name"),
            "rbd backend: pool of the images and node disks"),
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
