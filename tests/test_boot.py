"""A virtual bare-metal node network-boots, with iPXE, the disk that provision gave it.

The node is qemu with software emulation, an e1000 NIC with Debian's iPXE ROM, and qemu's user-mode
network whose TFTP serves the boot script provision wrote; the boot sector on the disk prints a
marker to the serial port.
"""
import os

import pytest

from testkit.bootdisk import boot_sector, write_boot_image
from testkit.bootvm import IPXE_ROM, booted_node, wait_for_marker
from testkit.daemons import require, require_command
from testkit.images import convert
from testkit.initiator import lun_url, write_lun


pytestmark = pytest.mark.boot
BOOT_SECONDS = 180   # about 10 s seen here; room for a loaded machine


@pytest.fixture
def bootable(service, tmp_path):
    """Golden image "bootable" whose boot sector prints BMI-BOOT-ONE."""
    require_command("qemu-system-x86_64", "qemu-system-x86")
    require(os.path.exists(IPXE_ROM), "ipxe-qemu")
    write_boot_image(str(tmp_path / "one.raw"), "BMI-BOOT-ONE")   # 64 MiB: iPXE's SAN boot fails on 4 MiB
    assert service.client("import_image", "bootable", str(tmp_path / "one.raw")).returncode == 0


def boot(settings, node, tmp_path):
    return booted_node(os.path.join(settings.BMI_STATE_DIR, "boot"), node + ".ipxe", str(tmp_path / (node + ".serial")))


def boots_with(settings, node, tmp_path, marker):
    with boot(settings, node, tmp_path) as vm:
        return wait_for_marker(str(tmp_path / (node + ".serial")), marker, BOOT_SECONDS, proc=vm)


def test_a_node_boots_its_disk_and_a_snapshot_of_it(service, settings, bootable, tmp_path):
    assert service.client("provision", "bootable", "node-a").returncode == 0
    assert boots_with(settings, "node-a", tmp_path, "BMI-BOOT-ONE")

    (tmp_path / "two.sector").write_bytes(boot_sector("BMI-BOOT-TWO"))
    write_lun(lun_url(settings, "node-a"), 0, tmp_path / "two.sector")
    for step in (["create_snapshot", "node-a", "bootable2"], ["detach_node", "node-a"],
                 ["provision", "bootable2", "node-b"], ["provision", "bootable", "node-c"]):
        done = service.client(*step)
        assert done.returncode == 0, done.stderr
    assert boots_with(settings, "node-b", tmp_path, "BMI-BOOT-TWO")
    assert boots_with(settings, "node-c", tmp_path, "BMI-BOOT-ONE")   # the first golden image is unchanged


def test_a_booted_node_is_detached_only_by_force(service, settings, bootable, tgtd, tmp_path):
    assert service.client("provision", "bootable", "node-a").returncode == 0
    with boot(settings, "node-a", tmp_path) as vm:
        assert wait_for_marker(str(tmp_path / "node-a.serial"), "BMI-BOOT-ONE", BOOT_SECONDS, proc=vm)
        done = service.client("detach_node", "node-a")
        assert done.returncode == 6   # in use
        assert "node node-a is in use: iqn.2010-04.org.ipxe:" in done.stderr
        assert list(tgtd.targets().values()) == [settings.BMI_IQN_PREFIX + ":node-a"]
        done = service.client("detach_node", "--force", "node-a")
        assert done.returncode == 0, done.stderr
        assert tgtd.targets() == {}


def test_a_node_boots_an_image_imported_from_compressed_qcow2(service, settings, tmp_path):
    require_command("qemu-system-x86_64", "qemu-system-x86")
    require(os.path.exists(IPXE_ROM), "ipxe-qemu")
    write_boot_image(str(tmp_path / "q.raw"), "BMI-BOOT-QCOW2")
    image = convert(tmp_path / "q.raw", tmp_path / "q.qcow2", "qcow2", "-c")
    assert service.client("import_image", "fromqcow2", str(image)).returncode == 0
    assert service.client("provision", "fromqcow2", "node-q").returncode == 0
    assert boots_with(settings, "node-q", tmp_path, "BMI-BOOT-QCOW2")
