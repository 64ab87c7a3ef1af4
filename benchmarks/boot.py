"""The boot of a node: power-on to the shell through the boot service from its iSCSI disk, against the
same image booted from a local disk of the same VM, pair by pair; where an iSCSI boot's time goes;
and a boot storm of the reads of one boot, replayed through iSCSI by 16 real initiators at once
against one alone. Part of benchmarks/bench.py (--figures boot).

The nodes are testkit/bootnet.py's virtual machines (qemu under TCG) on a bridge in network
namespaces, booting the test OS of testkit/osimage.py (testkit/bootnet.py's OSNode), as
tests/test_os_boot.py does, through a main server, tgtd and dnsmasq of a Bench of their own
(benchmarks/bench.py, with the boot network's settings). The same VM (memory, NIC) boots the image
either by PXE and iPXE's sanboot from its node's target, or from a fresh copy of the image given to
it as a virtio disk booted first (its initramfs then finds no iBFT and logs in nowhere).

Each marker is timed when it is first seen, polling every POLL seconds from power-on (the VM's
start): dnsmasq's log saying it sent the MAC's boot.ipxe (its lines carry no finer time of their
own: whole seconds in syslog, none on standard error), and on the serial log the kernel's first "[    0.xxx]" line, the initramfs's "BMI-ROOT "
line and the shell's prompt.

The storm takes the reads of one local BIOS boot (qemu's trace event blk_co_preadv: byte offset and
length of every read of the disk, as the guest's firmware, loaders and kernel asked for them) and
has qemu-io send them, one after the other, to the LUNs of 16 nodes of the same golden image, one
qemu-io process each (libiscsi, logging in with the node's CHAP account): no TCG, only the data
path. The wall time of the 16 at once over that of one alone, pair by pair.
"""
import os
import random
import re
import resource
import statistics
import subprocess
import tempfile
import time

from bmi.bootservice import SCRIPT, mac_directory
from testkit.bootnet import BootNetwork, OSNode
from testkit.initiator import lun_url
from testkit.osimage import CMDLINE, PROMPT, build_os_image

FIRMWARES = ("bios", "uefi")
PAIRS = 3                 # iSCSI and local boots, one of each a pair, for each firmware
STORM_NODES = 16
STORM_PAIRS = 5
BOOT_SECONDS = 300        # power-on to the shell, at most (TCG)
POLL = 0.1                # seconds between two looks at the logs
IMAGE = "bootbench"
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ", re.M)    # printk's time stamp: the kernel runs
# the test OS's command line, with the kernel's notices on the console too (the last loglevel= wins):
# its banner ("Linux version", KERN_NOTICE) is then always the first line, when the serial console
# starts; at loglevel 5 the first line is whatever warning comes first, if any. 19 lines more.
KERNEL_CMDLINE = CMDLINE + " loglevel=6"
READ = re.compile(r"blk_co_preadv blk (\S+) bs \S+ offset (\d+) bytes (\d+)")
# the parts of an iSCSI boot, each ending at a marker
PHASES = (("firmware_dhcp", "script"), ("ipxe_login", "kernel"), ("kernel_initramfs", "root"),
          ("root_to_shell", "prompt"))
LOCAL_PHASES = (("firmware_loader", "kernel"), ("kernel_initramfs", "root"), ("root_to_shell", "prompt"))
LABELS = {"firmware_dhcp": "firmware and DHCP", "ipxe_login": "iPXE and login", "firmware_loader": "firmware and loader",
          "kernel_initramfs": "kernel and initramfs", "root_to_shell": "root mounted to shell"}


class BootBench:
    """A boot network (testkit/bootnet.py) with dnsmasq and the portal relay, in front of a Bench's
    main server and tgtd (make_bench(extra settings) gives one)."""

    def __init__(self, make_bench, workdir):
        self.workdir = workdir
        self.net = BootNetwork(workdir, mode="full")
        try:
            self.bench = make_bench(self.net.settings_values)
        except BaseException:
            self.net.close()
            raise
        try:
            self.settings = self.bench.settings
            self.net.relay(self.bench.tgtd.port)
            self.net.start_dnsmasq(self.net.boot_service(self.settings))
            self.image = build_os_image(os.path.join(workdir, "os.raw"), cmdline=KERNEL_CMDLINE)["path"]   # raw, 1 GiB
            self.bench.proxy.import_image(IMAGE, self.image)
        except BaseException:
            self.stop()
            raise
        self.macs = ("52:54:00:0e:%02x:%02x" % (i >> 8, i & 255) for i in range(1, 1 << 16))

    def stop(self):
        try:
            self.bench.stop()   # detaches every node while the boot service's network is still there
        finally:
            self.net.close()

    # --- one boot, timed ---

    def timeline(self, node, mac=None):
        """{marker: seconds after power-on, when first seen}: "script" (dnsmasq sent mac's boot
        script; with mac only), "kernel", "root", "prompt". Polls until the prompt."""
        log_from = len(self.net.dnsmasq_log())
        sent = "/%s/%s to " % (mac_directory(mac), SCRIPT) if mac else None
        vm = node.vm
        marks = {}
        deadline = vm.started + BOOT_SECONDS
        while "prompt" not in marks:
            now = time.monotonic()
            serial = vm.serial()
            if sent and "script" not in marks and sent in self.net.dnsmasq_log()[log_from:]:
                marks["script"] = now - vm.started
            if "kernel" not in marks and KERNEL_LINE.search(serial):
                marks["kernel"] = now - vm.started
            if "root" not in marks and "BMI-ROOT " in serial:
                marks["root"] = now - vm.started
                marks["root_line"] = serial[serial.index("BMI-ROOT "):].split("\n", 1)[0].strip()
            if "root" in marks and PROMPT in serial[serial.index("BMI-ROOT "):]:
                marks["prompt"] = now - vm.started
                break
            if "BMI-INITRAMFS-FAIL" in serial or vm.proc.poll() is not None or now > deadline:
                raise RuntimeError("%s boot of %s: no shell after %.0f s (seen %s); serial log ends %r"
                                   % (vm.firmware, vm.mac, now - vm.started, sorted(marks), serial[-1500:]))
            time.sleep(POLL)
        return marks

    def boot(self, firmware, side, trace=None):
        """Power on a node, time it to the shell, power it off. side "iscsi": a node provisioned for
        this boot, by the boot service from its target; "local": a fresh copy of the image as the
        VM's own disk."""
        mac = next(self.macs)
        disk = node_name = None
        if side == "iscsi":
            node_name = "boot-" + mac_directory(mac)
            expected = "iscsi=" + self.bench.proxy.provision(IMAGE, node_name, macs=[mac])["iqn"]
        else:
            disk = os.path.join(self.workdir, "local.raw")
            subprocess.run(["cp", "--sparse=always", self.image, disk], check=True, timeout=120)
            expected = "iscsi="
        try:
            node = OSNode(self.net, mac, firmware, BOOT_SECONDS, disk=disk, trace=trace)
            try:
                marks = self.timeline(node, mac if side == "iscsi" else None)
                node.power_off()
            finally:
                node.vm.stop()
                node.console.close()
        finally:
            if node_name:
                self.bench.proxy.detach_node(node_name, True)   # its sessions linger 15 s: force
            if disk:
                os.unlink(disk)
        if not marks["root_line"].endswith(expected):
            raise RuntimeError("%s boot: the root is not where it should be: %s" % (side, marks["root_line"]))
        return marks

    def compare(self, firmware):
        """PAIRS pairs of an iSCSI and a local boot, in turns (which goes first alternates)."""
        pairs = []
        for i in range(PAIRS):
            sides = ("iscsi", "local") if i % 2 == 0 else ("local", "iscsi")
            pair = {side: self.boot(firmware, side) for side in sides}
            pair["ratio"] = pair["iscsi"]["prompt"] / pair["local"]["prompt"]
            pairs.append(pair)
        iscsi = [p["iscsi"] for p in pairs]
        local = [p["local"] for p in pairs]
        return {"pairs": pairs, "ratio": statistics.median(p["ratio"] for p in pairs),
                "iscsi_s": statistics.median(m["prompt"] for m in iscsi),
                "local_s": statistics.median(m["prompt"] for m in local),
                "iscsi_phases": phases(iscsi, PHASES), "local_phases": phases(local, LOCAL_PHASES)}

    # --- the storm ---

    def recorded_reads(self):
        """The reads of one local BIOS boot: [(offset, length)] in bytes, in order."""
        trace = os.path.join(self.workdir, "reads.trace")
        self.boot("bios", "local", trace=trace)
        with open(trace) as f:
            reads = [(m.group(1), int(m.group(2)), int(m.group(3))) for m in map(READ.search, f) if m]
        disk = statistics.mode(blk for blk, _, _ in reads)   # the one disk: the others, if any, are flash
        return [(offset, length) for blk, offset, length in reads if blk == disk]

    def storm(self):
        """STORM_PAIRS pairs of one node's replay alone and STORM_NODES nodes' at once, which goes
        first drawn for each pair; with the CPU time tgtd and the initiators took."""
        reads = self.recorded_reads()
        commands = "".join("read %d %d\n" % r for r in reads) + "quit\n"
        nodes = ["storm-%d" % i for i in range(STORM_NODES)]
        for node in nodes:
            self.bench.proxy.provision(IMAGE, node)
        try:
            urls = [lun_url(self.settings, node) for node in nodes]
            login = statistics.median(replay(urls[:1], "quit\n")["seconds"] for _ in range(5))
            runs = {"alone": [], "together": []}
            for _ in range(STORM_PAIRS):
                for name, some in random.sample([("alone", urls[:1]), ("together", urls)], 2):
                    tgtd = self.tgtd_cpu()
                    run = replay(some, commands)
                    run["tgtd_cpu_s"] = self.tgtd_cpu() - tgtd
                    runs[name].append(run)
        finally:
            for node in nodes:
                self.bench.proxy.detach_node(node, True)
        median = lambda name, key: statistics.median(r[key] for r in runs[name])  # noqa: E731
        return {"nodes": STORM_NODES, "reads": len(reads), "bytes": sum(length for _, length in reads),
                "login_s": login, "runs": runs,
                **{"%s_%s" % (name, key): median(name, key) for name in runs
                   for key in ("seconds", "tgtd_cpu_s", "initiators_cpu_s")},
                "ratio": statistics.median(t["seconds"] / a["seconds"]
                                           for t, a in zip(runs["together"], runs["alone"]))}

    def tgtd_cpu(self):
        """tgtd's CPU seconds so far (user and system)."""
        with open("/proc/%d/stat" % self.bench.tgtd.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phases(runs, names):
    """{phase: {"seconds": median, "share": median share of the boot}} of runs' markers, each phase
    from the marker before it (power-on for the first) to its own."""
    result = {}
    for i, (phase, marker) in enumerate(names):
        seconds = [m[marker] - (m[names[i - 1][1]] if i else 0.0) for m in runs]
        result[phase] = {"seconds": statistics.median(seconds),
                         "share": statistics.median(s / m["prompt"] for s, m in zip(seconds, runs))}
    return result


def replay(urls, commands, timeout=300):
    """qemu-io reads commands (stdin) from each of urls, one process a URL, all at once:
    {"seconds": wall time until the last is done, "initiators_cpu_s": their CPU time}. Each must
    have read everything."""
    with tempfile.TemporaryDirectory(prefix="bmi-replay-") as scratch:
        with open(os.path.join(scratch, "commands"), "w") as f:
            f.write(commands)
        stdins = [open(os.path.join(scratch, "commands")) for _ in urls]
        stdouts = [open(os.path.join(scratch, "out-%d" % i), "w+") for i in range(len(urls))]
        try:
            cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            procs = [subprocess.Popen(["qemu-io", "-f", "raw", url], stdin=stdin, stdout=stdout,
                                      stderr=subprocess.STDOUT) for url, stdin, stdout in zip(urls, stdins, stdouts)]
            try:
                deadline = time.monotonic() + timeout
                for proc in procs:
                    proc.wait(max(1, deadline - time.monotonic()))
                seconds = time.perf_counter() - started
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait(10)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            for proc, stdout in zip(procs, stdouts):
                stdout.seek(0)
                out = stdout.read()
                if proc.returncode != 0 or "failed" in out or out.count(" bytes at offset ") != commands.count("read "):
                    raise RuntimeError("qemu-io replay failed (exit %s): %s" % (proc.returncode, out[-1500:]))
        finally:
            for f in stdins + stdouts:
                f.close()
    return {"seconds": seconds, "initiators_cpu_s": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime}


def run(make_bench, workdir):
    """The boot figures; make_bench(extra settings) starts a Bench with them."""
    boots = BootBench(make_bench, workdir)
    try:
        figures = {firmware: boots.compare(firmware) for firmware in FIRMWARES}
        figures["storm"] = boots.storm()
        return figures
    finally:
        boots.stop()
