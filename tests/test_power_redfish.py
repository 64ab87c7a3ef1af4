"""Nodes powered through a Redfish BMC (scripts/power/redfish, with Debian's sushy) against
sushy-tools' emulator powering a libvirt VM (testkit/redfish.py), through the real programs
(mainclient.py power): the power states are the VM's own, its qemu process; a wrong password, an
unreachable and a hung BMC each get one line and the exit code of their kind, within the time
limit; a certificate that BMI_BMC_CA does not verify is no connection; the BMC's password shows in
no output, log or audit line. The file backend: the power work is the same on both."""
import json
import socket
import subprocess
import time

import pytest

import config
from bmi import runner
from testkit.images import make_image_file
from testkit.redfish import RedfishBmc
from testkit.service import Service, audit_lines, variant

pytestmark = pytest.mark.service
PASSWORD = "bmc-Pa55word-redfish"
BMC_SECONDS = 5        # BMI_BMC_TIMEOUT of these tests: the emulator's ForceOff takes 2 s (libvirt stops qemu)
CLIENT_SECONDS = 4     # mainclient's start and the server's call around the driver's wait for the BMC


@pytest.fixture(scope="module")
def bmc(tmp_path_factory):
    with RedfishBmc(tmp_path_factory.mktemp("bmc"), PASSWORD) as emulated:
        yield emulated


@pytest.fixture
def programs(settings, bmc, tmp_path):
    """The three programs, their driver's BMCs verified with the emulator's CA, and a golden image."""
    processes = Service(variant(settings, BMI_BMC_TIMEOUT=BMC_SECONDS, BMI_BMC_CA=bmc.ca), str(tmp_path))
    make_image_file(str(tmp_path / "golden.raw"))
    try:
        processes.start()
        assert processes.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
        yield processes
    finally:
        processes.stop()


def bmc_options(bmc, tmp_path, name, address=None, password=PASSWORD):
    password_file = tmp_path / (name + ".password")
    password_file.write_text(password + "\n")
    return ["--bmc-driver", "redfish", "--bmc-address", address or bmc.address, "--bmc-user", bmc.user,
            "--bmc-password-file", str(password_file)]


def everything_logged(programs, outputs):
    """What the programs said (outputs: completed mainclient calls), logged and audited."""
    text = "".join(done.stdout + done.stderr for done in outputs) + programs.log("mainserver") + programs.log("nameserver")
    with open(programs.settings.BMI_AUDIT_LOG) as f:
        return text + f.read()


@pytest.mark.parametrize("backend", ["file"])
def test_power_states_are_the_vms(programs, bmc, tmp_path):
    done = programs.client("provision", "golden", "node-a", *bmc_options(bmc, tmp_path, "node-a"))
    assert done.returncode == 0, done.stderr
    outputs = [done]

    def power(action):
        done = programs.client("power", "node-a", action)
        outputs.append(done)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert power("status") == "node node-a: power off" and bmc.vm_pid() is None
    assert power("on") == "node node-a: power on"
    first = bmc.vm_pid()
    assert first is not None   # on as soon as the BMC says so: qemu runs
    assert power("cycle") == "node node-a: power on"
    assert bmc.vm_pid() not in (None, first)   # another qemu: the VM was off in between
    assert power("off") == "node node-a: power off" and bmc.vm_pid() is None
    assert power("status") == "node node-a: power off"
    listing = programs.client("--json", "list_all_images")
    outputs.append(listing)
    assert json.loads(listing.stdout)["nodes"][0]["bmc"] == {"driver": "redfish", "address": bmc.address, "user": "admin"}
    assert programs.client("detach_node", "node-a").returncode == 0
    assert [line["operation"] for line in audit_lines(programs.settings) if line["operation"] == "power"] == [
        "power"] * 5
    assert PASSWORD not in everything_logged(programs, outputs)


@pytest.mark.parametrize("backend", ["file"])
def test_a_wrong_password_an_unreachable_and_a_hung_bmc(programs, bmc, tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.2", 0))   # a port nothing listens on once this socket is closed
        nowhere = "127.0.0.2:%d" % closed.getsockname()[1]
    hung = socket.socket()   # listens, and never answers: the kernel takes the connection, nobody reads it
    hung.bind(("127.0.0.1", 0))
    hung.listen()
    outputs = []
    try:
        for node, options in (("wrong", bmc_options(bmc, tmp_path, "wrong", password="wrong-" + PASSWORD)),
                              ("nowhere", bmc_options(bmc, tmp_path, "nowhere", address=nowhere)),
                              ("hung", bmc_options(bmc, tmp_path, "hung", address="127.0.0.1:%d" % hung.getsockname()[1]))):
            done = programs.client("provision", "golden", node, *options)
            assert done.returncode == 0, done.stderr
        for node, action, code, said in (
                ("wrong", "on", 7, "the BMC at %s refused user admin or its password" % bmc.address),
                ("nowhere", "status", 8, "the BMC at %s did not answer within %d s (unreachable, or hung)"
                 % (nowhere, BMC_SECONDS)),
                ("hung", "off", 8, "the BMC at 127.0.0.1:%d did not answer within %d s (unreachable, or hung)"
                 % (hung.getsockname()[1], BMC_SECONDS))):
            started = time.monotonic()
            done = programs.client("power", node, action)
            took = time.monotonic() - started
            outputs.append(done)
            assert (done.returncode, done.stderr) == (
                code, "mainclient: power failed: node %s power %s: %s\n" % (node, action, said))
            assert took < BMC_SECONDS + CLIENT_SECONDS, "%s: %.1f s" % (node, took)
    finally:
        hung.close()
    assert bmc.vm_pid() is None   # nothing powered it on
    for node in ("wrong", "nowhere", "hung"):
        assert programs.client("detach_node", node).returncode == 0
    assert PASSWORD not in everything_logged(programs, outputs)


def test_the_bmcs_certificate_is_verified_with_bmi_bmc_ca(bmc):
    """The driver as the server runs it: with the emulator's CA, and with the system's CAs alone,
    which did not sign its certificate."""
    def status(ca):
        script = runner.Script("power", "redfish", config.Settings(BMI_BMC_TIMEOUT=BMC_SECONDS, BMI_BMC_CA=ca))
        return subprocess.run([script.path, "status", bmc.address, bmc.user], env=dict(script.env, BMI_BMC_PASSWORD=PASSWORD),
                              capture_output=True, text=True, timeout=30)

    verified = status(bmc.ca)
    assert (verified.returncode, verified.stdout) == (0, "off\n")
    refused = status("")
    assert (refused.returncode, refused.stderr) == (
        1, "the BMC at %s: no TLS connection verified by the system's CAs: unable to get local issuer certificate\n"
        % bmc.address)
