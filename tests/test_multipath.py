"""A running node outlives its gateway: the test OS (testkit/osimage.py) logs in to each path its
boot script names (iPXE's sanboot puts every portal in the iBFT) and mounts its root from a
dm-multipath map over them, so when the gateway of the path in use dies (its main server and tgtd
killed), the node goes on writing through the other, and nothing it synced is lost; and its path
keeper (bmi-paths) logs in to the gateway its boot script names anew, so the node outlives the
gateways it booted from. Gateways on one Ceph cluster (testkit/gateways.py); the node on qemu's
user-mode network, where the gateways' portals on the host's loopback are 10.0.2.2 and its TFTP
server (qemu's) serves it boot.ipxe. Root only; slow (TCG)."""
import os
import re
import subprocess
import time

import pytest

from bmi.placement import placed
from testkit.bootnet import serial_args
from testkit.bootvm import IPXE_ROM, node_command, stop_node
from testkit.console import ESCAPE, PROMPT, Console
from testkit.daemons import require, require_command, wait_until
from testkit.gateways import running_gateways
from testkit.initiator import lun_url, read_lun
from testkit.osimage import PATHS_LOG, build_os_image

pytestmark = [pytest.mark.boot, pytest.mark.parametrize("backend", ["rbd"], indirect=True)]
BOOT_SECONDS = 300        # power-on to the shell, under TCG (about 40 s here)
FAILOVER_SECONDS = 60     # the dead path's I/O fails after its recovery_tmo (5 s), then goes to the other
MiB = 1 << 20
# the node's writer: appends numbered lines to a file of its root, each synced before it says so on
# the console; a pause between lines keeps the log short
WRITER = ("(i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); "
          "{ echo $i >> /root/numbers && sync; } || { echo BMI-WRITE-FAILED $i; break; }; "
          "echo BMI-WROTE $i; sleep 0.2; done; echo BMI-WRITER-DONE) &")


def start_os_node(tmp_path, boot_script):
    """A diskless BIOS node that iPXE boots from boot.ipxe, a link to boot_script (a gateway's, which
    it keeps current), on qemu's user-mode network, its serial console a socket to type at and a log
    (testkit/console.py): (qemu's Popen, Console)."""
    require_command("qemu-system-x86_64", "qemu-system-x86")
    require(os.path.exists(IPXE_ROM), "ipxe-qemu")
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    os.symlink(boot_script, str(tftp / "boot.ipxe"))
    serial, sock = str(tmp_path / "node.serial"), str(tmp_path / "node.console")
    argv = node_command(str(tftp), "boot.ipxe", serial, memory_mb=256)
    at = argv.index("-serial")
    argv[at:at + 2] = serial_args(sock, serial)
    with open(str(tmp_path / "node.stderr"), "wb") as err:
        proc = subprocess.Popen(["timeout", "-k", "5", str(3 * BOOT_SECONDS), *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return proc, Console(sock, serial)


def lines(log):
    """The console's log without prompts and terminal control sequences: what the node said starts
    a line, and the echo of what was typed does not."""
    return ESCAPE.sub("", log).replace(PROMPT, "")


def written(log):
    """The numbers the writer said it wrote and synced."""
    return [int(n) for n in re.findall(r"^BMI-WROTE (\d+)$", lines(log), re.M)]


def said(log, word):
    return re.search("^" + word, lines(log), re.M) is not None


class Node:
    """The test OS booted from gateway through's boot script of node-a, provisioned from it."""

    def __init__(self, gateways, tmp_path, through):
        self.gateways, self.tmp_path = gateways, tmp_path
        self.image = build_os_image(tmp_path / "os.raw", size=256 * MiB, firmware="bios")
        assert gateways.client(through, "import_image", "debian", self.image["path"]).returncode == 0
        assert gateways.client(through, "provision", "debian", "node-a").returncode == 0
        self.iqn = "%s:node-a" % gateways.base.BMI_IQN_PREFIX
        self.proc, self.console = start_os_node(
            tmp_path, os.path.join(gateways.settings(through).BMI_STATE_DIR, "boot", "node-a.ipxe"))
        self.start = None   # where in the console's log the writer started

    def boot(self):
        line = self.console.wait_for_log("BMI-ROOT ", BOOT_SECONDS, proc=self.proc)
        self.console.wait_prompt()
        root = dict(word.split("=", 1) for word in line.split()[1:])
        assert root == {"source": "/dev/mapper/mpatha-part2", "fstype": "ext4", "iscsi": self.iqn}, root
        assert "/dev/mapper/mpatha-part2 / ext4 rw" in self.console.run("cat /proc/mounts")

    def run(self, command):
        """console.run, without the lines the writer says meanwhile on the same console."""
        return re.sub(r"^BMI-WROTE \d+\n", "", self.console.run(command) + "\n", flags=re.M).rstrip("\n")

    def paths(self):
        """{disk: the gateway it goes to} of the map's paths, one disk for each gateway's session."""
        disks = self.run("ls /sys/block/$(grep -l ^mpath- /sys/block/dm-*/dm/uuid | cut -d/ -f4)/slaves")
        port = {disk: int(self.run("cat /sys/block/%s/device/../../connection*/iscsi_connection/*/"
                                   "persistent_port" % disk)) for disk in disks.split()}
        return {disk: name for disk in port for name, tgtd in self.gateways.tgtds.items() if tgtd.port == port[disk]}

    def path_in_use(self, disks):
        """The disk the writes go to (failover: one path at a time)."""
        def writes():   # sectors written, field 7 of /sys/block/DISK/stat
            return {disk: int(self.console.run("cat /sys/block/%s/stat" % disk).split()[6]) for disk in disks}
        before = writes()
        self.console.run("dd if=/dev/urandom of=/root/probe bs=64k count=16 && sync")
        after = writes()
        active = [disk for disk in disks if after[disk] > before[disk]]
        assert len(active) == 1, (before, after)
        return active[0]

    def log(self):
        return self.console.log()[self.start:]

    def write(self):
        self.start = len(self.console.log())
        self.console.send(WRITER)
        wait_until(lambda: len(written(self.log())) >= 5, 60, "the node writes")

    def kill_and_write_on(self, name):
        """Kill gateway name (its main server and its tgtd) while the node writes: it writes 20 lines more."""
        self.gateways.kill(name)
        killed, at_kill = time.monotonic(), max(written(self.log()))
        wait_until(lambda: said(self.log(), "BMI-WRITE-FAILED") or max(written(self.log())) >= at_kill + 20,
                   FAILOVER_SECONDS + 30, "the node writes on after the kill")
        assert not said(self.log(), "BMI-WRITE-FAILED"), self.log()[-3000:]
        print("%s killed at line %d; 20 lines more within %.1f s" % (name, at_kill, time.monotonic() - killed))

    def stop_writing(self):
        """Stop the writer; the numbers it synced, which the disk holds (read back, not from the page cache)."""
        self.console.send("touch /tmp/stop")
        wait_until(lambda: said(self.log(), "BMI-WRITER-DONE"), 60, "the writer stops")
        self.console.wait_prompt()
        synced = written(self.log())
        assert synced == list(range(1, len(synced) + 1))
        self.console.run("echo 3 > /proc/sys/vm/drop_caches")
        assert self.console.run("cat /root/numbers").split() == [str(n) for n in synced]
        return synced

    def power_off(self):
        self.console.send("poweroff -f")
        wait_until(lambda: self.proc.poll() is not None, 60, "the node powers off")

    def close(self):
        stop_node(self.proc)
        self.console.close()

    def numbers_at(self, name):
        """/root/numbers as gateway name exports the disk: its copy of the root, journal replayed."""
        s = self.gateways.settings(name)
        disk = read_lun(lun_url(s, "node-a", portal=s.BMI_ISCSI_PORTAL), self.tmp_path / "after.raw")
        offset, size = self.image["partitions"]["root"]
        with open(str(self.tmp_path / "root.ext4"), "wb") as f:
            f.write(disk[offset:offset + size])
        del disk
        fsck = subprocess.run(["e2fsck", "-fy", str(self.tmp_path / "root.ext4")], capture_output=True, text=True,
                              timeout=120)
        assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr   # 1: fixed (the journal replayed)
        return subprocess.run(["debugfs", "-R", "cat /root/numbers", str(self.tmp_path / "root.ext4")],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split()


def test_a_running_node_goes_on_writing_when_the_gateway_of_its_path_dies(settings, tmp_path):
    with running_gateways(settings, tmp_path, ["gw-a", "gw-b"]) as gateways:
        node = Node(gateways, tmp_path, "gw-b")   # the script both gateways serve: it names both portals
        try:
            node.boot()
            paths = node.paths()
            assert sorted(paths) == ["sda", "sdb"] and sorted(paths.values()) == ["gw-a", "gw-b"], paths
            active = node.path_in_use(paths)
            surviving = paths[{"sda": "sdb", "sdb": "sda"}[active]]
            node.write()
            node.kill_and_write_on(paths[active])
            synced = node.stop_writing()
            assert node.console.run("cat /sys/block/%s/device/state" % active) != "running"
            node.power_off()
        finally:
            node.close()
        assert node.numbers_at(surviving) == [str(n) for n in synced]


def test_a_running_node_logs_in_to_the_gateway_placed_anew_and_outlives_both_it_booted_from(settings, tmp_path):
    """Three gateways; the node is placed on two. The first dies: the node is placed on the other
    and the third, whose boot script (which the node boots from, and its path keeper reads) names
    them; the node logs in to the third. The second dies: it goes on writing through the third."""
    everyone = ["gw-a", "gw-b", "gw-c"]
    with running_gateways(settings, tmp_path, everyone) as gateways:
        first, second = placed("node-a", everyone, 2)
        third, = set(everyone) - {first, second}
        node = Node(gateways, tmp_path, third)
        try:
            node.boot()
            paths = node.paths()
            assert sorted(paths.values()) == sorted([first, second]), paths
            active = node.path_in_use(paths)
            node.write()
            node.kill_and_write_on(paths[active])
            third_portal = gateways.settings(third).BMI_BOOT_PORTAL
            wait_until(lambda: "BMI-PATH-ADDED %s " % third_portal in node.console.run("cat %s" % PATHS_LOG),
                       FAILOVER_SECONDS, lambda: "the node logs in to %s: %s" % (
                           third, node.console.run("cat %s" % PATHS_LOG)))
            assert third in node.paths().values()
            node.kill_and_write_on({first: second, second: first}[paths[active]])
            synced = node.stop_writing()
            paths = node.paths()
            assert paths[node.path_in_use(paths)] == third
            node.power_off()
        finally:
            node.close()
        assert node.numbers_at(third) == [str(n) for n in synced]
