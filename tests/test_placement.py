"""Placement with real gateways (three, each with its own tgtd, on one Ceph cluster; BMI_PATHS=2):
each node is exported by the two gateways placed for it (bmi/placement.py) and its boot script names
those two; a dead gateway's nodes get a replacement path within seconds; a gateway that comes back
takes its share back, and a path that a real initiator is logged in through stays until the path
that replaces it is there."""
import json
import time

import pytest

from bmi.placement import placed
from testkit.daemons import wait_until
from testkit.gateways import running_gateways
from testkit.initiator import lun_url, read_lun, session

pytestmark = pytest.mark.parametrize("backend", ["rbd"], indirect=True)
EVERYONE = ["gw-a", "gw-b", "gw-c"]
NODES = ["node-%d" % i for i in range(8)]


@pytest.fixture
def gateways(settings, tmp_path):
    """Gateways gw-a, gw-b and gw-c, running; golden image "golden" (1 MiB of random bytes) imported."""
    with running_gateways(settings, tmp_path, [*EVERYONE]) as group:
        yield group


def paths_listed(gateways, through):
    return {n["node"]: n["paths"] for n in gateways.listing(through)["nodes"]}


def test_each_node_is_exported_by_its_two_placed_gateways_and_its_boot_script_names_them(gateways, tmp_path):
    for i, node in enumerate(NODES):   # through every gateway in turn, placed there or not
        through = EVERYONE[i % 3]
        done = gateways.client(through, "--json", "provision", "golden", node)
        assert done.returncode == 0, done.stderr
        placement = placed(node, EVERYONE, 2)
        assert json.loads(done.stdout)["portals"] == {name: gateways.settings(name).BMI_BOOT_PORTAL
                                                      for name in placement}
        assert gateways.placed_over(EVERYONE, NODES[:i + 1])   # by the time provision returned
    luns = {name: len(gateways.exported(name)) for name in EVERYONE}
    assert sum(luns.values()) == 2 * len(NODES) and all(luns.values()), luns   # not every node everywhere
    for name in EVERYONE:   # the same placement through every gateway
        assert paths_listed(gateways, name) == {node: list(placed(node, EVERYONE, 2)) for node in NODES}
    node = NODES[0]
    for name in placed(node, EVERYONE, 2):   # a real initiator reads the node's disk at both
        s = gateways.settings(name)
        assert read_lun(lun_url(s, node, portal=s.BMI_ISCSI_PORTAL), tmp_path / ("%s.raw" % name)) == gateways.golden


def test_paths_come_back_and_a_returning_gateway_takes_its_share_without_cutting_a_path_before_its_replacement(gateways):
    held, free = "node-4", "node-7"   # both placed on gw-a and gw-c while all three live, gw-a first
    assert placed(held, EVERYONE, 2) == placed(free, EVERYONE, 2) == ("gw-a", "gw-c")
    for node in NODES:
        assert gateways.client("gw-a", "provision", "golden", node).returncode == 0
    assert gateways.placed_over(EVERYONE, NODES)

    gateways.kill("gw-c")   # its main server and its tgtd
    died = time.monotonic()
    wait_until(lambda: gateways.placed_over(["gw-a", "gw-b"], NODES), 10, "every node on the two live gateways")
    replaced = time.monotonic() - died
    assert paths_listed(gateways, "gw-b") == {node: list(placed(node, ["gw-a", "gw-b"], 2)) for node in NODES}

    b = gateways.settings("gw-b")
    with session(lun_url(b, held, portal=b.BMI_ISCSI_PORTAL)) as initiator:   # logged in through gw-b
        # gw-c's main server comes back, its tgtd not yet: the nodes are placed on it again, but it
        # exports nothing
        gateways.start("gw-c", with_tgtd=False)
        wait_until(lambda: paths_listed(gateways, "gw-a")[held] == ["gw-a", "gw-c"], 10, "node-4 placed on gw-c again")
        iqn = lambda node: "%s:%s" % (b.BMI_IQN_PREFIX, node)
        for _ in range(6):   # a dozen rounds of reconciling: gw-b keeps both paths, the one the initiator uses too
            assert {iqn(held), iqn(free)} <= set(gateways.exported("gw-b")) and initiator.poll() is None
            time.sleep(0.5)
        assert {iqn(held), iqn(free)} <= set(gateways.exported("gw-a"))
        gateways.tgtds["gw-c"].start()   # now gw-c exports its share, and gw-b lets both go
        wait_until(lambda: gateways.placed_over(EVERYONE, NODES), 20, "every node on its two gateways again")
    assert replaced < 10, replaced
