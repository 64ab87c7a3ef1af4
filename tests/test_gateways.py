"""Several gateways, one truth in Ceph: two or three main servers, each with its own tgtd, on one
throwaway cluster and one name server, on loopback. Each ready node is exported by BMI_PATHS (2)
gateways: with two, by both (tests/test_placement.py: with three); a node boots through whichever
answers; gateways come and go."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from bmi.placement import placed
from bmi.target import serial
from testkit.bootdisk import write_boot_image
from testkit.bootvm import IPXE_ROM, booted_node, wait_for_marker
from testkit.daemons import rbd_images, require, require_command, wait_until
from testkit.gateways import running_gateways
from testkit.initiator import lun_url, read_lun

rbd_only = pytest.mark.parametrize("backend", ["rbd"], indirect=True)
pytestmark = rbd_only


@pytest.fixture
def gateways(settings, tmp_path):
    """Gateways gw-a and gw-b, running; golden image "golden" (1 MiB of random bytes) imported."""
    with running_gateways(settings, tmp_path, ["gw-a", "gw-b"]) as group:
        yield group


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
                                     "gateways": ["gw-a", "gw-b"], "paths": list(placed("node-a", ["gw-a", "gw-b"], 2)),
                                     "macs": [], "bmc": None}]
        assert [(g["name"], g["up"]) for g in listing["gateways"]] == [("gw-a", True), ("gw-b", True)]


def test_a_disk_has_one_identity_at_every_gateway(gateways, settings):
    """dm-multipath groups paths by the disk's identifier (VPD page 0x83): every gateway gives a disk
    the same, whichever target number its tgtd gave it, and each disk its own."""
    require_command("iscsi-inq", "libiscsi-bin")
    gateways.kill("gw-b")   # gw-a alone numbers node-a 1, node-b 2; gw-b, back, numbers node-b 1
    for node in ("node-a", "node-b"):
        assert gateways.client("gw-a", "provision", "golden", node).returncode == 0
    assert gateways.client("gw-a", "detach_node", "node-a").returncode == 0
    gateways.start("gw-b")
    wait_until(lambda: gateways.exported("gw-b") == [iqn(settings, "node-b")], 20, "gw-b exports node-b")
    assert gateways.client("gw-a", "provision", "golden", "node-c").returncode == 0
    tids = {name: {node: gateways.tgtds[name].tid(iqn(settings, node)) for node in ("node-b", "node-c")}
            for name in ("gw-a", "gw-b")}
    assert tids == {"gw-a": {"node-b": 2, "node-c": 1}, "gw-b": {"node-b": 1, "node-c": 2}}

    def identity(name, node):
        """What the LUN says of itself: its device identification and unit serial number pages."""
        url = lun_url(gateways.settings(name), node, portal=gateways.settings(name).BMI_ISCSI_PORTAL)
        return [subprocess.run(["iscsi-inq", "-e", "1", "-c", str(page), url], capture_output=True, timeout=60,
                               check=True).stdout for page in (0x83, 0x80)]

    node_b = identity("gw-a", "node-b")
    assert identity("gw-b", "node-b") == node_b
    assert serial(iqn(settings, "node-b")).encode() in node_b[0] and serial(iqn(settings, "node-b")).encode() in node_b[1]
    assert identity("gw-b", "node-c") == identity("gw-a", "node-c") != node_b


def test_the_same_node_provisioned_through_two_gateways_at_once_has_one_winner(gateways, settings):
    for attempt in range(3):
        node = "race-%d" % attempt
        clients = [gateways.provisions(name, [node], "--gateway", name)[node] for name in ("gw-a", "gw-b")]
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
    tftp = tmp_path / "tftp"   # the script as it is while both gateways live: it names both, gw-a first
    tftp.mkdir()
    shutil.copy(os.path.join(gateways.settings("gw-b").BMI_STATE_DIR, "boot", "node-a.ipxe"), str(tftp))
    assert gateways.boot_portals("gw-b", "node-a")[0] == gateways.settings("gw-a").BMI_BOOT_PORTAL
    gateways.kill("gw-a")   # its main server and its tgtd
    listing = gateways.listing("gw-b")
    assert [(g["name"], g["up"]) for g in listing["gateways"]] == [("gw-a", False), ("gw-b", True)]
    assert listing["nodes"][0]["gateways"] == ["gw-b"]
    serial = str(tmp_path / "node-a.serial")
    # booted from that script (gw-b soon places the node on itself alone): its first portal is dead
    with booted_node(str(tftp), "node-a.ipxe", serial) as vm:
        assert wait_for_marker(serial, "BMI-BOOT-MULTIPATH", 180, proc=vm)
    started = time.monotonic()
    gateways.start("gw-a")   # back: it exports every ready node again by itself
    wait_until(lambda: gateways.exported("gw-a") == [iqn(settings, "node-a")], 20, "gw-a exports node-a again")
    assert time.monotonic() - started < 30
    assert gateways.listing("gw-a")["nodes"][0]["gateways"] == ["gw-a", "gw-b"]


def test_a_new_gateway_joins_and_a_removed_one_is_forgotten(gateways, settings):
    nodes = ["node-a", "node-b", "node-c", "node-d"]   # gw-c is placed for node-c and node-d, not the others
    for node in nodes:
        assert gateways.client("gw-a", "provision", "golden", node).returncode == 0
    gateways.add("gw-c")
    gateways.start("gw-c")
    everyone = ["gw-a", "gw-b", "gw-c"]
    assert {node for node in nodes if "gw-c" in placed(node, everyone, 2)} == {"node-c", "node-d"}
    wait_until(lambda: gateways.placed_over(everyone, nodes), 20, "gw-c takes its share, the others give theirs up")
    listing = gateways.listing("gw-c")
    assert {n["node"]: n["paths"] for n in listing["nodes"]} == {node: list(placed(node, everyone, 2)) for node in nodes}
    assert {n["node"]: n["gateways"] for n in listing["nodes"]} == {node: sorted(placed(node, everyone, 2))
                                                                    for node in nodes}
    done = gateways.client("gw-a", "remove_gateway", "gw-c")
    assert done.returncode == 7 and "gateway gw-c answers: stop it first" in done.stderr
    gateways.kill("gw-c")
    done = gateways.client("gw-a", "remove_gateway", "gw-c")
    assert (done.returncode, done.stdout) == (0, "removed gateway gw-c\n"), done.stderr
    assert [g["name"] for g in gateways.listing("gw-b")["gateways"]] == ["gw-a", "gw-b"]
    wait_until(lambda: gateways.placed_over(["gw-a", "gw-b"], nodes), 20, "both gateways export every node again")


def test_a_gateway_killed_during_a_burst_of_provisions_leaves_nothing_half_made(gateways, settings):
    nodes = ["burst-%d" % i for i in range(8)]
    a = gateways.services["gw-a"]
    clients = gateways.provisions("gw-a", nodes, "--gateway", "gw-a")
    wait_until(lambda: any(iqn(settings, node) in gateways.exported("gw-a") for node in nodes), 60,
               "provisions under way")
    a.mainserver.kill()   # its tgtd lives on
    a.mainserver.wait(10)
    for client in clients.values():
        client.communicate(timeout=60)
    gateways.start("gw-a")
    # every node ready and exported by both, or gone from everywhere
    wait_until(lambda: gateways.whole("gw-b"), 60, lambda: "nothing half made, at either gateway (%s)"
               % "; ".join(gateways.half_made("gw-b")))


def test_status_names_a_dead_gateway_down(gateways):
    assert gateways.client("gw-a", "status").returncode == 0
    gateways.kill("gw-b")
    done = gateways.client("gw-a", "--json", "status")
    assert done.returncode == 8, done.stderr
    status = json.loads(done.stdout)["gateways"]
    assert status["gw-a"]["up"] and not status["gw-b"]["up"]
    assert "cannot reach the main server" in status["gw-b"]["detail"], status
