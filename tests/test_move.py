"""Moving a node end to end (README, Power): a node whose emulated BMC really powers its VM
(testkit/bmc.py) runs one OS image from its iSCSI disk through the boot service (testkit/bootnet.py),
then `detach_node NODE --power-off` and `provision OTHER NODE --reboot`, through the real programs,
bring it up with its root on its new iSCSI disk, of the other image: the node itself says which (a
file by which the two images differ). Root only; slow (two boots under TCG)."""
import pytest

from testkit.bmc import SimulatedBmc
from testkit.bootnet import BootNetwork
from testkit.console import Console
from testkit.osimage import build_os_image
from testkit.service import Service, detach_every_node, variant

MAC = "52:54:00:0c:00:01"
PASSWORD = "move-Pa55word-plugh"
BOOT_SECONDS = 300        # power-on to the shell, under TCG
IMAGE_FILE = "/etc/bmi-image"   # what the two images differ by


def os_images(directory):
    """Two test OS images (testkit/osimage.py), "first" and "second", each naming itself in IMAGE_FILE."""
    return {name: build_os_image(directory / (name + ".raw"), root_files={IMAGE_FILE: name + "\n"})["path"]
            for name in ("first", "second")}


def booted(files, iqn):
    """Wait for the node's shell; check that its root is its iSCSI disk (iqn); return its console.
    (qemu starts its serial log anew at each power on: what it holds is this boot's.)"""
    console = Console(files["console"], files["serial"])
    line = console.wait_for_log("BMI-ROOT ", BOOT_SECONDS)
    root = dict(word.split("=", 1) for word in line.split()[1:])
    assert root == {"source": root["source"], "fstype": "ext4", "iscsi": iqn}, line
    console.wait_prompt()
    assert "%s / ext4 rw" % root["source"] in console.run("cat /proc/mounts")
    assert console.run("cat /sys/class/iscsi_session/session*/targetname") == iqn
    return console


@pytest.mark.boot
@pytest.mark.parametrize("backend", ["file"])
def test_a_node_moves_to_another_image_through_its_bmc(settings, tgtd, tmp_path):
    images = os_images(tmp_path)
    password_file = tmp_path / "bmc.password"
    password_file.write_text(PASSWORD + "\n")
    with BootNetwork(tmp_path, mode="full") as net:
        net.relay(tgtd.port)
        settings = variant(settings, BMI_BMC_TIMEOUT=1, **net.settings_values)
        net.start_dnsmasq(net.boot_service(settings))
        vm, files, _ = net.vm_command(MAC, "bios", reboot=True, max_runtime=3 * BOOT_SECONDS)
        service = Service(settings, str(tmp_path))
        try:
            service.start()
            for name, path in images.items():
                assert service.client("import_image", name, path).returncode == 0
            with SimulatedBmc(tmp_path, PASSWORD, vm_command=vm) as bmc:
                node = ["node-a", "--mac", MAC, "--bmc-driver", "ipmi", "--bmc-address", bmc.address,
                        "--bmc-user", bmc.user, "--bmc-password-file", str(password_file), "--reboot"]
                done = service.client("provision", "first", *node)
                assert done.returncode == 0, done.stderr
                iqn = service.list_all_images()["nodes"][0]["iqn"]
                console = booted(files, iqn)
                assert console.run("cat " + IMAGE_FILE) == "first"
                console.close()

                done = service.client("detach_node", "node-a", "--power-off")
                assert done.returncode == 0, done.stderr
                assert bmc.vm_pid() is None and service.list_all_images()["nodes"] == []
                assert tgtd.targets() == {}

                done = service.client("provision", "second", *node)
                assert done.returncode == 0, done.stderr
                assert "power:       on (rebooted into its new disk)" in done.stdout
                assert [(n["node"], n["image"]) for n in service.list_all_images()["nodes"]] == [("node-a", "second")]
                console = booted(files, iqn)
                assert console.run("cat " + IMAGE_FILE) == "second"
                console.close()
                assert service.client("detach_node", "node-a", "--power-off").returncode == 0
        finally:
            detach_every_node(service)
            service.stop()
