"""Races on one golden image across gateways (rbd, two gateways on one Ceph cluster): delete_image
through one gateway while provisions from the image run through the other. Whatever the order, the
image ends fully gone or whole (listed, provisionable, its nodes detachable, then deletable), with
nothing left in Ceph's trash and no stray snapshot, and every failure is one line of a named kind."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from config import ROOT
from testkit.daemons import rbd, rbd_images
from testkit.gateways import GatewayGroup
from testkit.images import MiB, make_image_file

pytestmark = pytest.mark.parametrize("backend", ["rbd"], indirect=True)

LEADS = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05] * 2   # seconds the delete starts before the provisions, a round each
ROUNDS = len(LEADS)
PROVISIONS = 10   # each round, through gw-b, while gw-a deletes
STAGGER = 0.05    # seconds between the starts of two provisions


@pytest.fixture
def gateways(settings, tmp_path):
    group = GatewayGroup(settings, str(tmp_path))
    try:
        group.start_all("gw-a", "gw-b")
        yield group
    finally:
        group.stop()


def client(gateways, name, *args):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), "--gateway", name, *args],
                            env=gateways.services[name].env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def outcome(proc):
    out, err = proc.communicate(timeout=180)
    return proc.returncode, err


def one_line_of_a_kind(operation, image, code, err):
    """A failure as the client says it: one line, the exit code of a named kind, and the words of
    that kind (no librbd log line, no "command failed")."""
    words = {4: r"no such image: %s" % re.escape(image),   # a provision or delete after the delete
             6: r"image %s is in use: .+" % re.escape(image)}
    return code in words and re.fullmatch(r"mainclient: %s failed: %s\n" % (operation, words[code]), err)


def images(gateways, name):
    return [i["name"] for i in gateways.listing(name)["images"]]


def trash(settings):
    pool = settings["BMI_CEPH_POOL"]
    found = []
    for where in (pool, pool + "/golden"):
        out = rbd(settings, "trash", "ls", "--format", "json", where)
        assert out.returncode == 0 or "does not exist" in out.stderr, out.stderr
        found += json.loads(out.stdout or "[]")
    return found


def snapshots(settings, image):
    """Every snapshot of the rbd image POOL/IMAGE, the trashed ones too, as (namespace, name)."""
    out = rbd(settings, "snap", "ls", "--all", "--format", "json", "%s/%s" % (settings["BMI_CEPH_POOL"], image))
    assert out.returncode == 0, out.stderr
    return sorted((s.get("namespace", {}).get("type", "user"), s["name"]) for s in json.loads(out.stdout))


def race(gateways, ceph, source, round_, tally):
    """One round: import the image, race delete_image through gw-a with provisions through gw-b,
    then check that the image is gone or whole. Each outcome counted in tally."""
    image = "race-%d" % round_
    done = gateways.client("gw-a", "import_image", image, source)
    assert done.returncode == 0, done.stderr
    # delete_image through gw-a first, provisions through gw-b from LEADS[round_] seconds later,
    # and a second delete halfway through them
    deletes = [client(gateways, "gw-a", "delete_image", image)]
    time.sleep(LEADS[round_])
    provisions = []
    for i in range(PROVISIONS):
        provisions.append(client(gateways, "gw-b", "provision", image, "r%d-%d" % (round_, i)))
        if i == PROVISIONS // 2:
            deletes.append(client(gateways, "gw-a", "delete_image", image))
        time.sleep(STAGGER)
    deletes = [outcome(d) for d in deletes]
    provided = [outcome(p) for p in provisions]
    tally["provisions ok"] += sum(code == 0 for code, _ in provided)
    tally["provisions not found"] += sum(code == 4 for code, _ in provided)
    tally["deletes done"] += sum(code == 0 for code, _ in deletes)
    tally["deletes in use"] += sum(code == 6 for code, _ in deletes)
    tally["deletes not found"] += sum(code == 4 for code, _ in deletes)
    failures = [("provision", code, err) for code, err in provided if code != 0] + \
               [("delete_image", code, err) for code, err in deletes if code != 0]
    bad = [f for f in failures if not one_line_of_a_kind(f[0], image, f[1], f[2])]
    problems = ["failures that are not one line of a named kind: %r" % bad] if bad else []
    try:
        check_gone_or_whole(gateways, ceph, image, round_, provided, deletes, tally)
    except AssertionError as err:
        problems.append("and then: %s" % err)
    assert problems == [], "; ".join(problems)


def check_gone_or_whole(gateways, ceph, image, round_, provided, deletes, tally):

    nodes = sorted(n["node"] for n in gateways.listing("gw-a")["nodes"] if n["image"] == image)
    assert nodes == sorted("r%d-%d" % (round_, i) for i, (code, _) in enumerate(provided) if code == 0)
    assert sum(code == 0 for code, _ in deletes) <= 1
    if any(code == 0 for code, _ in deletes):   # gone: for good, everywhere
        tally["gone"] += 1
        assert nodes == []
        assert image not in images(gateways, "gw-a") and image not in images(gateways, "gw-b")
    else:   # whole: listed, provisionable, its nodes detachable, then deletable
        tally["whole"] += 1
        assert image in images(gateways, "gw-a") and image in images(gateways, "gw-b")
        assert snapshots(ceph, "golden/" + image) == [("user", "base")]
        done = gateways.client("gw-b", "provision", image, "check-%d" % round_)
        assert done.returncode == 0, "provision after the race: %s" % done.stderr
        for node in nodes + ["check-%d" % round_]:
            done = gateways.client("gw-a", "detach_node", node)
            assert done.returncode == 0, done.stderr
        done = gateways.client("gw-a", "delete_image", image)
        assert done.returncode == 0, "delete_image after the race: %s" % done.stderr
        assert image not in images(gateways, "gw-a") and image not in images(gateways, "gw-b")
    assert "golden/" + image not in rbd_images(ceph)
    assert [i for i in rbd_images(ceph) if i.startswith("node.")] == []
    assert trash(ceph) == []


def test_delete_image_racing_provisions_through_another_gateway(gateways, settings, tmp_path):
    ceph = settings.environment()
    make_image_file(tmp_path / "golden.raw", MiB)
    tally = dict.fromkeys(["gone", "whole", "provisions ok", "provisions not found", "deletes done",
                           "deletes in use", "deletes not found"], 0)
    broken = []
    for round_ in range(ROUNDS):
        try:
            race(gateways, ceph, str(tmp_path / "golden.raw"), round_, tally)
        except AssertionError as err:
            broken.append("round %d: %s" % (round_, " ".join(str(err).split())[:400]))
            for node in gateways.listing("gw-a")["nodes"]:   # the next round starts with no node
                gateways.client("gw-a", "detach_node", "--force", node["node"])
    print("\nimage races, %d rounds of %d provisions: %s; %d rounds broken" % (ROUNDS, PROVISIONS, tally, len(broken)))
    for line in broken:
        print("  " + line)
    assert broken == []
    assert tally["provisions ok"] + tally["provisions not found"] == ROUNDS * PROVISIONS
