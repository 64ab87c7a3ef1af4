"""The README's first command, tools/demo, as a newcomer runs it: a machine that knows only PXE boots
its OS from its iSCSI disk through the boot service, BIOS by default and UEFI with --uefi, and the
demo stops all it started. Root only; slow (TCG)."""
import os
import re
import subprocess

import pytest

from config import ROOT


def leaked_namespaces():
    """Test networks (testkit/netns.py: bmiPID.N-NAME) whose maker is gone: nobody will remove them."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    return [name for name in listed if re.match(r"bmi\d+\.", name)
            and not os.path.exists("/proc/%s" % name[3:].split(".")[0])]


@pytest.mark.boot
# the other two of backend and firmware than tests/test_os_boot.py's: all four boot an OS
@pytest.mark.parametrize("options", [["--uefi"], ["--rbd"]], ids=["file-uefi", "rbd-bios"])
def test_the_demo_boots_its_node_through_the_boot_service(options):
    before = leaked_namespaces()
    done = subprocess.run([os.path.join(ROOT, "tools", "demo"), *options], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    firmware = "uefi" if "--uefi" in options else "bios"
    assert "(%s): / is ext4 on /dev/mapper/mpatha-part2, logged in to iqn.2026-11.io.bmi-rpc:node-a" % firmware in done.stdout
    assert "says: /dev/mapper/mpatha-part2 / ext4 rw" in done.stdout
    assert "detached node node-a" in done.stdout and done.stdout.rstrip().endswith(
        "done: node-a booted its OS from the disk it was provisioned")
    assert leaked_namespaces() == before
