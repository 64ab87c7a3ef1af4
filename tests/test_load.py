"""Load: 50 mainclient processes at once against the three real processes, on both backends.

Every call gets a definite answer, and the end state is exactly what the successful calls imply:
the provisioned nodes (exported, reading the golden bytes) and the snapshots, and nothing else:
no extra target, CHAP account, disk, rbd image or snapshot, boot script or node record.
"""
import collections
import json
import os
import random
import subprocess
import sys
import time



from config import ROOT
from testkit.fixtures import state_of
from testkit.images import make_image_file
from testkit.initiator import lun_url, node_record, read_lun


GOLDEN_BYTES = 1024 * 1024
CALL_SECONDS = 300   # for all 50 together: 2 cores start 50 Pythons and run their scripts


def the_calls():
    """50 calls. They race in any order; each group's end state follows from its outcomes alone."""
    distinct = [("provision", "golden", "d-%02d" % i) for i in range(15)]               # each succeeds
    shared = [("provision", "golden", "s-%d" % i) for i in range(3) for _ in range(4)]   # one wins a node
    # Provision and detach of one node: the successes alternate provision, detach, provision...
    # (each needs the state the other leaves), so the node ends provisioned iff they differ by one.
    churn = [call for i in range(4) for call in [("provision", "golden", "c-%d" % i)] * 2 + [("detach_node", "c-%d" % i)]]
    snapshots = [("create_snapshot", "d-%02d" % i, "snap-d%d" % i) for i in range(4)] + [
        ("create_snapshot", "c-0", "snap-c0"), ("create_snapshot", "ghost", "snap-ghost")]   # may, may, never exist
    others = [("detach_node", "ghost")] + [("list_all_images",)] * 4
    return distinct + shared + churn + snapshots + others


def node_of(call):
    return call[2] if call[0] == "provision" else call[1]


Outcome = collections.namedtuple("Outcome", "call code out err")


def run_at_once(service, calls):
    """Start every call as its own mainclient process, then collect them; returns (outcomes, seconds)."""
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), "--json", *call],
                              env=service.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for call in calls]
    outcomes = []
    for call, proc in zip(calls, procs):
        try:
            out, err = proc.communicate(timeout=max(0.1, started + CALL_SECONDS - time.monotonic()))
        except subprocess.TimeoutExpired:   # no answer in time: it fails below as code -9
            proc.kill()
            out, err = proc.communicate()
        outcomes.append(Outcome(call, proc.returncode, out, err))
    return outcomes, time.monotonic() - started


def test_fifty_concurrent_clients(service, settings, tgtd, backend, tmp_path, request, capsys):
    golden = make_image_file(tmp_path / "golden.raw", GOLDEN_BYTES)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    calls = the_calls()
    seed = random.randrange(1 << 30)   # start order; the seed reproduces it
    random.Random(seed).shuffle(calls)

    outcomes, seconds = run_at_once(service, calls)
    with capsys.disabled():
        print("\n%s backend: %d concurrent calls answered in %.1f s, %d refused (seed %d)"
              % (backend, len(calls), seconds, sum(o.code != 0 for o in outcomes), seed))

    # every call got a definite answer: done (a JSON result) or refused (one line), never unreachable
    for o in outcomes:
        assert o.code in (0, 1, 4, 5, 6), o   # done, failed, not found, exists, in use
        if o.code == 0:
            assert o.err == "" and isinstance(json.loads(o.out), dict), o
        else:
            assert o.out == "" and o.err.count("\n") == 1 and o.err.startswith("mainclient: %s failed: " % o.call[0]), o

    def succeeded(operation, node):
        return sum(o.code == 0 for o in outcomes if o.call[0] == operation and node_of(o.call) == node)

    for o in outcomes:   # refused for the one right reason
        if o.code == 1 and o.call[0] == "provision":
            assert "node %s is already provisioned" % node_of(o.call) in o.err, o
        elif o.code == 1:
            assert "node %s is not provisioned" % node_of(o.call) in o.err, o
    assert all(o.code == 0 for o in outcomes if o.call[0] == "list_all_images")
    nodes = sorted({node_of(call) for call in calls if call[0] == "provision"})
    for node in nodes:
        provisioned, detached = succeeded("provision", node), succeeded("detach_node", node)
        assert provisioned >= 1 and provisioned - detached in (0, 1), (node, provisioned, detached)
        if node.startswith(("d-", "s-")):
            assert provisioned == 1, node
    assert succeeded("create_snapshot", "ghost") == succeeded("detach_node", "ghost") == 0
    expected_nodes = [n for n in nodes if succeeded("provision", n) - succeeded("detach_node", n) == 1]
    snapshots = sorted(o.call[2] for o in outcomes if o.call[0] == "create_snapshot" and o.code == 0)
    with capsys.disabled():
        print("  ends with %d nodes, snapshots %s" % (len(expected_nodes), " ".join(snapshots)))
    for o in outcomes:   # a listing in the middle of it all shows only what was made, and whole
        if o.call[0] == "list_all_images":
            listed = json.loads(o.out)
            assert {i["name"] for i in listed["images"]} <= {"golden", *snapshots}, o
            assert {n["node"] for n in listed["nodes"]} <= {n for n in nodes if succeeded("provision", n)}, o

    # the listing is exactly what the successes imply
    iqn = {n: "%s:%s" % (settings.BMI_IQN_PREFIX, n) for n in expected_nodes}
    listing = json.loads(service.client("--json", "list_all_images").stdout)
    assert listing["nodes"] == [{"node": n, "image": "golden", "iqn": iqn[n], "gateways": [settings.BMI_GATEWAY],
                                 "paths": [settings.BMI_GATEWAY], "macs": [], "bmc": None}
                                for n in expected_nodes]
    assert sorted(i["name"] for i in listing["images"]) == sorted(["golden"] + snapshots)
    assert {i["size_bytes"] for i in listing["images"]} == {GOLDEN_BYTES}

    # every node exported at its own target, with its own CHAP account, serving the golden bytes
    assert sorted(tgtd.targets().values()) == [iqn[n] for n in expected_nodes]
    assert tgtd.accounts() == expected_nodes
    for node in expected_nodes:
        assert node_record(settings, node)["state"] == "ready"
        assert read_lun(lun_url(settings, node), tmp_path / (node + ".raw")) == golden, node

    # nothing leaked: no file, disk or rbd image beyond those of the nodes and images above
    files = {"audit.log", "lock"} | {"boot/%s.ipxe" % n for n in expected_nodes}
    state = state_of(settings, tgtd)
    if backend == "file":
        files |= {"images/%s.img" % i for i in ["golden"] + snapshots} | {"disks/%s.img" % n for n in expected_nodes}
        files |= {"nodes/%s.json" % n for n in expected_nodes}
        files |= {"owners/%s.json" % i for i in ["golden"] + snapshots}   # whose each image is (bmi/rights.py)
    else:
        images = sorted("node.%s" % n for n in expected_nodes) + sorted("golden/%s" % i for i in ["golden"] + snapshots)
        assert state["rbd"] == images
        assert state["records"] == (["changes", "gateway." + settings.BMI_GATEWAY] + ["node." + n for n in expected_nodes]
                                    + sorted("owner." + i for i in ["golden"] + snapshots))
        cluster = request.getfixturevalue("ceph_cluster")
        for image in images:   # golden images keep their @base only; node disks keep no snapshot
            snaps = [s["name"] for s in json.loads(cluster.rbd("snap", "ls", "--format", "json", cluster.spec(image)).stdout)]
            assert snaps == (["base"] if image.startswith("golden/") else []), image
    assert sorted(state["files"]) == sorted(files)
    assert "Traceback" not in service.log("mainserver")
