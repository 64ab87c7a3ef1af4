"""A fleet of gateways (rbd; part of benchmarks/bench.py, --figures fleet, not run by default): four
real gateways (each a main server with its own tgtd, on one Ceph cluster and one name server), with
the production defaults of BMI_TGT_CHECK_SECONDS, BMI_RESCAN_SECONDS and BMI_PEER_TIMEOUT, and NODES
idle nodes provisioned through all four at once, each placed on BMI_PATHS=2 of them (bmi/placement.py).
Measured:

- the LUNs each tgtd holds once every node is exported exactly where it is placed;
- one gateway killed (its main server SIGKILLed, its tgtd killed: its host dies): the seconds from the
  kill until every node is exported by two live gateways, the three survivors' tgtds looked at every
  SAMPLE_SECONDS; and when Ceph dropped the dead gateway's watch (its liveness, bmi/changes.py);
- the gateway back (its tgtd and main server started again): the paths moved on the tgtds between
  the three-gateway state and the four-gateway one (a path: a node's target at a gateway; a path moved:
  one taken away at a gateway and one made at another), against the fewest possible, the nodes that
  rendezvous placement over four gives the returning gateway. Whether a target an initiator is logged
  in through goes before another is in place is not measured here: no initiator logs in;
- provision latency through one gateway with four gateways against with one alone (median of
  REPEAT, each detached again: benchmarks/gateways.py's provision_latency);
- the floor of the replacement: the scripts alone (floor_phase), after the gateways are stopped.
"""
import collections
import datetime
import os
import re
import statistics
import threading
import time

import config
from benchmarks.gateways import provision_latency, proxy_to
from bmi import pyrosetup, runner, target
from bmi.placement import placed
from bmi.records import RadosRecords
from bmi.storage import Storage
from testkit.daemons import Tgtd, free_port, wait_until
from testkit.gateways import GatewayGroup
from testkit.images import MiB, make_image_file
from testkit.service import variant

NODES = 400
GATEWAYS = ["gw-a", "gw-b", "gw-c", "gw-d"]
KILLED = "gw-d"
PATHS = 2
CLIENTS_EACH = 2            # concurrent provisions through each gateway
REPEAT = 20                 # provisions of the latency figures
SAMPLE_SECONDS = 0.2        # how often the tgtds' targets are looked at while paths move
CALL_TIMEOUT = 180          # seconds one provision or detach may take here
FLOOR_HELD = 130            # LUNs each survivor's tgtd holds before the kill, about (floor_phase)
FLOOR_MADE = 70             # and the replacement targets each of them makes, about
TARGETS = {   # name: (figure, limit: at most; a function of the figures where it depends on them)
    "max_luns_per_tgtd": ("idle nodes on 4 gateways: most LUNs in one tgtd",
                          lambda f: 1.1 * f["nodes"] * PATHS / len(GATEWAYS)),
    "replaced_seconds": ("a gateway killed: s until every node has 2 live paths", lambda f: 10.0),
    "moved_vs_fewest": ("it comes back: paths moved / the fewest possible", lambda f: 1.2),
    "four_vs_one": ("provision with 4 gateways / with 1", lambda f: 1.3),
}


def run(cluster_settings, workdir, nodes=NODES):
    """The figures; a phase that fails is named in figures["failed"], with the figures up to it."""
    settings = config.Settings(**dict(cluster_settings, BMI_BACKEND="rbd", BMI_NS_PORT=free_port(),
                                      BMI_METRICS_PORT=0, BMI_KEY_FILE=os.path.join(workdir, "hmac.key")))
    figures = {"nodes": nodes, "gateways": len(GATEWAYS), "paths": PATHS, "killed": KILLED,
               "check_seconds": settings.BMI_TGT_CHECK_SECONDS, "rescan_seconds": settings.BMI_RESCAN_SECONDS,
               "peer_timeout": settings.BMI_PEER_TIMEOUT, "sample_seconds": SAMPLE_SECONDS, "phases_s": {}}
    names = ["idle-%03d" % i for i in range(nodes)]
    group = GatewayGroup(settings, workdir)
    observer = None
    phase, began = "start", time.monotonic()

    def done(name):
        nonlocal phase, began
        figures["phases_s"][phase] = time.monotonic() - began
        phase, began = name, time.monotonic()

    try:
        group.start_all(GATEWAYS[0])
        pyrosetup.configure(settings)
        make_image_file(os.path.join(workdir, "golden.raw"), 16 * MiB)
        imported = group.client(GATEWAYS[0], "import_image", "golden", os.path.join(workdir, "golden.raw"))
        assert imported.returncode == 0, imported.stderr
        done("latency, one gateway")
        figures["provision_one_gateway_s"] = provision_latency(settings, GATEWAYS[0], REPEAT)

        done("three gateways more")
        for name in GATEWAYS[1:]:
            group.add(name)
            group.start(name)
        wait_until(lambda: all(up(group, name) == set(GATEWAYS) for name in GATEWAYS), 120,
                   "every gateway counts the four alive")
        done("latency, four gateways")
        figures["provision_four_gateways_s"] = provision_latency(settings, GATEWAYS[0], REPEAT)
        figures["four_vs_one"] = figures["provision_four_gateways_s"] / figures["provision_one_gateway_s"]

        done("provision")
        figures["provision"] = provision_spread(settings, GATEWAYS, names, CLIENTS_EACH)
        done("exported where placed")
        figures["placed_s"] = waited(lambda: group.placed_over(GATEWAYS, names), 600,
                                     "every node exported by its two placed gateways")
        luns = {name: lun_count(group, name) for name in GATEWAYS}
        figures["luns"] = luns
        figures["max_luns_per_tgtd"] = max(luns.values())
        figures["mean_luns_per_tgtd"] = statistics.mean(luns.values())
        figures["tgtd"] = {name: process_status(group.tgtds[name].proc.pid) for name in GATEWAYS}

        done("one gateway killed")
        observer = RadosRecords(runner.Helper("records", "rados", variant(settings, BMI_GATEWAY="fleet-observer")))
        figures["killed_phase"] = kill_phase(group, names, observer)
        figures["replaced_seconds"] = figures["killed_phase"]["two_live_paths_s"]

        done("it comes back")
        figures["back_phase"] = back_phase(group, names)
        figures["moved_vs_fewest"] = figures["back_phase"]["moved_observed"] / figures["back_phase"]["fewest"]

        done("latency, four gateways with the nodes")
        figures["provision_four_gateways_with_nodes_s"] = provision_latency(settings, GATEWAYS[0], REPEAT)
    except Exception as err:   # the figures so far stand; the failure is one of them
        figures["failed"] = "%s: %s: %s" % (phase, type(err).__name__, err)
    finally:
        done("stop")
        try:
            if observer is not None:
                observer.close()
            detach_spread(settings, [name for name in GATEWAYS if running(group, name)])
        except Exception as err:
            figures.setdefault("failed", "detaching: %s: %s" % (type(err).__name__, err))
        figures["logs"] = log_problems(workdir, GATEWAYS)
        group.stop()
        done("floor")
        try:
            figures["floor_s"] = floor_phase(settings, os.path.join(workdir, "floor"))
            if "replaced_seconds" in figures:
                figures["replaced_vs_floor"] = figures["replaced_seconds"] / figures["floor_s"]
        except Exception as err:
            figures.setdefault("failed", "floor: %s: %s" % (type(err).__name__, err))
        done("end")
    return figures


def floor_phase(settings, workdir, survivors=len(GATEWAYS) - 1, held=FLOOR_HELD, made=FLOOR_MADE):
    """The replacement's floor, the scripts alone: survivors fresh tgtds, each holding held LUNs of
    node disks (cloned by the storage script, as a provision does), each made to export made more by
    scripts/target/tgt, one at a time at each tgtd and all of them at once, as the survivors do; the
    seconds from the first create to the last one's end."""
    os.makedirs(workdir)
    storage = Storage(settings)
    make_image_file(os.path.join(workdir, "golden.raw"), 16 * MiB)
    storage.import_image("floor-golden", os.path.join(workdir, "golden.raw"))
    tgtds = [Tgtd(os.path.join(workdir, "tgtd-%d.log" % i)) for i in range(survivors)]
    try:
        for tgtd in tgtds:
            tgtd.start()
        scripts = [runner.Script("target", "tgt", variant(settings, BMI_TGT_CONTROL_PORT=str(tgtd.control)))
                   for tgtd in tgtds]

        def exports(i, numbers):
            """The creates of tgtd i's targets of numbers, their disks cloned now."""
            return [create(i, n, storage.clone("floor-golden", "floor-%d-%03d" % (i, n))) for n in numbers]

        def create(i, n, backing):
            node = "floor-%d-%03d" % (i, n)
            iqn = settings.BMI_IQN_PREFIX + ":" + node
            return lambda: scripts[i]("create", str(n + 1), iqn, str(target.LUN), target.serial(iqn), backing.bstype,
                                      backing.path, backing.bsopts, node, "floor-secret-" + node)

        def at_once(work):
            threads = [threading.Thread(target=lambda steps: [step() for step in steps], args=(steps,))
                       for steps in work]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        at_once([exports(i, range(held)) for i in range(survivors)])   # the LUNs held: in place
        creates = [exports(i, range(held, held + made)) for i in range(survivors)]   # their disks cloned first
        started = time.monotonic()
        at_once(creates)
        seconds = time.monotonic() - started
        if any(lun_count_of(tgtd) != held + made for tgtd in tgtds):
            raise RuntimeError("a floor tgtd does not hold %d LUNs" % (held + made))
        return seconds
    finally:
        for tgtd in tgtds:
            tgtd.stop()


def kill_phase(group, names, observer):
    """KILLED's host dies: the seconds, from the kill, until Ceph dropped its watch, until the first
    re-placement a survivor logged, until every node has two live paths (its targets at two of the
    survivors' tgtds), until each is exported exactly where placed over the survivors, boot scripts too."""
    survivors = [name for name in GATEWAYS if name != KILLED]
    expected = {(node, gateway) for node in names for gateway in placed(node, survivors, PATHS)}
    watcher = {g.name: g.watcher for g in observer.gateways()}[KILLED]
    sampler = Sampler(group, survivors, names, {
        "two_live_paths": lambda pairs, counts: all(counts[node] == PATHS for node in names),
        "placed": lambda pairs, counts: pairs == expected})
    before_placings = placings(group, survivors)
    sampler.start()
    wall, killed = time.time(), time.monotonic()
    group.kill(KILLED)
    gone = WatchGone(observer, watcher, killed)
    gone.start()
    try:
        wait_until(lambda: "placed" in sampler.met or sampler.failed, 180,
                   "every node exported where placed over the survivors")
        boot = waited(lambda: group.placed_over(survivors, names), 120, "boot scripts naming the survivors") \
            + time.monotonic() - killed
        wait_until(lambda: not gone.is_alive(), 60, "Ceph drops the watch of the killed gateway")
    finally:
        sampler.stop()
        gone.stop()
    if sampler.failed:
        raise sampler.failed
    return {"two_live_paths_s": sampler.met["two_live_paths"] - killed, "placed_s": sampler.met["placed"] - killed,
            "boot_scripts_s": boot, "watch_gone_s": gone.seconds, "watcher": watcher,
            "first_placing_logged_s": first_logged(group, survivors, "placing ", wall),
            "nodes_on_killed": len(names) - sum(1 for node in names if KILLED not in placed(node, GATEWAYS, PATHS)),
            "added": sampler.added, "removed": sampler.removed, "min_live_paths": min(sampler.lowest.values()),
            "samples": sampler.samples,
            "placings_logged": {name: n - before_placings.get(name, 0) for name, n in placings(group, survivors).items()}}


def back_phase(group, names):
    """KILLED back: its tgtd and main server started; the paths moved on the four tgtds from the
    three-gateway state to the four-gateway one, as seen every SAMPLE_SECONDS and from end to end,
    against the fewest possible."""
    expected = {(node, gateway) for node in names for gateway in placed(node, GATEWAYS, PATHS)}
    sampler = Sampler(group, GATEWAYS, names, {"placed": lambda pairs, counts: pairs == expected})
    before_placings = placings(group, GATEWAYS)
    sampler.start()
    wait_until(lambda: sampler.first is not None or sampler.failed, 30, "the first look at the tgtds")
    started = time.monotonic()
    try:
        start_again(group, KILLED)
        answering = time.monotonic() - started
        wait_until(lambda: "placed" in sampler.met or sampler.failed, 300,
                   "every node exported where placed over the four")
        boot = waited(lambda: group.placed_over(GATEWAYS, names), 120, "boot scripts naming the four") \
            + time.monotonic() - started
    finally:
        sampler.stop()
    if sampler.failed:
        raise sampler.failed
    fewest = sum(1 for node in names if KILLED in placed(node, GATEWAYS, PATHS))
    added, removed = sampler.last - sampler.first, sampler.first - sampler.last
    after_placings = placings(group, GATEWAYS)
    return {"answering_s": answering, "placed_s": sampler.met["placed"] - started, "boot_scripts_s": boot,
            "fewest": fewest, "added_end_to_end": len(added), "removed_end_to_end": len(removed),
            "added_not_on_returning": sum(1 for _, gateway in added if gateway != KILLED),
            "added_observed": sampler.added, "removed_observed": sampler.removed,
            "moved_end_to_end": (len(added) + len(removed)) / 2,
            "moved_observed": (sampler.added + sampler.removed) / 2,
            "nodes_below_two_paths": sum(1 for node in names if sampler.lowest[node] < PATHS),
            "longest_below_two_paths_s": sampler.longest_below,
            "min_live_paths": min(sampler.lowest.values()), "samples": sampler.samples,
            "placings_logged": {name: after_placings[name] - before_placings.get(name, 0) for name in GATEWAYS}}


class Sampler:
    """Every SAMPLE_SECONDS, the targets of the tgtds of gateways: the (node, gateway) pairs; the
    pairs made and taken away from one look to the next, each node's fewest paths, the longest a node
    had fewer than PATHS (from the first look that saw it so to the first that saw it whole again, or
    the last look), and the monotonic time at which each of conditions (pairs, {node: its paths})
    first held."""

    def __init__(self, group, gateways, names, conditions):
        self._group, self._gateways, self._names = group, gateways, set(names)
        self._conditions = conditions
        self.met, self.first, self.last, self.failed = {}, None, None, None
        self.added = self.removed = self.samples = 0
        self.lowest = {node: PATHS for node in names}
        self.longest_below = 0.0
        self._below = {}   # node: since when it has fewer than PATHS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(60)

    def _run(self):
        prefix = self._group.base.BMI_IQN_PREFIX + ":"
        try:
            while not self._stop.is_set():
                looked = time.monotonic()
                pairs = {(iqn[len(prefix):], gateway) for gateway in self._gateways
                         for iqn in self._group.exported(gateway) if iqn[len(prefix):] in self._names}
                counts = collections.Counter(node for node, _ in pairs)
                for node in self._names:
                    self.lowest[node] = min(self.lowest[node], counts[node])
                    if counts[node] < PATHS:
                        self._below.setdefault(node, looked)
                    elif node in self._below:
                        self.longest_below = max(self.longest_below, looked - self._below.pop(node))
                for since in self._below.values():
                    self.longest_below = max(self.longest_below, looked - since)
                if self.last is None:
                    self.first = pairs
                else:
                    self.added += len(pairs - self.last)
                    self.removed += len(self.last - pairs)
                self.last = pairs
                self.samples += 1
                for name, condition in self._conditions.items():
                    if name not in self.met and condition(pairs, counts):
                        self.met[name] = looked
                self._stop.wait(max(0.0, SAMPLE_SECONDS - (time.monotonic() - looked)))
        except Exception as err:
            self.failed = err


class WatchGone(threading.Thread):
    """The seconds from since until Ceph no longer lists watcher on the changes (rados listwatchers)."""

    def __init__(self, observer, watcher, since):
        super().__init__(daemon=True)
        self._observer, self._watcher, self._since = observer, watcher, since
        self._ended = threading.Event()
        self.seconds = None

    def run(self):
        while not self._ended.is_set():
            if self._watcher not in self._observer.watchers():
                self.seconds = time.monotonic() - self._since
                return
            self._ended.wait(SAMPLE_SECONDS)

    def stop(self):
        self._ended.set()
        self.join(60)


def start_again(group, name, timeout=300):
    """GatewayGroup.start(name), with longer to answer than its 60 s: a main server exports every node
    placed on it (bmi/exports.py, bring_in_line) before it serves, some 200 here, on a loaded machine."""
    if group.tgtds[name].proc.poll() is not None:
        group.tgtds[name].start()   # the same control port and portal again
    group.services[name].start_mainserver()
    wait_until(lambda: group.client(name, "ping").returncode == 0, timeout, "gateway %s answers" % name)


def up(group, name):
    """The gateways that gateway name lists as up."""
    return {g["name"] for g in group.listing(name)["gateways"] if g["up"]}


def running(group, name):
    service = group.services.get(name)
    return service is not None and service.mainserver is not None and service.mainserver.poll() is None


def waited(check, timeout, what):
    started = time.monotonic()
    wait_until(check, timeout, what)
    return time.monotonic() - started


def lun_count(group, name):
    """The LUNs of nodes' disks that gateway name's tgtd holds (not the targets' controller LUNs)."""
    return lun_count_of(group.tgtds[name])


def lun_count_of(tgtd):
    return sum(1 for exported in tgtd.exports().values() for backing in exported["luns"] if backing not in ("None", ""))


def process_status(pid):
    with open("/proc/%d/status" % pid) as f:
        status = dict(line.split(":", 1) for line in f)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"])}


def spread(settings, gateways, clients_each, items, act, timeout):
    """act(server, item) for each of items, by clients_each clients through each of gateways at once
    (server: a proxy of the client's gateway); [(item, gateway, error)] of those that raised, and
    the threads, each given timeout to end."""
    pending, lock, failures = list(items), threading.Lock(), []

    def work(gateway):
        with proxy_to(settings, gateway) as server:
            server._pyroTimeout = CALL_TIMEOUT
            while True:
                with lock:
                    if not pending:
                        return
                    item = pending.pop()
                try:
                    act(server, item)
                except Exception as err:
                    failures.append((item, gateway, "%s: %s" % (type(err).__name__, err)))

    threads = [threading.Thread(target=work, args=(gateway,), daemon=True)
               for gateway in gateways for _ in range(clients_each)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return failures, threads


def provision_spread(settings, gateways, nodes, clients_each):
    """Provision nodes through every one of gateways at once, clients_each clients through each; the
    wall time and the provisions that failed (each tried once more, alone, at the end)."""
    started = time.monotonic()
    failures, threads = spread(settings, gateways, clients_each, nodes,
                               lambda server, node: server.provision("golden", node),
                               CALL_TIMEOUT * (len(nodes) // (len(gateways) * clients_each) + 2))
    seconds = time.monotonic() - started
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError("provisions still under way after %.0f s" % seconds)
    still = []
    for node, gateway, _ in list(failures):
        with proxy_to(settings, gateway) as server:
            server._pyroTimeout = CALL_TIMEOUT
            try:
                server.detach_node(node, force=True)   # what is left of it, if anything
                server.provision("golden", node)
            except Exception as err:
                still.append("%s: %s" % (node, err))
    if still:
        raise RuntimeError("%d provisions failed twice, first: %s" % (len(still), still[0]))
    return {"seconds": seconds, "per_second": len(nodes) / seconds, "clients": len(threads),
            "failed_once": len(failures), "first_failure": failures[0][2] if failures else None}


def detach_spread(settings, gateways, clients_each=2):
    """Force-detach every node, through every one of gateways at once; what fails is left to
    GatewayGroup.stop, which detaches what is left."""
    if not gateways:
        return
    with proxy_to(settings, gateways[0]) as server:
        server._pyroTimeout = CALL_TIMEOUT
        nodes = [n["node"] for n in server.list_all_images()["nodes"]]
    spread(settings, gateways, clients_each, nodes, lambda server, node: server.detach_node(node, force=True), 600)


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (\w+) (.*)$")


def log_lines(group, name):
    try:
        with open(os.path.join(group.workdir, name, "mainserver.log"), errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def placings(group, gateways):
    """How many placements each of gateways logged so far (a record placed anew: bmi/exports.py)."""
    return {name: sum(1 for line in log_lines(group, name) if " INFO placing " in line) for name in gateways}


def first_logged(group, gateways, text, since):
    """The seconds from the wall-clock time since to the first line after it with text in one of the
    gateways' logs, or None."""
    found = []
    for name in gateways:
        for line in log_lines(group, name):
            match = LOG_LINE.match(line)
            if match and text in match.group(4):
                at = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= since:
                    found.append(at - since)
                    break
    return min(found) if found else None


def log_problems(workdir, gateways):
    """Each gateway's WARNING, ERROR and CRITICAL lines and tracebacks: their count, and the most
    common of them with node names and numbers made alike."""
    found = {}
    for name in gateways:
        path = os.path.join(workdir, name, "mainserver.log")
        if not os.path.exists(path):
            continue
        kinds = collections.Counter()
        counted = 0
        with open(path, errors="replace") as f:
            for line in f:
                match = LOG_LINE.match(line.rstrip("\n"))
                if match and match.group(3) in ("WARNING", "ERROR", "CRITICAL"):
                    message = re.sub(r"\d+", "N", re.sub(r"idle-\d+|lat-\d+", "NODE", match.group(4)))
                    kinds["%s %s" % (match.group(3), message[:200])] += 1
                    counted += 1
                elif line.startswith("Traceback"):
                    kinds["Traceback"] += 1
                    counted += 1
        found[name] = {"count": counted, "most_common": kinds.most_common(8)}
    return found


def lines(f):
    out = ["fleet (rbd): %d nodes on %d gateways, %d paths each; BMI_TGT_CHECK_SECONDS %g, BMI_RESCAN_SECONDS %g, "
           "BMI_PEER_TIMEOUT %g (the defaults); tgtds looked at every %g s" % (
               f["nodes"], f["gateways"], f["paths"], f["check_seconds"], f["rescan_seconds"], f["peer_timeout"],
               f["sample_seconds"])]
    if "provision" in f:
        p = f["provision"]
        out.append("fleet: %d nodes provisioned in %.1f s (%.1f/s) by %d clients through the %d gateways, "
                   "%d failed once%s" % (f["nodes"], p["seconds"], p["per_second"], p["clients"], f["gateways"],
                                         p["failed_once"], " (first: %s)" % p["first_failure"] if p["failed_once"] else ""))
    if "luns" in f:
        out.append("fleet: exported where placed %.1f s later; LUNs per tgtd %s (mean %.1f); tgtds %s" % (
            f["placed_s"], ", ".join("%s %d" % item for item in f["luns"].items()), f["mean_luns_per_tgtd"],
            ", ".join("%s %.0f MB %d threads" % (name, t["rss_mb"], t["threads"]) for name, t in f["tgtd"].items())))
    if "killed_phase" in f:
        k = f["killed_phase"]
        out.append("fleet: %s killed (%d nodes placed on it): Ceph dropped its watch after %s s, first re-placement "
                   "logged after %s s, every node on 2 live gateways after %.1f s, exported exactly where placed "
                   "over 3 after %.1f s (boot scripts too %.1f s); paths made %d, taken away %d; fewest live paths "
                   "of a node %d (%d looks); records placed anew %s" % (
                       f["killed"], k["nodes_on_killed"], _s(k["watch_gone_s"]), _s(k["first_placing_logged_s"]),
                       k["two_live_paths_s"], k["placed_s"], k["boot_scripts_s"], k["added"], k["removed"],
                       k["min_live_paths"], k["samples"],
                       ", ".join("%s %d" % item for item in k["placings_logged"].items())))
    if "back_phase" in f:
        b = f["back_phase"]
        below = ("%d nodes below %d paths meanwhile (fewest %d), one for %.1f s at the longest" % (
            b["nodes_below_two_paths"], PATHS, b["min_live_paths"], b["longest_below_two_paths_s"])
            if b["nodes_below_two_paths"] else "no node below %d paths meanwhile" % PATHS)
        out.append("fleet: %s back: answering after %.1f s, exported where placed over 4 after %.1f s (boot scripts "
                   "too %.1f s); paths made/taken away end to end %d/%d, as seen every %g s %d/%d: moved %.1f, "
                   "fewest %d; %s; records placed anew %s; logged-in initiators: not measured here" % (
                       f["killed"], b["answering_s"], b["placed_s"], b["boot_scripts_s"], b["added_end_to_end"],
                       b["removed_end_to_end"], f["sample_seconds"], b["added_observed"], b["removed_observed"],
                       b["moved_observed"], b["fewest"], below,
                       ", ".join("%s %d" % item for item in b["placings_logged"].items())))
    if "provision_four_gateways_s" in f:
        out.append("fleet: provision median %.1f ms with one gateway, %.1f ms with four%s" % (
            f["provision_one_gateway_s"] * 1e3, f["provision_four_gateways_s"] * 1e3,
            ", %.1f ms with four and %d nodes" % (f["provision_four_gateways_with_nodes_s"] * 1e3, f["nodes"])
            if "provision_four_gateways_with_nodes_s" in f else ""))
    if "floor_s" in f:
        out.append("fleet: the floor, the scripts alone: %d tgtds holding %d LUNs each make %d targets each, all at once, "
                   "in %.1f s%s" % (len(GATEWAYS) - 1, FLOOR_HELD, FLOOR_MADE, f["floor_s"],
                                    "; the replacement took %.2f times as long" % f["replaced_vs_floor"]
                                    if "replaced_vs_floor" in f else ""))
    if "phases_s" in f:
        out.append("fleet: phases, s: " + ", ".join("%s %.0f" % item for item in f["phases_s"].items()))
    for name, problems in f.get("logs", {}).items():
        if problems["count"]:
            out.append("fleet: %s's log: %d warnings and errors, most common: %s" % (
                name, problems["count"], "; ".join("%dx %s" % (n, text) for text, n in problems["most_common"][:3])))
    if "failed" in f:
        out.append("fleet: FAILED at %s" % f["failed"])
    for key, (label, limit) in TARGETS.items():
        limit = limit(f)
        value = f.get(key)
        out.append("fleet: %-52s %s  at most %g" % (label, "failed" if value is None else "%7.3f%s" % (
            value, "" if value <= limit else "  (missed)"), limit))
    return out


def _s(seconds):
    return "?" if seconds is None else "%.1f" % seconds
