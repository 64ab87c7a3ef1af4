"""Several gateways, one truth in Ceph: two or three main servers, each with its own tgtd, on one
throwaway cluster and one name server, on loopback. Every gateway exports every ready node; a node
boots through whichever answers; gateways come and go."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from config import ROOT
from testkit.bootdisk import write_boot_image
from testkit.bootvm import IPXE_ROM, booted_node, wait_for_marker
from testkit.daemons import rbd_images, require, require_command, wait_until
from testkit.gateways import GatewayGroup
from testkit.images import MiB, make_image_file
from testkit.initiator import lun_url, read_lun

rbd_only = pytest.mark.parametrize("backend", ["rbd"], indirect=True)
pytestmark = rbd_only


@pytest.fixture
def gateways(settings, tmp_path):
    """Gateways gw-a and gw-b, running; golden image "golden" (1 MiB of random bytes) imported."""
    group = GatewayGroup(settings, str(tmp_path))
    try:
        group.start_all("gw-a", "gw-b")
        group.golden = make_image_file(tmp_path / "golden.raw", MiB)
        assert group.client("gw-a", "import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
        yield group
    finally:
        group.stop()


def iqn(settings, node):
    return "%s:%s" % (settings.BMI_IQN_PREFIX, node)


def test_a_node_provisioned_through_one_gateway_is_exported_by_both(gateways, settings, tmp_path):
    done = gateways.client("gw-a", "--json", "provision", "golden", "node-a")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["portals"] == {name: gateways.settings(name).BMI_BOOT_PORTAL for name in ("gw-a", "gw-b")}
    assert result["down"] == []
    assert gateways.exported("gw-b") == [iqn(settings, "node-a")]   # by the time provision returned
    b = gateways.settings("gw-b")
    assert read_lun(lun_url(b, "node-a", portal=b.BMI_ISCSI_PORTAL), tmp_path / "b.raw") == gateways.golden
    with open(os.path.join(b.BMI_STATE_DIR, "boot", "node-a.ipxe")) as f:   # B serves the boot script too
        sanboot = f.read().splitlines()[-1].split()
    assert sanboot[0] == "sanboot" and sorted(sanboot[1:]) == sorted(
        "iscsi:%s::%s:1:%s" % (*gateways.settings(name).BMI_BOOT_PORTAL.split(":"), iqn(settings, "node-a"))
        for name in ("gw-a", "gw-b"))
    for name in ("gw-a", "gw-b"):   # the same answer through every gateway
        listing = gateways.listing(name)
        assert listing["nodes"] == [{"node": "node-a", "image": "golden", "iqn": iqn(settings, "node-a"),
                                     "gateways": ["gw-a", "gw-b"], "macs": []}]
        assert [(g["name"], g["up"]) for g in listing["gateways"]] == [("gw-a", True), ("gw-b", True)]


def test_the_same_node_provisioned_through_two_gateways_at_once_has_one_winner(gateways, settings):
    for attempt in range(3):
        node = "race-%d" % attempt
        clients = [subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), "--gateway", name,
                                     "provision", "golden", node], env=gateways.services[name].env, cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for name in ("gw-a", "gw-b")]
        outcomes = sorted((client.wait(120), client.stderr.read()) for client in clients)
        assert outcomes[0] == (0, "")
        # the loser: already exists (5), or in use (6) while the winner's provision runs
        assert outcomes[1] == (5, "mainclient: provision failed: node %s is already provisioned (from image golden)\n"
                               % node) or (outcomes[1][0] == 6 and re.fullmatch(
                                   "mainclient: provision failed: node %s is being provisioned by gateway gw-[ab]\n"
                                   % node, outcomes[1][1])), outcomes
        wait_until(lambda: all(iqn(settings, node) in gateways.exported(name) for name in ("gw-a", "gw-b")),
                   20, "both export the winner's node")


def test_a_detach_through_one_gateway_removes_the_targets_at_the_other(gateways, settings):
    assert gateways.client("gw-a", "provision", "golden", "node-a").returncode == 0
    done = gateways.client("gw-b", "detach_node", "node-a")
    assert done.returncode == 0, done.stderr
    assert gateways.exported("gw-a") == gateways.exported("gw-b") == []
    for name in ("gw-a", "gw-b"):
        assert os.listdir(os.path.join(gateways.settings(name).BMI_STATE_DIR, "boot")) == []
    assert [image for image in rbd_images(settings.environment()) if image.startswith("node.")] == []


@pytest.mark.boot
def test_a_node_boots_while_a_gateway_is_dead_and_the_gateway_comes_back(gateways, settings, tmp_path):
    require_command("qemu-system-x86_64", "qemu-system-x86")
    require(os.path.exists(IPXE_ROM), "ipxe-qemu")
    write_boot_image(str(tmp_path / "boot.raw"), "BMI-BOOT-MULTIPATH")
    assert gateways.client("gw-a", "import_image", "bootable", str(tmp_path / "boot.raw")).returncode == 0
    assert gateways.client("gw-a", "provision", "bootable", "node-a").returncode == 0
    gateways.kill("gw-a")   # its main server and its tgtd
    listing = gateways.listing("gw-b")
    assert [(g["name"], g["up"]) for g in listing["gateways"]] == [("gw-a", False), ("gw-b", True)]
    assert listing["nodes"][0]["gateways"] == ["gw-b"]
    serial = str(tmp_path / "node-a.serial")
    boot_dir = os.path.join(gateways.settings("gw-b").BMI_STATE_DIR, "boot")
    with booted_node(boot_dir, "node-a.ipxe", serial) as vm:   # its script names gw-a's portal first
        assert wait_for_marker(serial, "BMI-BOOT-MULTIPATH", 180, proc=vm)
    started = time.monotonic()
    gateways.start("gw-a")   # back: it exports every ready node again by itself
    wait_until(lambda: gateways.exported("gw-a") == [iqn(settings, "node-a")], 20, "gw-a exports node-a again")
    assert time.monotonic() - started < 30
    assert gateways.listing("gw-a")["nodes"][0]["gateways"] == ["gw-a", "gw-b"]


def test_a_new_gateway_joins_and_a_removed_one_is_forgotten(gateways, settings):
    for node in ("node-a", "node-b"):
        assert gateways.client("gw-a", "provision", "golden", node).returncode == 0
    gateways.add("gw-c")
    gateways.start("gw-c")
    wait_until(lambda: gateways.exported("gw-c") == [iqn(settings, "node-a"), iqn(settings, "node-b")], 20,
               "gw-c exports every ready node")

    def portals_named(name):
        with open(os.path.join(gateways.settings(name).BMI_STATE_DIR, "boot", "node-a.ipxe")) as f:
            return len(f.read().splitlines()[-1].split()) - 1

    wait_until(lambda: all(portals_named(name) == 3 for name in ("gw-a", "gw-b", "gw-c")), 20,
               "every boot script names three gateways")
    done = gateways.client("gw-a", "remove_gateway", "gw-c")
    assert done.returncode == 7 and "gateway gw-c answers: stop it first" in done.stderr
    gateways.kill("gw-c")
    done = gateways.client("gw-a", "remove_gateway", "gw-c")
    assert (done.returncode, done.stdout) == (0, "removed gateway gw-c\n"), done.stderr
    assert [g["name"] for g in gateways.listing("gw-b")["gateways"]] == ["gw-a", "gw-b"]
    wait_until(lambda: all(portals_named(name) == 2 for name in ("gw-a", "gw-b")), 20,
               "boot scripts name two gateways again")


def test_a_gateway_killed_during_a_burst_of_provisions_leaves_nothing_half_made(gateways, settings):
    nodes = ["burst-%d" % i for i in range(8)]
    a = gateways.services["gw-a"]
    clients = [subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), "--gateway", "gw-a",
                                 "provision", "golden", node], env=a.env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for node in nodes]
    wait_until(lambda: any(iqn(settings, node) in gateways.exported("gw-a") for node in nodes), 60,
               "provisions under way")
    a.mainserver.kill()   # its tgtd lives on
    a.mainserver.wait(10)
    for client in clients:
        client.wait(60)
    gateways.start("gw-a")

    def whole():
        """Every node either ready and exported by both, or gone from everywhere."""
        ready = {n["node"] for n in gateways.listing("gw-b")["nodes"]}
        disks = {image[len("node."):] for image in rbd_images(settings.environment()) if image.startswith("node.")}
        exports = {name: set(gateways.exported(name)) for name in ("gw-a", "gw-b")}
        return disks == ready and all(exports[name] == {iqn(settings, node) for node in ready} for name in exports)

    wait_until(whole, 60, "nothing half made, at either gateway")


def test_status_names_a_dead_gateway_down(gateways):
    assert gateways.client("gw-a", "status").returncode == 0
    gateways.kill("gw-b")
    done = gateways.client("gw-a", "--json", "status")
    assert done.returncode == 8, done.stderr
    status = json.loads(done.stdout)["gateways"]
    assert status["gw-a"]["up"] and not status["gw-b"]["up"]
    assert "cannot reach the main server" in status["gw-b"]["detail"], status
