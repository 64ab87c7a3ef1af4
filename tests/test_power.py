"""Nodes powered through their BMCs (bmi/power.py, scripts/power/ipmi) against an emulated BMC that
really powers a test VM (testkit/bmc.py: OpenIPMI's ipmi_sim and qemu's ipmi-bmc-extern): the power
states are the VM's own; a wrong password, an unreachable and a hung BMC each get one line of their
kind; the BMC's password shows in no listing, log or audit line; provision --reboot powers a node
into its new disk, and detach_node --power-off takes it away once it is off. The file backend: the
power work is the same on both."""
import os

import pytest

from bmi.errors import BadInput, Refused, Unavailable
from testkit.bmc import SimulatedBmc
from testkit.bootdisk import write_boot_image
from testkit.bootvm import node_command, wait_for_marker
from testkit.daemons import wait_until
from testkit.service import Service, audit_lines, variant

pytestmark = pytest.mark.boot
PASSWORD = "bmc-Pa55word-xyzzy"
VM_SECONDS = 30        # for qemu to start or go, under TCG on a loaded machine
BOOT_SECONDS = 180     # a marker disk's boot, as tests/test_boot.py


@pytest.fixture
def image(tmp_path):
    write_boot_image(str(tmp_path / "one.raw"), "BMI-POWER-ONE")
    return str(tmp_path / "one.raw")


@pytest.mark.parametrize("backend", ["file"])
def test_power_states_are_the_vms(server_with, image, tmp_path):
    server = server_with(BMI_BMC_TIMEOUT=1)
    server.import_image("golden", image)
    with SimulatedBmc(tmp_path, PASSWORD) as bmc:
        server.provision("golden", "node-a", bmc=bmc.bmc())
        record = os.path.join(server.settings.BMI_STATE_DIR, "nodes", "node-a.json")
        assert os.stat(record).st_mode & 0o777 == 0o600   # kept as the CHAP secret is
        assert server.power("node-a", "status") == {"node": "node-a", "power": "off"}
        assert bmc.vm_pid() is None
        assert server.power("node-a", "on")["power"] == "on"
        wait_until(lambda: bmc.vm_pid() is not None, VM_SECONDS, "the VM to run")
        first = bmc.vm_pid()
        assert server.power("node-a", "cycle")["power"] == "on"
        wait_until(lambda: bmc.vm_pid() not in (None, first), VM_SECONDS, "a new VM to run")
        assert server.power("node-a", "off")["power"] == "off"
        assert bmc.vm_pid() is None   # off as soon as the BMC says so: the VM has gone
        assert server.power("node-a", "status")["power"] == "off"
        with pytest.raises(BadInput, match="unknown power action 'reset'"):
            server.power("node-a", "reset")
        assert server.list_all_images()["nodes"][0]["bmc"] == {"driver": "ipmi", "address": bmc.address,
                                                               "user": "admin"}


@pytest.mark.parametrize("backend", ["file"])
def test_a_wrong_password_an_unreachable_and_a_hung_bmc(server_with, image, tmp_path):
    server = server_with(BMI_BMC_TIMEOUT=1)
    server.import_image("golden", image)
    with SimulatedBmc(tmp_path, PASSWORD) as bmc:
        server.provision("golden", "wrong", bmc=bmc.bmc(password="wrong-" + PASSWORD[:10]))
        server.provision("golden", "nowhere", bmc=bmc.bmc(address="127.0.0.1:%d" % bmc.vm_port))  # no IPMI there
        server.provision("golden", "hung", bmc=bmc.bmc())
        server.provision("golden", "plain")
        with pytest.raises(Refused) as refused:
            server.power("wrong", "on")
        assert str(refused.value) == "node wrong power on: the BMC at %s refused user admin or its password" % bmc.address
        with pytest.raises(Refused, match="^node wrong-too is provisioned, but not rebooted: the BMC at .* refused"):
            server.provision("golden", "wrong-too", bmc=bmc.bmc(password="wrong"), reboot=True)
        with pytest.raises(Unavailable) as unreachable:
            server.power("nowhere", "status")
        assert str(unreachable.value) == ("node nowhere power status: the BMC at 127.0.0.1:%d did not answer within "
                                          "1 s (unreachable, or hung)" % bmc.vm_port)
        bmc.hang()
        try:
            with pytest.raises(Unavailable, match="^node hung power off: the BMC at .* did not answer within 1 s"):
                server.power("hung", "off")
            with pytest.raises(Unavailable, match="^node hung is not detached: the BMC at .* did not answer"):
                server.detach_node("hung", power_off=True)
        finally:
            bmc.resume()
        assert server.power("hung", "status")["power"] == "off"   # the same BMC, answering again
        assert {n["node"] for n in server.list_all_images()["nodes"]} == {"wrong", "wrong-too", "nowhere", "hung", "plain"}
        with pytest.raises(Refused, match="^node plain has no BMC"):
            server.power("plain", "on")
        with pytest.raises(BadInput, match="^provision --reboot needs the node's BMC"):
            server.provision("golden", "other", reboot=True)
        assert bmc.vm_pid() is None   # nothing powered it on


@pytest.mark.parametrize("backend", ["file"])
def test_provision_reboot_boots_the_new_disk_and_detach_powers_off(settings, tmp_path, image):
    """A node moved through the real programs: provision --reboot, detach_node --power-off, provision
    of another image --reboot; the password in none of their outputs, logs or audit lines."""
    settings = variant(settings, BMI_BMC_TIMEOUT=1)
    write_boot_image(str(tmp_path / "two.raw"), "BMI-POWER-TWO")
    serial = str(tmp_path / "node-a.serial")
    vm = node_command(os.path.join(settings.BMI_STATE_DIR, "boot"), "node-a.ipxe", serial)
    service = Service(settings, str(tmp_path))
    password_file = tmp_path / "bmc.password"
    password_file.write_text(PASSWORD + "\n")
    try:
        service.start()
        for image_name, path in (("one", image), ("two", str(tmp_path / "two.raw"))):
            assert service.client("import_image", image_name, path).returncode == 0
        with SimulatedBmc(tmp_path, PASSWORD, vm_command=vm) as bmc:
            bmc_options = ["--bmc-driver", "ipmi", "--bmc-address", bmc.address, "--bmc-user", "admin",
                           "--bmc-password-file", str(password_file)]
            outputs = []
            for step, marker in ((["provision", "one", "node-a", "--reboot"], "BMI-POWER-ONE"),
                                 (["detach_node", "node-a", "--power-off"], None),
                                 (["provision", "two", "node-a", "--reboot"], "BMI-POWER-TWO")):
                done = service.client(*step, *(bmc_options if step[0] == "provision" else []))
                outputs += [done.stdout, done.stderr]
                assert done.returncode == 0, done.stderr
                if marker:
                    assert "power:       on (rebooted into its new disk)" in done.stdout
                    assert wait_for_marker(serial, marker, BOOT_SECONDS)
                else:
                    assert bmc.vm_pid() is None
            listing = service.client("--json", "list_all_images")
            power = service.client("power", "node-a", "status")
            assert power.stdout.strip() == "node node-a: power on"
            outputs += [listing.stdout, listing.stderr, power.stdout, power.stderr]
            assert service.client("detach_node", "node-a", "--power-off").returncode == 0
    finally:
        service.stop()
    lines = audit_lines(settings)
    assert [line["operation"] for line in lines if line["operation"] in ("provision", "detach_node", "power")] == [
        "provision", "detach_node", "provision", "power", "detach_node"]
    assert all("'password': '(secret)'" in line["options"]["bmc"] for line in lines if line["operation"] == "provision")
    everything = "".join(outputs) + service.log("mainserver") + service.log("nameserver")
    with open(settings.BMI_AUDIT_LOG) as f:
        everything += f.read()
    assert PASSWORD not in everything
