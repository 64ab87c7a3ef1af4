"""A running node outlives its gateway: the test OS (testkit/osimage.py) logs in to each path its
boot script names (iPXE's sanboot puts every portal in the iBFT) and mounts its root from a
dm-multipath map over them, so when the gateway of the path in use dies (its main server and tgtd
killed), the node goes on writing through the other, and nothing it synced is lost. Two gateways on
one Ceph cluster (testkit/gateways.py); the node on qemu's user-mode network, where the gateways'
portals on the host's loopback are 10.0.2.2. Root only; slow (TCG)."""
import os
import re
import shutil
import subprocess
import time

import pytest

from testkit.bootnet import serial_args
from testkit.bootvm import IPXE_ROM, node_command, stop_node
from testkit.console import ESCAPE, PROMPT, Console
from testkit.daemons import require, require_command, wait_until
from testkit.gateways import running_gateways
from testkit.initiator import lun_url, read_lun
from testkit.osimage import build_os_image

pytestmark = [pytest.mark.boot, pytest.mark.parametrize("backend", ["rbd"], indirect=True)]
BOOT_SECONDS = 300        # power-on to the shell, under TCG (about 40 s here)
FAILOVER_SECONDS = 60     # the dead path's I/O fails after its recovery_tmo (5 s), then goes to the other
MiB = 1 << 20
# the node's writer: appends numbered lines to a file of its root, each synced before it says so on
# the console; a pause between lines keeps the log short
WRITER = ("(i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); "
          "{ echo $i >> /root/numbers && sync; } || { echo BMI-WRITE-FAILED $i; break; }; "
          "echo BMI-WROTE $i; sleep 0.2; done; echo BMI-WRITER-DONE) &")


def start_os_node(tmp_path, tftp, boot_file):
    """A diskless BIOS node that iPXE boots from tftp/boot_file on qemu's user-mode network, its
    serial console a socket to type at and a log (testkit/console.py): (qemu's Popen, Console)."""
    require_command("qemu-system-x86_64", "qemu-system-x86")
    require(os.path.exists(IPXE_ROM), "ipxe-qemu")
    serial, sock = str(tmp_path / "node.serial"), str(tmp_path / "node.console")
    argv = node_command(str(tftp), boot_file, serial, memory_mb=256)
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


def test_a_running_node_goes_on_writing_when_the_gateway_of_its_path_dies(settings, tmp_path):
    with running_gateways(settings, tmp_path, ["gw-a", "gw-b"]) as gateways:
        image = build_os_image(tmp_path / "os.raw", size=256 * MiB, firmware="bios")
        assert gateways.client("gw-a", "import_image", "debian", image["path"]).returncode == 0
        assert gateways.client("gw-a", "provision", "debian", "node-a").returncode == 0
        iqn = "%s:node-a" % settings.BMI_IQN_PREFIX
        tftp = tmp_path / "tftp"   # the script both gateways serve: it names both portals
        tftp.mkdir()
        shutil.copy(os.path.join(gateways.settings("gw-b").BMI_STATE_DIR, "boot", "node-a.ipxe"), str(tftp))
        assert len(gateways.boot_portals("gw-b", "node-a")) == 2
        proc, console = start_os_node(tmp_path, tftp, "node-a.ipxe")
        try:
            line = console.wait_for_log("BMI-ROOT ", BOOT_SECONDS, proc=proc)
            console.wait_prompt()
            root = dict(word.split("=", 1) for word in line.split()[1:])
            assert root == {"source": "/dev/mapper/mpatha-part2", "fstype": "ext4", "iscsi": iqn}, root
            assert "/dev/mapper/mpatha-part2 / ext4 rw" in console.run("cat /proc/mounts")
            # the map's paths: one disk for each gateway's session
            assert console.run("ls /sys/block/$(grep -l ^mpath- /sys/block/dm-*/dm/uuid | cut -d/ -f4)/slaves") \
                .split() == ["sda", "sdb"]
            port = {disk: int(console.run("cat /sys/block/%s/device/../../connection*/iscsi_connection/*/"
                                          "persistent_port" % disk)) for disk in ("sda", "sdb")}
            gateway_of = {disk: name for disk in port for name, tgtd in gateways.tgtds.items()
                          if tgtd.port == port[disk]}
            assert sorted(gateway_of.values()) == ["gw-a", "gw-b"], (port, gateway_of)

            # the path in use is the one whose disk the writes go to (failover: one path at a time)
            def writes():   # sectors written, field 7 of /sys/block/DISK/stat
                return {disk: int(console.run("cat /sys/block/%s/stat" % disk).split()[6]) for disk in port}
            before = writes()
            console.run("dd if=/dev/urandom of=/root/probe bs=64k count=16 && sync")
            after = writes()
            active = [disk for disk in port if after[disk] > before[disk]]
            assert len(active) == 1, (before, after)
            dying, surviving = gateway_of[active[0]], gateway_of[{"sda": "sdb", "sdb": "sda"}[active[0]]]

            start = len(console.log())
            console.send(WRITER)
            wait_until(lambda: len(written(console.log()[start:])) >= 5, 60, "the node writes")
            gateways.kill(dying)   # its main server and its tgtd: the path in use breaks
            killed, at_kill = time.monotonic(), max(written(console.log()[start:]))
            wait_until(lambda: said(console.log()[start:], "BMI-WRITE-FAILED") or
                       max(written(console.log()[start:])) >= at_kill + 20,
                       FAILOVER_SECONDS + 30, "the node writes on after the kill")
            assert not said(console.log()[start:], "BMI-WRITE-FAILED"), console.log()[start:][-3000:]
            print("%s killed at line %d; 20 lines more within %.1f s" % (dying, at_kill, time.monotonic() - killed))
            console.send("touch /tmp/stop")
            wait_until(lambda: said(console.log()[start:], "BMI-WRITER-DONE"), 60, "the writer stops")
            console.wait_prompt()
            synced = written(console.log()[start:])
            assert synced == list(range(1, len(synced) + 1))
            # read back from the disk (through the surviving path), not from the page cache
            console.run("echo 3 > /proc/sys/vm/drop_caches")
            assert console.run("cat /root/numbers").split() == [str(n) for n in synced]
            assert console.run("cat /sys/block/%s/device/state" % active[0]) != "running"
            console.send("poweroff -f")
            wait_until(lambda: proc.poll() is not None, 60, "the node powers off")
        finally:
            stop_node(proc)
            console.close()

        # and what the surviving gateway exports holds them: its copy of the root, journal replayed
        s = gateways.settings(surviving)
        disk = read_lun(lun_url(s, "node-a", portal=s.BMI_ISCSI_PORTAL), tmp_path / "after.raw")
        offset, size = image["partitions"]["root"]
        with open(str(tmp_path / "root.ext4"), "wb") as f:
            f.write(disk[offset:offset + size])
        del disk
        fsck = subprocess.run(["e2fsck", "-fy", str(tmp_path / "root.ext4")], capture_output=True, text=True,
                              timeout=120)
        assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr   # 1: fixed (the journal replayed)
        numbers = subprocess.run(["debugfs", "-R", "cat /root/numbers", str(tmp_path / "root.ext4")],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        assert numbers.split() == [str(n) for n in synced]
