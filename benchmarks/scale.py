"""Records at scale (rbd; part of benchmarks/bench.py, --figures scale): a real gateway (main
server and tgtd) among 20, with 10,000 ready nodes' records in RADOS, 2 paths each, none of them
placed on it, so that its tgtd holds nothing and what it costs is the records' alone. The 19
others are records only, each alive to Ceph by a watch of its own on the changes
(scripts/records/rados watch, kept up by this benchmark), so the gateway counts 20 live gateways
and places as it would among them. Measured, once the gateway has taken the 10,000 in (a boot
script each): its CPU (the main server and the helpers it runs) over one BMI_RESCAN_SECONDS (so that
one full re-read of the records falls in it, as one does in every such span), as a share of one
core, with the defaults of BMI_TGT_CHECK_SECONDS and BMI_RESCAN_SECONDS; and `mainclient.py --json
list_all_images` through it, median of LISTS runs."""
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import config
from bmi import runner
from bmi.nodes import READY, GatewayRecord, NodeRecord
from bmi.placement import placed
from config import ROOT
from testkit.daemons import Tgtd, free_port, wait_until
from testkit.service import Service

NODES = 10000
GATEWAYS = 20
PATHS = 2
LISTS = 5
MEASURED = "gw-00"
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {   # name: (figure, limit): at most
    "idle_core_share": ("an idle gateway with 10,000 records: share of a core", 0.02),
    "list_seconds": ("list_all_images with 10,000 nodes, s", 1.5),
}


def run(cluster_settings, workdir):
    tgtd = Tgtd(os.path.join(workdir, "tgtd.log"))
    tgtd.start()
    settings = config.Settings(BMI_STATE_DIR=os.path.join(workdir, "state"), BMI_BACKEND="rbd",
                               BMI_KEY_FILE=os.path.join(workdir, "hmac.key"), BMI_GATEWAY=MEASURED,
                               BMI_TGT_CONTROL_PORT=tgtd.control, BMI_ISCSI_PORTAL=tgtd.portal,
                               BMI_NS_PORT=free_port(), BMI_SERVER_PORT=free_port(), BMI_METRICS_PORT=0,
                               **cluster_settings)
    others = ["gw-%02d" % i for i in range(1, GATEWAYS)]
    writer = runner.Helper("records", "rados", config.Settings(**dict(settings.environment(), BMI_GATEWAY="writer")))
    watches = Watches(settings, others)
    service = Service(settings, workdir)
    nodes = []
    try:
        for name, watcher in watches.watchers.items():
            writer.request(op="put", key="gateway." + name, text=GatewayRecord(
                name, "127.0.0.1:1", "127.0.0.1:1", None, watcher).to_json())
        service.start()
        started = time.monotonic()
        nodes = unplaced_here([MEASURED] + others, NODES)
        for node in nodes:
            writer.request(op="create", key="node." + node, text=NodeRecord(
                node=node, image="golden", iqn="%s:%s" % (settings.BMI_IQN_PREFIX, node), chap_user=node,
                chap_secret="secret-of-" + node, state=READY, paths=placed(node, [MEASURED] + others, PATHS)).to_json())
        written = time.monotonic() - started
        boot_dir = os.path.join(settings.BMI_STATE_DIR, "boot")
        wait_until(lambda: len(os.listdir(boot_dir)) >= NODES, 600, "the gateway's boot script of every node")
        taken_in = time.monotonic() - started
        time.sleep(2 * settings.BMI_TGT_CHECK_SECONDS)   # the pushes' work done: idle from here on
        idle = idle_share(service.mainserver.pid, settings.BMI_RESCAN_SECONDS)
        lists = [listing_seconds(settings) for _ in range(LISTS)]
        one_node = [listing_seconds(settings, "--node", nodes[0]) for _ in range(LISTS)]
        assert tgtd.targets() == {}, "the measured gateway exports nodes: not the records' cost alone"
        answered = [listing["seconds"] for listing in lists if "failed" not in listing]
        return {"nodes": NODES, "gateways": GATEWAYS, "written_seconds": written, "taken_in_seconds": taken_in,
                "check_seconds": settings.BMI_TGT_CHECK_SECONDS, "rescan_seconds": settings.BMI_RESCAN_SECONDS,
                "idle_core_share": idle,
                "list_seconds": statistics.median(answered) if answered else None, "lists": lists,
                "node_list_seconds": statistics.median(listing["seconds"] for listing in one_node)}
    finally:
        for node in nodes:   # before the service stops: no detach of 10,000 nodes without disks
            writer.request(op="remove", key="node." + node, version=0)
        service.stop()
        watches.close()
        for name in others:
            writer.request(op="remove", key="gateway." + name, version=0)
        writer.close()
        tgtd.stop()


def unplaced_here(gateways, count):
    """count node names whose placement over gateways leaves out the measured one."""
    names, i = [], 0
    while len(names) < count:
        name = "node-%05d" % i
        if MEASURED not in placed(name, gateways, PATHS):
            names.append(name)
        i += 1
    return names


class Watches:
    """A watch on the changes for each of names, as their main servers would keep (bmi/changes.py):
    the helper, and a heartbeat line every second."""

    def __init__(self, settings, names):
        self._procs, self.watchers = [], {}
        for name in names:
            script = runner.Script("records", "rados", config.Settings(**dict(settings.environment(), BMI_GATEWAY=name)))
            proc = subprocess.Popen([script.path, "watch"], env=script.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._procs.append(proc)
            self.watchers[name] = json.loads(proc.stdout.readline())["watcher"]
            threading.Thread(target=proc.stdout.read, daemon=True).start()   # the announcements: not needed
        self._stop = threading.Event()
        threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self):
        while not self._stop.wait(1):
            for proc in self._procs:
                proc.stdin.write(b"\n")
                proc.stdin.flush()

    def close(self):
        self._stop.set()
        for proc in self._procs:
            proc.stdin.close()   # the end of its stdin ends the watch
            proc.wait(30)


def idle_share(pid, seconds):
    """The share of a core the process and its children (the helpers) use over seconds."""
    def cpu():
        total = 0
        for process in [pid] + children(pid):
            try:
                with open("/proc/%d/stat" % process) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])   # utime + stime
            except FileNotFoundError:   # ended meanwhile
                pass
        return total / TICKS
    before, started = cpu(), time.monotonic()
    time.sleep(seconds)   # measuring idle: nothing to poll for
    return (cpu() - before) / (time.monotonic() - started)


def children(pid):
    found = []
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, task)) as f:
            found += [int(child) for child in f.read().split()]
    return found


def listing_seconds(settings, *filters):
    """mainclient --json list_all_images [filters]: its seconds (and what it said, if it failed)."""
    env = dict(os.environ, **settings.environment())
    started = time.monotonic()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "mainclient.py"), "--json", "list_all_images", *filters],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    if done.returncode != 0:   # a figure too: what the client said
        return {"seconds": seconds, "failed": done.stderr.strip()}
    assert len(json.loads(done.stdout)["nodes"]) == (1 if filters else NODES)
    return {"seconds": seconds}


def lines(f):
    found = ["scale (rbd): %d node records on %d gateways written in %.1f s, taken in by the gateway in %.1f s; "
             "idle over %g s (rounds every %g s, a full one among them) %.1f%% of a core; list_all_images %s s" % (
                 f["nodes"], f["gateways"], f["written_seconds"], f["taken_in_seconds"], f["rescan_seconds"],
                 f["check_seconds"],
                 f["idle_core_share"] * 100, " ".join("%.2f" % listing["seconds"] + (" (failed: %s)" % listing["failed"]
                                                                      if "failed" in listing else "")
                                                      for listing in f["lists"]))
             + "; list_all_images --node (one of them) %.2f s" % f["node_list_seconds"]]
    found += ["scale: %-52s %s  at most %g" % (label, "failed" if f[key] is None else "%6.3f%s" % (
                  f[key], "" if f[key] <= limit else "  (missed)"), limit) for key, (label, limit) in TARGETS.items()]
    return found
