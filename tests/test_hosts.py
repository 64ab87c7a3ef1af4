"""Across hosts: the name server, the main server with its tgtd, the client and a node, each on a
test host of its own (a network namespace, testkit/netns.py), as the original design has them on
machines that reach each other. The servers listen on all interfaces and advertise an address the
others can use."""
import json
import os
import subprocess
import sys

import pytest

import config
from testkit.bootdisk import write_boot_image
from testkit.bootvm import IPXE_ROM, booted_node, wait_for_marker
from testkit.daemons import Tgtd, free_port, require, require_command
from testkit.images import MiB, make_image_file
from testkit.initiator import lun_url
from testkit.netns import Network, ip
from testkit.service import Service, variant
from testkit.tls import Certificates, with_tls


class Hosts:
    """The name server, the main server with its tgtd, a client and a node, each a host of its own."""

    def __init__(self, workdir):
        require_command("ip", "iproute2")
        self.workdir = workdir
        self.network = Network()
        self.names, self.server, self.client, self.node = (self.network.host(name) for name in
                                                           ("names", "server", "client", "node"))
        self.tgtd = Tgtd(os.path.join(workdir, "tgtd.log"), host=self.server)

    def settings(self, **changes):
        """What every program is given: the name server's address, the server's portal for the nodes."""
        return config.Settings(**dict({
            "BMI_STATE_DIR": os.path.join(self.workdir, "state"), "BMI_BACKEND": "file",
            "BMI_KEY_FILE": os.path.join(self.workdir, "hmac.key"),
            "BMI_TGT_CONTROL_PORT": self.tgtd.control, "BMI_ISCSI_PORTAL": self.tgtd.portal,
            "BMI_BOOT_PORTAL": self.tgtd.portal, "BMI_NS_HOST": self.names.address, "BMI_NS_PORT": free_port(),
            "BMI_SERVER_HOST": "0.0.0.0", "BMI_SERVER_PORT": free_port(), "BMI_TGT_CHECK_SECONDS": 0.5}, **changes))

    def service(self, settings):
        """The three programs on their hosts; the name server listens on all of its interfaces."""
        return Service(settings, self.workdir, hosts={"nameserver": self.names, "mainserver": self.server,
                                                      "mainclient": self.client},
                       changes={"nameserver": {"BMI_NS_HOST": "0.0.0.0", "BMI_NS_ADVERTISE": self.names.address}})

    def close(self):
        self.tgtd.stop()
        self.network.close()


@pytest.fixture
def hosts(tmp_path):
    made = Hosts(str(tmp_path))
    try:
        made.tgtd.start()
        yield made
    finally:
        made.close()


@pytest.fixture
def across(hosts):
    """The three programs running across the hosts; every node force-detached at the end."""
    service = hosts.service(hosts.settings())
    try:
        service.start()
        yield service
        for node in service.list_all_images()["nodes"]:
            service.detach_node(node["node"], force=True)
    finally:
        service.stop()


def registered(service):
    """The URI the main server registered with the name server, as the client's host reads it."""
    done = service.client("--json", "ping")   # the client finds it there; then ask the name server itself
    assert done.returncode == 0, done.stderr
    script = ("import config, sys; from bmi import pyrosetup; s = config.Settings(); pyrosetup.configure(s); "
              "ns = pyrosetup.locate_ns(s); print(pyrosetup.gateways(ns, s.BMI_OBJECT_NAME)[s.BMI_GATEWAY])")
    return service.hosts["mainclient"].run(sys.executable, "-c", script, env=service.env, cwd=config.ROOT,
                                           capture_output=True, text=True, timeout=60).stdout.strip()


def test_a_client_on_another_host_provisions_lists_snapshots_and_detaches(hosts, across, tmp_path):
    golden = make_image_file(tmp_path / "golden.raw", 2 * MiB)
    assert registered(across) == "PYRO:%s@%s:%d" % (across.settings.BMI_OBJECT_NAME, hosts.server.address,
                                                   across.settings.BMI_SERVER_PORT)
    for args in (["import_image", "golden", str(tmp_path / "golden.raw")], ["provision", "golden", "node-a"]):
        done = across.client(*args)
        assert done.returncode == 0, done.stderr
    assert [n["node"] for n in across.list_all_images()["nodes"]] == ["node-a"]

    # a real initiator on the client's host reads the node's disk through the server's portal
    require_command("qemu-img", "qemu-utils")
    url = lun_url(across.settings, "node-a")
    assert url.split("@")[1].startswith(hosts.tgtd.portal)
    done = hosts.client.run("qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(tmp_path / "back.raw"),
                            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "back.raw").read_bytes() == golden

    for args, out in ((["create_snapshot", "node-a", "snap"], "created golden image snap from node node-a\n"),
                      (["detach_node", "node-a"], "detached node node-a (image golden, target %s:node-a)\n"
                       % across.settings.BMI_IQN_PREFIX)):
        done = across.client(*args)
        assert (done.returncode, done.stdout) == (0, out), done.stderr
    assert json.loads(across.client("--json", "list_all_images").stdout)["images"] == [
        {"name": "golden", "size_bytes": 2 * MiB}, {"name": "snap", "size_bytes": 2 * MiB}]


@pytest.mark.boot
def test_a_node_on_another_host_boots_from_its_boot_script(hosts, across, tmp_path):
    require_command("qemu-system-x86_64", "qemu-system-x86")
    require(os.path.exists(IPXE_ROM), "ipxe-qemu")
    write_boot_image(str(tmp_path / "boot.raw"), "BMI-BOOT-ACROSS")
    assert across.client("import_image", "bootable", str(tmp_path / "boot.raw")).returncode == 0
    assert across.client("provision", "bootable", "node-a").returncode == 0
    boot_dir = os.path.join(across.settings.BMI_STATE_DIR, "boot")
    with open(os.path.join(boot_dir, "node-a.ipxe")) as f:
        assert "sanboot iscsi:%s::%d:1:" % (hosts.server.address, hosts.tgtd.port) in f.read()
    serial = str(tmp_path / "node-a.serial")
    with booted_node(boot_dir, "node-a.ipxe", serial, host=hosts.node) as vm:
        assert wait_for_marker(serial, "BMI-BOOT-ACROSS", 180, proc=vm)


def test_tls_across_hosts_with_a_certificate_naming_the_advertised_addresses(hosts, tmp_path):
    require_command("openssl", "openssl")
    certificates = Certificates(tmp_path / "tls", addresses=[hosts.names.address, hosts.server.address])
    settings = with_tls(hosts.settings(), certificates.cert, certificates.ca[0])
    service = hosts.service(settings)
    try:
        service.start()
        assert service.client("ping").returncode == 0
        stranger = tmp_path / "stranger.key"
        stranger.write_text("00112233445566778899aabbccddeeff\n")
        stranger.chmod(0o600)
        service.changes["mainclient"] = {"BMI_KEY_FILE": str(stranger)}
        done = service.client("ping")
        assert (done.returncode, done.stderr) == (3, "mainclient: authentication failed: the servers refused the "
                                                     "key in %s\n" % stranger)
    finally:
        service.stop()


def test_the_advertised_address_is_the_one_set(hosts, tmp_path):
    """BMI_SERVER_ADVERTISE wins over the address found: here a second address of the server's host."""
    second = hosts.server.address.rsplit(".", 1)[0] + ".200"
    ip("addr", "add", second + "/24", "dev", "eth0", netns=hosts.server.namespace)
    settings = hosts.settings(BMI_SERVER_ADVERTISE=second)
    service = hosts.service(settings)
    try:
        service.start()
        assert registered(service) == "PYRO:%s@%s:%d" % (settings.BMI_OBJECT_NAME, second, settings.BMI_SERVER_PORT)
    finally:
        service.stop()


def test_a_main_server_that_cannot_tell_its_address_says_what_to_set(tmp_path):
    """On all interfaces, with the name server on loopback: no address others could use."""
    settings = config.Settings(BMI_STATE_DIR=str(tmp_path / "state"), BMI_KEY_FILE=str(tmp_path / "hmac.key"),
                               BMI_SERVER_HOST="0.0.0.0", BMI_SERVER_PORT=free_port(), BMI_NS_PORT=free_port(),
                               BMI_TGT_CONTROL_PORT=free_port() % 30000 + 1)
    done = subprocess.run([sys.executable, os.path.join(config.ROOT, "mainserver.py")],
                          env=dict(os.environ, **settings.environment()), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "mainserver: it listens on all interfaces (0.0.0.0) but cannot tell "
                                                 "which address others reach it at: set BMI_SERVER_ADVERTISE=HOST[:PORT]\n")
    settings = variant(settings, BMI_NS_HOST="0.0.0.0")
    done = subprocess.run([sys.executable, os.path.join(config.ROOT, "nameserver.py")],
                          env=dict(os.environ, **settings.environment()), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "nameserver: it listens on all interfaces (0.0.0.0) but cannot tell "
                                                 "which address others reach it at: set BMI_NS_ADVERTISE=HOST[:PORT]\n")
