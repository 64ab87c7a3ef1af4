"""Placement at scale (bmi/placement.py, computed as every gateway computes it; no daemons): 10,000
nodes on 20 gateways with 2 paths each: the LUNs each gateway's tgtd would hold, max and min over
the mean, and the paths that move when a 21st gateway joins and when one leaves, over the fewest
possible (a newcomer's fair share, 1/N of all paths; a leaver's own paths). Part of
benchmarks/bench.py (--figures placement)."""
import collections
import time

from bmi.placement import placed

TARGETS = {   # name: (figure, limit): at most
    "luns_max_vs_mean": ("LUNs per gateway, max / mean", 1.1),
    "join_moved_vs_fewest": ("paths moved on a join / (1/N of all paths)", 1.1),
    "leave_moved_vs_fewest": ("paths moved on a leave / the leaver's paths", 1.0),
}


def placements(nodes, gateways, paths):
    return {node: placed(node, gateways, paths) for node in nodes}


def moved(before, after):
    """The paths (a node at a gateway) after has that before had not."""
    return sum(len(set(after[node]) - set(before[node])) for node in before)


def run(nodes=10000, gateways=20, paths=2):
    names = ["node-%05d" % i for i in range(nodes)]
    members = ["gw-%02d" % i for i in range(gateways)]
    started = time.perf_counter()
    before = placements(names, members, paths)
    seconds = time.perf_counter() - started
    luns = collections.Counter(gateway for placement in before.values() for gateway in placement)
    mean = nodes * paths / gateways
    joined = moved(before, placements(names, members + ["gw-new"], paths))
    leaver = members[0]
    left = moved(before, placements(names, members[1:], paths))
    return {"nodes": nodes, "gateways": gateways, "paths": paths, "placement_seconds": seconds,
            "luns_max": max(luns.values()), "luns_min": min(luns.values()), "luns_mean": mean,
            "luns_max_vs_mean": max(luns.values()) / mean, "luns_min_vs_mean": min(luns.values()) / mean,
            "join_moved": joined, "join_moved_vs_fewest": joined / (nodes * paths / (gateways + 1)),
            "leave_moved": left, "leave_moved_vs_fewest": left / luns[leaver]}


def lines(figures):
    f = figures
    found = ["placement: %d nodes on %d gateways, %d paths each (placed in %.2f s): LUNs per gateway %d to %d, "
             "mean %.0f; a join moves %d paths, a leave %d" % (
                 f["nodes"], f["gateways"], f["paths"], f["placement_seconds"], f["luns_min"], f["luns_max"],
                 f["luns_mean"], f["join_moved"], f["leave_moved"])]
    found += ["placement: %-46s %6.3f  at most %g%s" % (label, f[key], limit, "" if f[key] <= limit else "  (missed)")
              for key, (label, limit) in TARGETS.items()]
    return found
