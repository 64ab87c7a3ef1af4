"""Changes pushed, liveness from Ceph (bmi/changes.py), with real gateways (three, each with its own
tgtd, on one Ceph cluster): every change of a record is announced on the RADOS object "changes",
which every gateway watches, so each acts on another's change within a second, long before its
next full round; and the watch is each gateway's liveness: a main server that hangs loses it within
seconds, and the others count it dead without calling it."""
import os
import signal
import threading
import time

import pytest

from bmi import runner
from bmi.changes import Watch
from bmi.nodes import DETACHING, READY
from bmi.records import RadosRecords
from testkit.daemons import wait_until
from testkit.gateways import running_gateways
from testkit.service import variant

pytestmark = pytest.mark.parametrize("backend", ["rbd"], indirect=True)
EVERYONE = ["gw-a", "gw-b", "gw-c"]
NODES = ["node-%d" % i for i in range(8)]


def test_a_record_another_gateway_changed_is_acted_on_within_a_second(settings, tmp_path):
    """With the full rounds a minute apart, only the announcement can bring the change in: a node's
    record moved to detaching by a writer of no gateway's (as a gateway's detach does) is withdrawn
    at every gateway, and moved back to ready is exported again, each within a second."""
    with running_gateways(variant(settings, BMI_TGT_CHECK_SECONDS=60, BMI_RESCAN_SECONDS=60), tmp_path,
                          EVERYONE) as gateways:
        assert gateways.client("gw-a", "provision", "golden", "node-a").returncode == 0
        iqn = "%s:%s" % (settings.BMI_IQN_PREFIX, "node-a")
        placed_on = [name for name in EVERYONE if iqn in gateways.exported(name)]
        assert len(placed_on) == 2 and all(gateways.boot_portals(name, "node-a") for name in EVERYONE)

        writer = RadosRecords(runner.Helper("records", "rados", variant(gateways.settings("gw-a"),
                                                                        BMI_GATEWAY="writer")))
        writer.load()
        try:
            withdrawn = lambda: all(iqn not in gateways.exported(name) and not gateways.boot_portals(name, "node-a")
                                    for name in EVERYONE)
            started = time.monotonic()
            detaching = writer.move(writer.get("node-a"), DETACHING, gateway="writer")
            wait_until(withdrawn, 10, "node-a withdrawn at every gateway")
            seconds_withdrawn = time.monotonic() - started

            started = time.monotonic()
            writer.move(detaching, READY, gateway=None)
            wait_until(lambda: [name for name in EVERYONE if iqn in gateways.exported(name)] == placed_on
                       and all(gateways.boot_portals(name, "node-a") for name in EVERYONE),
                       10, "node-a exported again by its placed gateways")
            seconds_exported = time.monotonic() - started
        finally:
            writer.close()
        assert seconds_withdrawn < 1 and seconds_exported < 1, (seconds_withdrawn, seconds_exported)


def test_a_hung_gateway_is_found_dead_without_being_called(settings, tmp_path):
    """gw-b's main server stopped (SIGSTOP: it holds its connections and answers nothing): its watch
    ends within seconds, its nodes are placed on the others, and a provision or a listing through
    gw-a does not wait BMI_PEER_TIMEOUT for it. Let go on (SIGCONT), it watches again and takes its
    share back."""
    peer_timeout = 10
    with running_gateways(variant(settings, BMI_PEER_TIMEOUT=peer_timeout), tmp_path, EVERYONE) as gateways:
        for node in NODES:
            assert gateways.client("gw-a", "provision", "golden", node).returncode == 0
        assert gateways.placed_over(EVERYONE, NODES)

        hung = gateways.services["gw-b"].mainserver.pid
        os.kill(hung, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            wait_until(lambda: gateways.placed_over(["gw-a", "gw-c"], NODES), 15, "every node on gw-a and gw-c")
            replaced = time.monotonic() - stopped

            started = time.monotonic()
            done = gateways.client("gw-a", "provision", "golden", "node-new")
            provisioned = time.monotonic() - started
            assert done.returncode == 0, done.stderr
            started = time.monotonic()
            listing = gateways.listing("gw-a")
            listed = time.monotonic() - started
            assert {g["name"]: g["up"] for g in listing["gateways"]} == {"gw-a": True, "gw-b": False, "gw-c": True}
            assert "gw-b" not in {path for node in listing["nodes"] for path in node["paths"]}
        finally:
            os.kill(hung, signal.SIGCONT)
        assert replaced < 10 and provisioned < peer_timeout / 2 and listed < peer_timeout / 2, \
            (replaced, provisioned, listed)

        wait_until(lambda: gateways.placed_over(EVERYONE, NODES + ["node-new"]), 30,
                   "every node on its two gateways again, gw-b among them")


def test_a_killed_gateway_is_found_dead_at_once_not_after_cephs_watch_timeout(settings, tmp_path):
    """gw-b's main server killed (SIGKILL): its watch helper, which the server's death ends, ends the
    watch and says so, and the others place its nodes anew long before Ceph would have dropped the
    watch itself (after BMI_PEER_TIMEOUT, 60 s here)."""
    with running_gateways(variant(settings, BMI_PEER_TIMEOUT=60), tmp_path, EVERYONE) as gateways:
        for node in NODES:
            assert gateways.client("gw-a", "provision", "golden", node).returncode == 0
        assert gateways.placed_over(EVERYONE, NODES)
        gateways.kill("gw-b")
        wait_until(lambda: gateways.placed_over(["gw-a", "gw-c"], NODES), 30, "every node on gw-a and gw-c")
        listing = gateways.listing("gw-a")
        assert {g["name"]: g["up"] for g in listing["gateways"]} == {"gw-a": True, "gw-b": False, "gw-c": True}


def test_an_operation_announces_only_what_the_other_gateways_act_on(settings, tmp_path):
    """A provision with a MAC through gw-a announces its node once, when it is ready (the other
    gateways are asked to export it themselves while it is exporting; a node provisioning, a MAC's
    claim and an image's hold are no gateway's business); a detach announces it once, when it is
    gone. What another watcher of the changes is told, in order."""
    with running_gateways(settings, tmp_path, EVERYONE) as gateways:
        told, lock = [], threading.Lock()

        def note(keys):
            with lock:
                told.extend(keys)

        script = runner.Script("records", "rados", variant(gateways.settings("gw-a"), BMI_GATEWAY="observer"))
        observer = Watch(script, note, lambda watcher: None)
        observer.open()
        try:
            provisioned = gateways.client("gw-a", "provision", "golden", "node-a", "--mac", "52:54:00:00:00:0a")
            assert provisioned.returncode == 0, provisioned.stderr
            wait_until(lambda: told, 5, "the provision announced")
            assert gateways.client("gw-a", "detach_node", "node-a").returncode == 0
            wait_until(lambda: len(told) > 1, 5, "the detach announced")
            time.sleep(1)   # anything more would be announced within it (0.06-0.12 s, above)
        finally:
            observer.close()
        assert told == ["node.node-a", "node.node-a"]
        iqn = "%s:%s" % (settings.BMI_IQN_PREFIX, "node-a")
        assert all(iqn not in gateways.exported(name) for name in EVERYONE)
