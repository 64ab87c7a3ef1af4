"""The boot service of real nodes: Debian's dnsmasq as their DHCP and TFTP server, on a configuration
bmi-rpc writes (README, Booting real nodes).

Firmware that is not iPXE gets Debian's iPXE for its architecture by TFTP (undionly.kpxe for BIOS,
snponly.efi for x86-64 UEFI); iPXE (user class "iPXE": that one, or a NIC's iPXE ROM) gets boot.ipxe,
the script of the node that owns its MAC. A MAC that belongs to no published node gets nothing: no
address, no boot file, no TFTP. BMI_DHCP_MODE=full hands out addresses of BMI_DHCP_RANGE;
BMI_DHCP_MODE=proxy hands out none (proxyDHCP, beside the site's DHCP server): only the boot file.

BMI_BOOT_DIR (root's, 0755: dnsmasq drops to user dnsmasq, which must go through it):

    dnsmasq.conf, .pid, .leases     config_text() (write_config()); dnsmasq's
    hosts/52-54-00-12-34-56         a published MAC's dhcp-host line (and "# node NODE")  root 0644
    tftp/                           the TFTP root; iPXE's loaders, owned by dnsmasq      root 0755
    tftp/52-54-00-12-34-56/         that MAC's own TFTP root (tftp-unique-root=mac)      root 0711
        boot.ipxe                   the node's script (it holds a CHAP secret)           dnsmasq 0400
        undionly.kpxe, ...          links to ../: in its own root a MAC asks for its loader here

dnsmasq serves (tftp-secure) only files its user owns. It finds a request's MAC by the lease of its
address, else the neighbour table, and takes tftp/MAC/ as the root when that directory exists; when
it does not (a MAC that is not published) it falls back to tftp/ itself, from which
"52-54-00-12-34-56/boot.ipxe" names that node's script. dnsmasq refuses ".." in a name, so from its
own directory a published MAC reaches only its own files; the fallback is closed by the nftables set
of this service (table inet bmi_boot): TFTP requests (udp/69) on the interface from a MAC not in the
set are dropped.

dnsmasq reads new and changed files of hosts/ by itself (inotify): publishing needs no signal. A
record it has read stays until SIGHUP, even once its file is gone, so withdraw removes the file and
sends dnsmasq (its pid file) a SIGHUP: it then reads hosts/ afresh. dnsmasq is never restarted.
"""
import argparse
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from bmi.files import remove_partials
from bmi.names import check_mac, check_node

IPXE_DIR = "/usr/lib/ipxe"                            # Debian's package ipxe
LOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
BIOS_LOADER, EFI_LOADER = "undionly.kpxe", "snponly.efi"
SCRIPT = "boot.ipxe"                                  # the name iPXE asks for, in its MAC's own root
USER = "dnsmasq"                                      # Debian's dnsmasq-base makes it
TABLE = "bmi_boot"                                    # nftables: table inet bmi_boot, its set "macs"
LEASE_TIME = "1h"
def mac_directory(mac):
    """dnsmasq's name for a MAC (its TFTP root, its file in hosts/): 52-54-00-12-34-56."""
    return check_mac(mac).replace(":", "-")


def dhcp_range(settings):
    """The dhcp-range line's value: START,END,NETMASK,LEASE for full DHCP, NETWORK,proxy,NETMASK beside
    the site's DHCP server."""
    parts = settings.BMI_DHCP_RANGE.split(",")
    if settings.BMI_DHCP_MODE == "full":
        netmask = parts[2] if len(parts) > 2 else "255.255.255.0"
        return "%s,%s,%s,%s" % (parts[0], parts[1], netmask, LEASE_TIME)
    netmask = parts[1] if len(parts) > 1 else "255.255.255.0"
    network = ipaddress.IPv4Network("%s/%s" % (parts[0], netmask), strict=False).network_address
    return "%s,proxy,%s" % (network, netmask)


def config_text(settings):
    """dnsmasq's configuration for the settings (BMI_DHCP_MODE proxy or full, BMI_DHCP_INTERFACE,
    BMI_DHCP_RANGE, BMI_BOOT_DIR). It logs to standard error: the journal, or the tests' file."""
    if settings.BMI_DHCP_MODE not in ("proxy", "full"):
        raise ValueError("BMI_DHCP_MODE is %s: no boot service" % settings.BMI_DHCP_MODE)
    top = settings.BMI_BOOT_DIR
    lines = [
        "# bmi-rpc's boot service (bmi/bootservice.py), from BMI_DHCP_MODE=%s, BMI_DHCP_INTERFACE,"
        % settings.BMI_DHCP_MODE,
        "# BMI_DHCP_RANGE and BMI_BOOT_DIR; written again at every start: change the settings, not this file.",
        "port=0",
        "interface=%s" % settings.BMI_DHCP_INTERFACE,
        "bind-dynamic",
        "user=%s" % USER,
        "pid-file=%s" % os.path.join(top, "dnsmasq.pid"),
        "dhcp-leasefile=%s" % os.path.join(top, "dnsmasq.leases"),
        "log-facility=-",
        "log-dhcp",
        "dhcp-range=%s" % dhcp_range(settings),
        "# only published MACs (a file each in hosts/) get an answer",
        "dhcp-hostsdir=%s" % os.path.join(top, "hosts"),
        "dhcp-ignore=tag:!known",
        "dhcp-match=set:bios,option:client-arch,0",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        "dhcp-userclass=set:ipxe,iPXE",
        "# iPXE gets its node's script, other firmware iPXE",
        "dhcp-boot=tag:ipxe,%s" % SCRIPT,
        "dhcp-boot=tag:!ipxe,tag:bios,%s" % BIOS_LOADER,
        "dhcp-boot=tag:!ipxe,tag:efi64,%s" % EFI_LOADER,
    ]
    if settings.BMI_DHCP_MODE == "full":
        lines += [
            "# nothing routes or resolves names on the provisioning network",
            "dhcp-option=option:router",
            "dhcp-option=option:dns-server",
            "# iPXE goes on only once its IPv6 set-up is done too, which without a router advertisement",
            "# takes ~13 s of solicitations: advertise the interface's own IPv6 prefix (a ULA, if it has",
            "# one; without one, nothing is sent), addresses only (ra-only), not as a router (lifetime 0)",
            "enable-ra",
            "dhcp-range=::,constructor:%s,ra-only" % settings.BMI_DHCP_INTERFACE,
            "ra-param=%s,0,0" % settings.BMI_DHCP_INTERFACE,
        ]
    else:
        lines += [
            "# proxyDHCP answers PXE only with a pxe-service; firmware then asks on 4011 for its file",
            'pxe-service=tag:!ipxe,x86PC,"bmi-rpc",%s' % BIOS_LOADER,
            'pxe-service=tag:!ipxe,BC_EFI,"bmi-rpc",%s' % EFI_LOADER,
            'pxe-service=tag:!ipxe,x86-64_EFI,"bmi-rpc",%s' % EFI_LOADER,
        ]
    lines += [
        "enable-tftp",
        "tftp-root=%s" % os.path.join(top, "tftp"),
        "tftp-unique-root=mac",
        "# only files owned by user %s" % USER,
        "tftp-secure",
    ]
    return "\n".join(lines) + "\n"


def _write(path, data, uid, mode):
    """Write data (str or bytes) to path whole or not at all (a hidden partial file renamed into
    place: dnsmasq's inotify skips dot files), owned by uid, with mode."""
    directory, name = os.path.split(path)
    fd, partial = tempfile.mkstemp(dir=directory, prefix="." + name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchown(f.fileno(), uid, -1)
            os.fchmod(f.fileno(), mode)
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _run(command, stdin=None):
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(command), done.stderr.strip()))


class BootService:
    """The files and the nftables set dnsmasq serves the nodes from, at BMI_BOOT_DIR.

    user: whom dnsmasq runs as (the fast tests: themselves); command: what turns a command into the
    one to run where dnsmasq's network is (the test kit's Host.command; by default here); firewall:
    False leaves nftables alone (the fast tests).
    """

    def __init__(self, settings, user=USER, command=None, firewall=True):
        self.settings = settings
        self.top = settings.BMI_BOOT_DIR
        self.hosts = os.path.join(self.top, "hosts")
        self.tftp = os.path.join(self.top, "tftp")
        self.pid_file = os.path.join(self.top, "dnsmasq.pid")
        self.user = user
        self.command = command or (lambda *args: list(args))
        self.firewall = firewall
        self._lock = threading.Lock()

    def open(self, ipxe_dir=IPXE_DIR):
        """Make the directories, put iPXE's loaders in the TFTP root, remove what a crash left half
        written, and load the nftables set with the published MACs. Returns self."""
        uid = pwd.getpwnam(self.user).pw_uid
        for directory in (self.top, self.hosts, self.tftp):
            os.makedirs(directory, exist_ok=True)
            os.chmod(directory, 0o755)   # whatever the umask (the main server's is 077)
        for directory in [self.hosts, self.tftp] + [os.path.join(self.tftp, mac_directory(mac))
                                                    for mac in self.published()]:
            if os.path.isdir(directory):
                remove_partials(directory)
        for loader in LOADERS:
            source = os.path.join(ipxe_dir, loader)
            if not os.path.exists(source):
                raise FileNotFoundError("%s: missing (Debian package ipxe)" % source)
            with open(source, "rb") as f:
                _write(os.path.join(self.tftp, loader), f.read(), uid, 0o444)
        if self.firewall:
            _run(self.command("nft", "-f", "-"), self.ruleset(sorted(self.published())))
        return self

    def write_config(self):
        """Write dnsmasq.conf (config_text) and return its path."""
        path = os.path.join(self.top, "dnsmasq.conf")
        _write(path, config_text(self.settings), 0, 0o644)
        return path

    def published(self):
        """{mac: node} of every published MAC."""
        found = {}
        for name in os.listdir(self.hosts):
            if not name.startswith("."):
                with open(os.path.join(self.hosts, name)) as f:
                    first = f.readline().split()
                if first[:2] == ["#", "node"] and len(first) == 3:
                    found[check_mac(name)] = first[2]
        return found

    def publish(self, node, macs, script_text):
        """Serve script_text as node's boot script to macs, and to them only (the node's other MACs
        are withdrawn). ValueError, changing nothing, if one of them is another node's."""
        check_node(node)
        macs = sorted({check_mac(mac) for mac in macs})
        with self._lock:
            owners = self.published()
            taken = ["%s (node %s)" % (mac, owners[mac]) for mac in macs if owners.get(mac, node) != node]
            if taken:
                raise ValueError("MAC address already published for another node: " + ", ".join(taken))
            self._withdraw([mac for mac, owner in owners.items() if owner == node and mac not in macs])
            uid = pwd.getpwnam(self.user).pw_uid
            for mac in macs:
                directory = os.path.join(self.tftp, mac_directory(mac))
                os.makedirs(directory, exist_ok=True)
                os.chmod(directory, 0o711)
                _write(os.path.join(directory, SCRIPT), script_text, uid, 0o400)
                for loader in LOADERS:
                    if not os.path.islink(os.path.join(directory, loader)):
                        os.symlink(os.path.join("..", loader), os.path.join(directory, loader))
            # then TFTP (a MAC let through has a root of its own), then DHCP
            self._nft("add", [mac for mac in macs if mac not in owners])
            for mac in macs:
                if mac not in owners:
                    _write(os.path.join(self.hosts, mac_directory(mac)), "# node %s\n%s\n" % (node, mac), 0, 0o644)

    def withdraw(self, node):
        """Stop serving node (every MAC published for it). Returns the MACs withdrawn."""
        with self._lock:
            gone = sorted(mac for mac, owner in self.published().items() if owner == node)
            self._withdraw(gone)
            return gone

    def _withdraw(self, macs):
        if not macs:
            return
        self._nft("delete", macs)   # no TFTP, then no files, then no DHCP
        for mac in macs:
            shutil.rmtree(os.path.join(self.tftp, mac_directory(mac)), ignore_errors=True)
            os.unlink(os.path.join(self.hosts, mac_directory(mac)))
        pid = self.dnsmasq_pid()   # dnsmasq forgets a record of hosts/ only when it reads them again
        if pid is not None:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    def dnsmasq_pid(self):
        """The pid of the dnsmasq running on this configuration (its pid file), or None."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/comm" % pid) as f:
                return pid if f.read().strip() == "dnsmasq" else None
        except (OSError, ValueError):
            return None

    def ruleset(self, macs):
        """nft's input: table inet bmi_boot, made anew, whose chain drops TFTP requests on the
        interface from every MAC not in its set "macs"."""
        elements = "; elements = { %s }" % ", ".join(macs) if macs else ""
        return ("table inet %(t)s\ndelete table inet %(t)s\ntable inet %(t)s {\n"
                "  set macs {\n    type ether_addr%(e)s\n  }\n"
                "  chain input {\n    type filter hook input priority filter; policy accept;\n"
                "    iifname \"%(i)s\" udp dport 69 ether saddr != @macs drop\n  }\n}\n"
                % {"t": TABLE, "e": elements, "i": self.settings.BMI_DHCP_INTERFACE})

    def _nft(self, verb, macs):
        if self.firewall and macs:
            _run(self.command("nft", verb, "element", "inet", TABLE, "macs", "{ %s }" % ", ".join(macs)))


def boot_service_for(settings):
    """The BootService of the settings, or None with BMI_DHCP_MODE=off. With BMI_DHCP_NETNS, its
    nftables commands run in that network namespace, where dnsmasq's interface is."""
    if settings.BMI_DHCP_MODE == "off":
        return None
    netns = settings.BMI_DHCP_NETNS
    return BootService(settings, command=(lambda *args: ["ip", "netns", "exec", netns, *args]) if netns else None)


def main(argv=None):
    """python -m bmi.bootservice --write-config | --run: the boot service's files, and its dnsmasq
    (systemd/bmi-dnsmasq.service runs --run)."""
    import config
    parser = argparse.ArgumentParser(prog="bmi.bootservice", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--write-config", action="store_true",
                      help="make BMI_BOOT_DIR, its loaders, the nftables set and dnsmasq.conf")
    what.add_argument("--run", action="store_true",
                      help="that, then become dnsmasq on it, in the foreground, logging to standard error")
    run = parser.parse_args(argv).run
    try:
        settings = config.Settings()
        if settings.BMI_DHCP_MODE == "off":
            raise ValueError("BMI_DHCP_MODE is off: no boot service")
        service = boot_service_for(settings).open()
        conf = service.write_config()
        if not run:
            print(conf)
            return 0
        command = service.command("dnsmasq", "--keep-in-foreground", "--conf-file=" + conf)
        os.execvp(command[0], command)   # the same pid: systemd and the tests stop dnsmasq by it
    except (ValueError, OSError, RuntimeError, KeyError) as err:
        print("bmi.bootservice: %s" % err, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
