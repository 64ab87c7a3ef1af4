"""Real machines boot their disk: a virtual node that knows only DHCP and PXE (BIOS: SeaBIOS with
qemu's iPXE ROM; UEFI: OVMF, whose own PXE chains to Debian's iPXE) boots through bmi-rpc's boot
service (dnsmasq on a bridge in network namespaces, testkit/bootnet.py) an operating system whose
root filesystem is its iSCSI disk (testkit/osimage.py), writes to it, reboots, and is snapshotted;
a node provisioned from the snapshot finds what the first wrote. Root only; slow (TCG)."""
import os

import pytest

from bmi.bootservice import LOADERS
from testkit.bootnet import BootNetwork, OSNode
from testkit.daemons import wait_until
from testkit.osimage import build_os_image

GiB = 1 << 30
BOOT_SECONDS = 300        # power-on to the shell, under TCG (about 40 s BIOS, 90 s UEFI here)
FIRST_MAC, SECOND_MAC = "52:54:00:0b:00:01", "52:54:00:0b:00:02"


@pytest.fixture(scope="session")
def os_image(tmp_path_factory):
    """The test OS as users bring images: qcow2, 2 GiB (sparse), for BIOS and UEFI alike."""
    return build_os_image(tmp_path_factory.mktemp("os") / "debian-test.qcow2", size=2 * GiB, fmt="qcow2")


def mounted_from(node, root, iqn):
    """The node says / is ext4 on the disk of its own target, and its kernel agrees."""
    assert root == {"source": root["source"], "fstype": "ext4", "iscsi": iqn}, root
    mounts = node.console.run("cat /proc/mounts")
    assert "%s / ext4 rw" % root["source"] in mounts, mounts
    assert node.console.run("cat /sys/class/iscsi_session/session*/targetname") == iqn


@pytest.mark.boot
@pytest.mark.parametrize("backend, firmware", [("file", "bios"), ("rbd", "uefi")])
def test_a_node_boots_an_os_whose_root_is_its_disk(backend, firmware, tgtd, settings, server_with, os_image,
                                                   tmp_path):
    with BootNetwork(tmp_path, mode="full") as net:
        net.relay(tgtd.port)
        server = server_with(**net.settings_values)
        assert server.health()["parts"]["boot service"]["up"] is False   # no dnsmasq yet
        net.start_dnsmasq(net.boot_service(settings))
        assert server.health()["parts"]["boot service"] == {
            "up": True, "detail": "dnsmasq, process %d" % net.dnsmasq.pid}
        server.import_image("debian", os_image["path"])
        first = server.provision("debian", "node-1", macs=[FIRST_MAC])

        node = OSNode(net, FIRST_MAC, firmware, BOOT_SECONDS)
        mounted_from(node, node.reach_root(), first["iqn"])
        node.console.run("echo written-by-node-1 > /root/marker && sync")
        mounted_from(node, node.reboot(), first["iqn"])
        assert node.console.run("cat /root/marker") == "written-by-node-1"
        node.power_off()

        server.create_snapshot("node-1", "debian-written")
        second = server.provision("debian-written", "node-2", macs=[SECOND_MAC])
        other = OSNode(net, SECOND_MAC, firmware, BOOT_SECONDS)
        mounted_from(other, other.reach_root(), second["iqn"])
        assert other.console.run("cat /root/marker") == "written-by-node-1"
        other.power_off()

        for node_name in ("node-1", "node-2"):
            # the sessions of a node switched off end when tgtd's pings go unanswered (nop_count)
            wait_until(lambda: server.logged_in(node_name) == [], 60, "%s's sessions end" % node_name)
            server.detach_node(node_name)
        boot_dir = net.settings_values["BMI_BOOT_DIR"]
        assert tgtd.targets() == {} and tgtd.accounts() == []
        assert os.listdir(os.path.join(boot_dir, "hosts")) == []
        assert sorted(os.listdir(os.path.join(boot_dir, "tftp"))) == sorted(LOADERS)
        assert os.listdir(os.path.join(settings.BMI_STATE_DIR, "boot")) == []
        assert server.list_all_images()["nodes"] == []
