"""Placement (bmi/placement.py): nodes spread evenly over the gateways, the same everywhere, and a
gateway that joins or leaves moves only the paths that must move."""
import collections
import os
import subprocess
import sys

import pytest

from bmi.placement import placed, ranked
from config import ROOT

NODES = ["node-%05d" % i for i in range(10000)]
GATEWAYS = ["gw-%02d" % i for i in range(20)]
PATHS = 2


def placements(gateways, nodes=NODES, paths=PATHS):
    return {node: placed(node, gateways, paths) for node in nodes}


def paths_moved(before, after):
    """The paths (node, gateway) of after that before did not have."""
    return sum(len(set(after[node]) - set(before[node])) for node in before)


@pytest.fixture(scope="module")
def twenty():
    return placements(GATEWAYS)


def test_each_node_gets_its_number_of_distinct_gateways_or_all_while_fewer():
    assert all(len(set(paths)) == PATHS for paths in placements(GATEWAYS, NODES[:500]).values())
    assert placed("node-a", ["gw-a"], 2) == ("gw-a",)
    assert sorted(placed("node-a", ["gw-a", "gw-b"], 3)) == ["gw-a", "gw-b"]
    assert placed("node-a", [], 2) == ()
    assert len(placed("node-a", GATEWAYS, 1)) == 1


def test_the_luns_of_10000_nodes_spread_over_20_gateways_within_a_tenth_of_the_mean(twenty):
    luns = collections.Counter(gateway for paths in twenty.values() for gateway in paths)
    assert set(luns) == set(GATEWAYS)
    mean = len(NODES) * PATHS / len(GATEWAYS)
    assert max(luns.values()) / mean <= 1.1, luns
    # and which path comes first (a boot script's first portal) spreads too
    first = collections.Counter(paths[0] for paths in twenty.values())
    assert max(first.values()) / (len(NODES) / len(GATEWAYS)) <= 1.15, first


def test_a_gateway_that_joins_takes_about_its_share_and_nothing_else_moves(twenty):
    joined = placements(GATEWAYS + ["gw-new"])
    total = len(NODES) * PATHS
    moved = paths_moved(twenty, joined)
    assert moved <= 1.1 * total / (len(GATEWAYS) + 1), moved
    for node in NODES:   # every path that moved went to the newcomer, from one gateway
        assert set(joined[node]) - set(twenty[node]) <= {"gw-new"}
        assert len(set(twenty[node]) - set(joined[node])) == len(set(joined[node]) - set(twenty[node]))


def test_a_gateway_that_leaves_gives_up_only_its_own_paths(twenty):
    leaver = "gw-07"
    left = placements([gateway for gateway in GATEWAYS if gateway != leaver])
    for node in NODES:
        kept = set(twenty[node]) - {leaver}
        assert kept <= set(left[node]), node   # no other path moves
        if leaver in twenty[node]:   # its replacement: the next in the node's order
            assert set(left[node]) - kept == {ranked(node, GATEWAYS)[PATHS]}
        else:
            assert left[node] == twenty[node]
    assert paths_moved(twenty, left) == sum(leaver in paths for paths in twenty.values())


def test_the_placement_does_not_depend_on_the_order_of_the_gateways_or_the_process():
    shuffled = list(reversed(GATEWAYS))
    assert placements(shuffled, NODES[:200]) == placements(GATEWAYS, NODES[:200])
    # another interpreter, with another string-hash seed, places alike (no hash())
    code = "from bmi.placement import placed; print(placed('node-00042', ['gw-%02d' % i for i in range(20)], 2))"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                           env={"PATH": os.environ["PATH"], "PYTHONHASHSEED": "12345"}, check=True)
    assert other.stdout.strip() == str(placed("node-00042", GATEWAYS, 2))
