"""A boot network for tests: real machines' boot, with virtual ones.

On a testkit/netns.py Network: a "gateway" host where bmi-rpc's dnsmasq (bmi/bootservice.py) runs on
its eth0, started and stopped by its pid; a relay that takes the nodes' iSCSI on GATEWAY:3260 to the
test's tgtd on the root namespace's loopback (socat in the gateway, over a UNIX socket in a private
directory, to socat here); other hosts, for a DHCP probe, a TFTP client or the site's own DHCP server;
and virtual nodes (qemu, TCG) on a tap device of the network's bridge, each with a MAC of its own,
BIOS (SeaBIOS, qemu's iPXE ROM on an e1000) or UEFI (OVMF, a virtio NIC without option ROM: OVMF's
own PXE loads iPXE from dnsmasq).

    with BootNetwork(tmp_path, mode="full") as net:
        service = net.boot_service()           # publish(), withdraw(): what dnsmasq serves
        net.start_dnsmasq(service)             # its log: net.dnsmasq_log()
        net.relay(tgtd.port)                   # BMI_BOOT_PORTAL=net.portal
        vm = net.vm("52:54:00:00:00:01", "bios")
        assert vm.wait_for("MARKER", 240)      # testkit/bootdisk.py; write_efi_boot_image for UEFI

A test host with a node's MAC (host(name, mac)) asks TFTP as that node would: dnsmasq picks the
TFTP root by the MAC of the asking address.
"""
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import config
from config import ROOT
from bmi.bootservice import boot_service_for
from testkit.console import Console
from testkit.daemons import require, require_command, wait_until
from testkit.netns import Network, ip

QEMU = "qemu-system-x86_64"
IPXE_ROM = "/usr/lib/ipxe/qemu/pxe-e1000.rom"        # ipxe-qemu
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"        # ovmf
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
MAX_RUNTIME = 300          # seconds: the hard cap of every VM (timeout(1) kills it then)
PORTAL_PORT = 3260


def serial_args(sock, log):
    """qemu's serial console: a UNIX socket to type into and a log of what it says.
    (testkit/console.py's serial_args, once it exists, is the same.)"""
    return ["-chardev", "socket,id=console,path=%s,server=on,wait=off,logfile=%s" % (sock, log),
            "-serial", "chardev:console"]


def require_boot_network():
    for command, package in (("dnsmasq", "dnsmasq-base"), ("socat", "socat"), ("nft", "nftables"),
                             (QEMU, "qemu-system-x86"), ("curl", "curl")):
        require_command(command, package)
    require(os.path.exists("/usr/lib/ipxe/snponly.efi"), "ipxe")
    require(os.geteuid() == 0, "root (network namespaces)")


# --- a disk UEFI boots: what testkit/bootdisk.py's boot sector is to BIOS --------------------------

def efi_application(marker):
    """A PE32+ EFI application (x86-64, position independent, no relocations) that writes marker and
    CRLF to COM1 and halts: the UEFI counterpart of testkit/bootdisk.py's boot sector."""
    if not marker.isascii() or not marker.isprintable() or len(marker) > 200:
        raise ValueError("marker must be printable ASCII, at most 200 characters")
    code = bytes.fromhex(
        "488d350f000000"   # lea rsi, [rip+15]  (the message)
        "66baf803"         # mov dx, 0x3f8
        "ac"               # next: lodsb
        "84c0"             # test al, al
        "7403"             # jz halt
        "ee"               # out dx, al
        "ebf8"             # jmp next
        "f4"               # halt: hlt
        "ebfd")            # jmp halt
    text = (code + marker.encode() + b"\r\n\0").ljust(0x200, b"\0")
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 240, 0x0022)
    optional = struct.pack("<HBBIIIIIQIIHHHHHHIIIIHHQQQQII", 0x20B, 0, 0, 0x200, 0, 0, 0x1000, 0x1000,
                           0x400000, 0x1000, 0x200, 0, 0, 0, 0, 0, 0, 0, 0x2000, 0x200, 0, 10, 0,
                           0x10000, 0x1000, 0x10000, 0x1000, 0, 16) + bytes(16 * 8)
    section = struct.pack("<8sIIIIIIHHI", b".text", 0x200, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020)
    headers = b"MZ".ljust(0x3C, b"\0") + struct.pack("<I", 0x40) + b"PE\0\0" + coff + optional + section
    return headers.ljust(0x200, b"\0") + text


def write_efi_boot_image(path, marker, size_mb=64):
    """A raw disk, one FAT file system (no partition table), whose \\EFI\\BOOT\\BOOTX64.EFI is
    efi_application(marker): UEFI (iPXE's sanboot) boots it. Needs dosfstools and mtools."""
    require_command("mkfs.vfat", "dosfstools")
    require_command("mcopy", "mtools")
    app = str(path) + ".efi"
    with open(app, "wb") as f:
        f.write(efi_application(marker))
    for command in (["mkfs.vfat", "-C", str(path), str(size_mb * 1024)], ["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT"],
                    ["mcopy", "-i", str(path), app, "::/EFI/BOOT/BOOTX64.EFI"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(command), done.stderr.strip()))
    os.unlink(app)
    return path


# --- DHCP: a probe that asks as a node's firmware or iPXE would -------------------------------------

def dhcp_discover(mac, arch=None, ipxe=False, pxe=True, xid=None, ciaddr=None):
    """A DHCPDISCOVER from chaddr mac, asking for broadcast replies (the probe's own MAC is another);
    with ciaddr, the DHCPREQUEST from that address a PXE client sends a proxyDHCP server's port 4011."""
    xid = xid if xid is not None else random.getrandbits(32)
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0 if ciaddr else 0x8000,
                         socket.inet_aton(ciaddr or "0.0.0.0"), bytes(4), bytes(4), bytes(4),
                         bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0"), b"", b"")
    options = [(53, b"\x03" if ciaddr else b"\x01"), (55, bytes([1, 3, 6, 12, 43, 54, 60, 66, 67, 97, 175]))]
    if arch is not None:
        options += [(93, struct.pack("!H", arch)), (94, b"\x01\x02\x01"), (97, b"\0" + bytes(range(16)))]
    if pxe:
        options.append((60, b"PXEClient:Arch:%05d:UNDI:002001" % (arch or 0)))
    if ipxe:
        options.append((77, b"iPXE"))
    body = b"".join(bytes([code, len(value)]) + value for code, value in options)
    return header + b"\x63\x82\x53\x63" + body + b"\xff", xid


def parse_dhcp(packet):
    """The fields of a DHCP reply a test looks at: yiaddr, siaddr, file, options {code: bytes}."""
    yiaddr, siaddr = packet[16:20], packet[20:24]
    options, i = {}, 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        options[packet[i]] = packet[i + 2:i + 2 + packet[i + 1]]
        i += 2 + packet[i + 1]
    return {"xid": struct.unpack("!I", packet[4:8])[0], "chaddr": packet[28:34].hex(":"),
            "yiaddr": socket.inet_ntoa(yiaddr), "siaddr": socket.inet_ntoa(siaddr),
            "file": packet[108:236].split(b"\0")[0].decode(errors="replace"),
            "type": options.get(53, b"\0")[0], "server": socket.inet_ntoa(options[54]) if 54 in options else "",
            "bootfile_option": options.get(67, b"").split(b"\0")[0].decode(errors="replace"),
            "vendor_class": options.get(60, b"").decode(errors="replace"), "options": sorted(options),
            "boot_file": packet[108:236].split(b"\0")[0].decode(errors="replace") or
                         options.get(67, b"").split(b"\0")[0].decode(errors="replace")}


def probe(mac, arch=None, ipxe=False, pxe=True, seconds=3.0, count=None, server=None, ciaddr=None):
    """Broadcast one DHCPDISCOVER for mac (on this namespace's eth0) and return the replies to it
    within seconds (or once count of them came), each parsed. Run in a test host: probe_from does.
    (dnsmasq pings an address before it first offers it: up to 3 s.) server: send instead a PXE
    client's DHCPREQUEST (from ciaddr, this host's address) to that proxyDHCP server's port 4011."""
    packet, xid = dhcp_discover(mac, arch, ipxe, pxe, ciaddr=ciaddr if server else None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        sock.bind(("0.0.0.0", 68))
        sock.sendto(packet, (server, 4011) if server else ("255.255.255.255", 67))
        replies, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline and (count is None or len(replies) < count):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, _ = sock.recvfrom(4096)
            except socket.timeout:
                break
            if len(data) >= 240 and data[0] == 2 and struct.unpack("!I", data[4:8])[0] == xid:
                replies.append(parse_dhcp(data))
    return replies


def probe_from(host, mac, arch=None, ipxe=False, pxe=True, seconds=3.0, count=None, server=None):
    """probe() run in the test host host; server: a DHCPREQUEST to that server's port 4011."""
    done = host.run(sys.executable, "-m", "testkit.bootnet", "probe", json.dumps(
        {"mac": mac, "arch": arch, "ipxe": ipxe, "pxe": pxe, "seconds": seconds, "count": count,
         "server": server, "ciaddr": host.address}),
        capture_output=True, text=True, timeout=seconds + 30, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError("DHCP probe failed: " + done.stderr[-2000:])
    return json.loads(done.stdout)


def tftp_get(host, server, path, seconds=5):
    """Fetch path from server's TFTP as host; the bytes, or None when it gives nothing."""
    done = host.run("curl", "-sS", "--max-time", str(seconds), "--output", "-", "tftp://%s/%s" % (server, path),
                    capture_output=True, timeout=seconds + 30)
    return done.stdout if done.returncode == 0 else None


# --- the network ----------------------------------------------------------------------------------

class BootNetwork:
    """A Network with a gateway host (dnsmasq, the portal relay) and what else a boot test needs.
    mode: "full" (dnsmasq gives the addresses) or "proxy" (site_dhcp() gives them)."""

    def __init__(self, workdir, mode="full"):
        require_boot_network()
        self.workdir = str(workdir)
        self.mode = mode
        self.network = Network()
        self.gateway = self.network.host("gw")
        self.subnet = self.gateway.address.rsplit(".", 1)[0]
        if mode == "full":   # the provisioning network's own IPv6 prefix, which dnsmasq advertises
            self.ipv6_prefix = "fd42:b31:%x::" % self.network.number
            ip("-6", "addr", "add", self.ipv6_prefix + "1/64", "dev", "eth0", "nodad", netns=self.gateway.namespace)
        self.portal = "%s:%d" % (self.gateway.address, PORTAL_PORT)
        self.dnsmasq = self.site = None
        self._relays, self._vms, self._taps = [], [], 0
        self._private = tempfile.mkdtemp(prefix="bmi-relay-")   # 0700: the relay's UNIX socket
        # BMI_BOOT_DIR: dnsmasq's user must go through every directory above it, which a test's
        # tmp_path (0700) does not let it
        self._served = tempfile.mkdtemp(prefix="bmi-boot-")
        os.chmod(self._served, 0o755)
        self.settings_values = {
            "BMI_DHCP_MODE": mode, "BMI_DHCP_INTERFACE": "eth0",
            "BMI_DHCP_RANGE": ("%s.100,%s.199,255.255.255.0" % (self.subnet, self.subnet) if mode == "full"
                               else "%s.0,255.255.255.0" % self.subnet),
            "BMI_BOOT_DIR": os.path.join(self._served, "boot"), "BMI_DHCP_NETNS": self.gateway.namespace,
            "BMI_BOOT_PORTAL": self.portal}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settings(self, base=None):
        """base (Settings) with this network's boot-service settings, or those alone."""
        values = dict(base.environment() if base is not None else {}, **self.settings_values)
        return config.Settings(**values)

    def boot_service(self, base=None):
        """A BootService on this network's settings, whose nftables set lives in the gateway."""
        return boot_service_for(self.settings(base)).open()

    def host(self, name, mac=None):
        """Another host on the network; mac: its eth0's MAC address (a node's, say)."""
        host = self.network.host(name)
        if mac is not None:
            ip("link", "set", "eth0", "address", mac, netns=host.namespace)
        return host

    # --- daemons, each stopped by its pid ---

    def start_dnsmasq(self, service):
        """bmi's dnsmasq in the gateway, on service's settings, as bmi-dnsmasq.service runs it
        (python -m bmi.bootservice --run); its log (standard error) in dnsmasq.log."""
        self.log = os.path.join(self.workdir, "dnsmasq.log")
        self.dnsmasq = subprocess.Popen([sys.executable, "-m", "bmi.bootservice", "--run"], cwd=ROOT,
                                        env=dict(os.environ, **service.settings.environment()),
                                        stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        wait_until(lambda: self.dnsmasq.poll() is not None or service.dnsmasq_pid() == self.dnsmasq.pid,
                   10, "dnsmasq start")
        if self.dnsmasq.poll() is not None:
            raise RuntimeError("dnsmasq exited: %s" % self.dnsmasq_log()[-2000:])
        wait_until(lambda: "started, version" in self.dnsmasq_log(), 10, "dnsmasq's log")
        return self.dnsmasq

    def dnsmasq_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def site_dhcp(self):
        """The site's own DHCP server, in a host of its own: addresses only, to every MAC."""
        self.site = self.host("site")
        site_log = os.path.join(self.workdir, "site-dhcp.log")
        self.site_proc = self.site.popen(
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--interface=eth0",
            "--bind-interfaces", "--user=%s" % "dnsmasq", "--pid-file=",
            "--dhcp-leasefile=%s" % os.path.join(self._served, "site.leases"),
            "--dhcp-range=%s.50,%s.99,255.255.255.0,1h" % (self.subnet, self.subnet),
            "--dhcp-option=option:router", "--dhcp-option=option:dns-server",
            "--log-facility=%s" % site_log, "--log-dhcp",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.site_proc.poll() is not None or "started, version" in _read(site_log), 10,
                   "the site's DHCP server")
        if self.site_proc.poll() is not None:
            raise RuntimeError("the site's dnsmasq exited")
        return self.site

    def relay(self, port):
        """GATEWAY:3260 in the gateway, to 127.0.0.1:port here: socat there, a UNIX socket in a
        private directory, socat here. Returns the portal the nodes use."""
        sock = os.path.join(self._private, "portal.sock")
        here = subprocess.Popen(["socat", "UNIX-LISTEN:%s,fork,mode=600" % sock, "TCP:127.0.0.1:%d" % port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._relays.append(here)
        wait_until(lambda: os.path.exists(sock), 10, "the relay's socket")
        there = self.gateway.popen("socat", "TCP-LISTEN:%d,bind=%s,reuseaddr,fork" % (PORTAL_PORT, self.gateway.address),
                                   "UNIX-CONNECT:" + sock, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._relays.append(there)
        wait_until(lambda: there.poll() is not None or self.gateway.run(
            "bash", "-c", "exec 3<>/dev/tcp/%s/%d" % (self.gateway.address, PORTAL_PORT),
            capture_output=True).returncode == 0, 10, "the relay's portal")
        if there.poll() is not None:
            raise RuntimeError("the relay's socat in the gateway exited")
        return self.portal

    # --- virtual nodes ---

    def vm(self, mac, firmware="bios", reboot=False, memory_mb=256, max_runtime=MAX_RUNTIME, disk=None,
           trace=None):
        """A diskless node on a tap device of the bridge: firmware "bios" (SeaBIOS, iPXE ROM, e1000)
        or "uefi" (OVMF, virtio-net, no option ROM). reboot=False: qemu exits when the guest
        reboots. disk: a raw image file the VM has after all, as a virtio-blk disk booted first
        (BIOS: -boot order=cn; UEFI: bootindex 0, the NIC's 1): the same node booting locally.
        trace: a file where qemu writes its trace event blk_co_preadv (offset and length in bytes
        of every read of a disk). Returns a VM; stop it with its stop() (close() stops every one)."""
        command, files, tap = self.vm_command(mac, firmware, reboot, memory_mb, max_runtime, disk, trace)
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(files["stderr"], "wb"), start_new_session=True)
        vm = VM(proc, mac, firmware, files, tap, self)
        self._vms.append(vm)
        return vm

    def vm_command(self, mac, firmware="bios", reboot=False, memory_mb=256, max_runtime=MAX_RUNTIME, disk=None,
                   trace=None):
        """What vm() runs, on a tap device made for it, for another to start (testkit/bmc.py's BMC,
        at power on): (command, files {"serial": its log, "console": its socket, "stderr"}, tap)."""
        require(os.path.exists(IPXE_ROM), "ipxe-qemu")
        require(os.path.exists(OVMF_CODE), "ovmf")
        self._taps += 1
        tap = "tap%d" % self._taps
        switch = self.network.switch
        ip("tuntap", "add", "dev", tap, "mode", "tap", netns=switch)
        ip("link", "set", tap, "master", "br0", "up", netns=switch)
        name = "vm%d" % self._taps
        files = {kind: os.path.join(self.workdir, "%s.%s" % (name, kind)) for kind in ("serial", "console", "stderr")}
        argv = [QEMU, "-machine", "q35" if firmware == "uefi" else "pc", "-accel", "tcg", "-m", str(memory_mb),
                "-nodefaults", "-display", "none", "-monitor", "none",
                *serial_args(files["console"], files["serial"]),
                "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no" % tap]
        if disk is not None:
            argv += ["-drive", "if=none,id=d0,format=raw,file=" + os.fspath(disk),
                     "-device", "virtio-blk-pci,drive=d0" + (",bootindex=0" if firmware == "uefi" else "")]
        if trace is not None:
            argv += ["-trace", "enable=blk_co_preadv,file=" + os.fspath(trace)]
        if firmware == "uefi":
            variables = os.path.join(self.workdir, name + ".vars.fd")
            shutil.copyfile(OVMF_VARS, variables)
            argv += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMF_CODE,
                     "-drive", "if=pflash,format=raw,unit=1,file=" + variables,
                     "-device", "virtio-net-pci,netdev=n0,mac=%s,romfile=,bootindex=1" % mac]
        else:
            argv += ["-device", "e1000,netdev=n0,mac=%s,romfile=%s" % (mac, IPXE_ROM),
                     "-boot", "order=%s,reboot-timeout=0" % ("cn" if disk is not None else "n")]
        if not reboot:
            argv.append("-no-reboot")
        with open(files["serial"], "wb"):
            pass
        return ip_netns(switch, "timeout", "-k", "5", str(max_runtime), *argv), files, tap

    def close(self):
        for vm in self._vms:
            vm.stop()
        for proc in [self.dnsmasq, getattr(self, "site_proc", None)] + self._relays:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for directory in (self._private, self._served):
            shutil.rmtree(directory, ignore_errors=True)
        self.network.close()


class OSNode:
    """A VM of the network that boots the test OS (testkit/osimage.py), with its serial console to
    type at (testkit/console.py). vm_options go to BootNetwork.vm (disk, trace, memory_mb)."""

    def __init__(self, net, mac, firmware, boot_seconds=300, **vm_options):
        self.boot_seconds = boot_seconds
        self.vm = net.vm(mac, firmware, reboot=True, max_runtime=3 * boot_seconds, **vm_options)
        self.console = Console(self.vm.files["console"], self.vm.files["serial"])

    def reach_root(self, since=0):
        """Wait for the initramfs's line (BMI-ROOT source=... fstype=... iscsi=IQN), then the shell;
        return that line's words as a dict."""
        line = self.console.wait_for_log("BMI-ROOT ", self.boot_seconds, proc=self.vm.proc, since=since)
        self.console.wait_prompt()
        return dict(word.split("=", 1) for word in line.split()[1:])

    def reboot(self):
        since = len(self.console.log())
        self.console.send("reboot -f")
        return self.reach_root(since)

    def power_off(self):
        self.console.send("poweroff -f")
        wait_until(lambda: self.vm.proc.poll() is not None, 60, "the node powers off")
        self.console.close()


def ip_netns(namespace, *args):
    return ["ip", "netns", "exec", namespace, *args]


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class VM:
    def __init__(self, proc, mac, firmware, files, tap, network):
        self.proc, self.mac, self.firmware, self.files, self.tap = proc, mac, firmware, files, tap
        self.started = time.monotonic()

    def serial(self):
        return _read(self.files["serial"])

    def wait_for(self, text, timeout):
        """Poll the serial console for text; False on timeout or when the VM has gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.serial():
                return True
            if self.proc.poll() is not None:
                return text in self.serial()
            time.sleep(0.2)
        return False

    def stop(self, grace=5):
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)


if __name__ == "__main__":
    # python -m testkit.bootnet probe JSON: probe() in this namespace, its replies as JSON
    if sys.argv[1] == "probe":
        print(json.dumps(probe(**json.loads(sys.argv[2]))))
