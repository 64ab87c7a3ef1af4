"""Moving a node from one image to another: the whole time, and the control plane's share of it.
Part of benchmarks/bench.py (--figures move).

One node, a VM of testkit/bootnet.py (TCG, BIOS) on the boot network of benchmarks/boot.py's
BootBench, whose power is an emulated IPMI BMC that really starts and stops it (testkit/bmc.py:
ipmi_sim and qemu's ipmi-bmc-extern). It first runs image "first" (provision --reboot); then each
move, to the other of two test OS images that differ by one file (tests/test_move.py), is what an
administrator runs, through the Bench's Pyro4 proxy:

    detach_node NODE --power-off        (power_off=True)
    provision OTHER NODE --reboot       (bmc=..., reboot=True)

timed from the detach's call until the node's shell prompt, after its "BMI-ROOT" line, is on its
serial log (polled every POLL seconds), the node then asked which image it runs. The parts:

    control plane   the two calls' time as the client sees it (RPC included), less their power steps
    power           the power steps: the server's calls to the BMC and its wait until the BMC reports
                    the state (the server logs each, bmi/power.py)
    boot            from provision's return to the prompt: firmware, iPXE, kernel, the OS

the control plane's share = control plane / whole move (target: at most 10%).
"""
import os
import re
import statistics
import time

from benchmarks.boot import BOOT_SECONDS, POLL, BootBench
from testkit.bmc import SimulatedBmc
from testkit.console import Console
from testkit.osimage import PROMPT, build_os_image

MOVES = 4
NODE = "mover"
MAC = "52:54:00:0d:00:01"
PASSWORD = "bench-Pa55word"
IMAGE_FILE = "/etc/bmi-image"   # the file by which the two images differ
IMAGES = ("first", "second")
POWER_LINE = re.compile(r"node %s: power \S+, now \S+, in ([0-9.]+) s at its BMC" % NODE)


class MoveBench:
    def __init__(self, make_bench, workdir):
        self.boots = BootBench(make_bench, workdir)
        self.proxy, self.workdir = self.boots.bench.proxy, workdir
        self.server_log = os.path.join(self.boots.bench.workdir, "mainserver.log")
        try:
            for name in IMAGES:
                path = build_os_image(os.path.join(workdir, name + ".raw"), root_files={IMAGE_FILE: name + "\n"})["path"]
                self.proxy.import_image(name, path)
            command, self.files, _ = self.boots.net.vm_command(MAC, "bios", reboot=True, max_runtime=3600)
            self.bmc = SimulatedBmc(workdir, PASSWORD, vm_command=command).start()
        except BaseException:
            self.boots.stop()
            raise

    def stop(self):
        try:
            self.bmc.stop()
        finally:
            self.boots.stop()

    def provision(self, image):
        return self.proxy.provision(image, NODE, macs=[MAC], bmc=self.bmc.bmc(), reboot=True)

    def up(self, image, iqn):
        """Wait for the node's shell; check that it runs image from its iSCSI disk (iqn)."""
        deadline = time.monotonic() + BOOT_SECONDS
        while True:
            serial = read(self.files["serial"])
            root = serial.find("BMI-ROOT ")
            if root >= 0 and PROMPT in serial[root:]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("move to %s: no shell after %d s; serial log ends %r" % (image, BOOT_SECONDS, serial[-1500:]))
            time.sleep(POLL)
        seen = time.monotonic()
        line = serial[root:].split("\n", 1)[0].strip()
        with Console(self.files["console"], self.files["serial"]) as console:
            console.wait_prompt()
            runs = console.run("cat " + IMAGE_FILE)
        if not line.endswith(" iscsi=" + iqn) or runs != image:
            raise RuntimeError("move to %s: the node runs %r, root %s" % (image, runs, line))
        return seen

    def move(self, image):
        """One move of the node, running another image, to image: its times, in seconds."""
        log_from = os.path.getsize(self.server_log)
        started = time.monotonic()
        self.proxy.detach_node(NODE, power_off=True)
        detached = time.monotonic()
        iqn = self.provision(image)["iqn"]
        provisioned = time.monotonic()
        up = self.up(image, iqn)
        with open(self.server_log) as f:
            f.seek(log_from)
            power = [float(m.group(1)) for m in POWER_LINE.finditer(f.read())]
        if len(power) != 2:
            raise RuntimeError("move to %s: %d power steps in the server's log, not 2" % (image, len(power)))
        calls = provisioned - started
        return {"whole_s": up - started, "detach_s": detached - started, "provision_s": provisioned - detached,
                "power_off_s": power[0], "power_on_s": power[1], "control_s": calls - sum(power),
                "boot_s": up - provisioned, "control_share": (calls - sum(power)) / (up - started)}


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace").replace("\r", "")


def run(make_bench, workdir):
    """The move figures; make_bench(extra settings) starts a Bench with them."""
    moves = MoveBench(make_bench, workdir)
    try:
        moves.up(IMAGES[0], moves.provision(IMAGES[0])["iqn"])
        runs = [moves.move(IMAGES[(i + 1) % 2]) for i in range(MOVES)]
        moves.proxy.detach_node(NODE, power_off=True)
    finally:
        moves.stop()
    return {"moves": runs, **{key: statistics.median(r[key] for r in runs) for key in runs[0]}}


def lines(backend, m):
    return ["%s: moving a node (detach_node --power-off, provision OTHER --reboot, to the OS's shell), median of %d: "
            "%.1f s; control plane %.2f s (%.1f%%), power %.2f s (off %.2f, on %.2f), boot %.1f s" % (
                backend, len(m["moves"]), m["whole_s"], m["control_s"], m["control_share"] * 100,
                m["power_off_s"] + m["power_on_s"], m["power_off_s"], m["power_on_s"], m["boot_s"]),
            "%s: moves' control plane shares: %s" % (backend, " ".join("%.3f" % r["control_share"] for r in m["moves"]))]
