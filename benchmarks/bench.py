"""bmi-rpc benchmark: RPC overhead, provision latency against its scripts, throughput, scaling,
client start-up and server memory, on the file and rbd backends; the data path and the boot of a
node. Prints a table, writes JSON.

    tools/benchmark [--backend file|rbd|both] [--out FILE] [--nodes 500] [--figures control,import]
    tools/benchmark --backend file --figures boot      # the boot of a node (benchmarks/boot.py)
    tools/benchmark --backend file --figures move      # moving a node to another image (benchmarks/move.py)
    tools/benchmark --figures placement                # placement at scale (benchmarks/placement.py)
    tools/benchmark --backend rbd --figures scale      # 10,000 records in RADOS (benchmarks/scale.py)
    tools/benchmark --backend rbd --figures fleet      # 4 gateways, 400 nodes, one killed (benchmarks/fleet.py)

It starts its own tgtd, Ceph cluster (rbd), name server and main server on loopback, as the tests
do, and stops them by process id.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import config
from bmi import pyrosetup
from benchmarks import boot, datapath, fleet, gateways, move, placement, scale
from config import ROOT
from mainserver import MainServer
from testkit.daemons import CephCluster, Tgtd, free_port
from testkit.daemons import rbd
from testkit.images import GiB, make_image_file, make_random_file
from testkit.service import Service, detach_every_node

TARGETS = {   # name: (figure, limit, what the issue asks)
    "provision_vs_scripts": ("server-side provision / scripts run directly", 1.10, "at most"),
    "noop_median_ms": ("no-op round trip median, ms", 1.0, "under"),
    "throughput_seconds": ("100 concurrent provisions, s", 5.0, "under"),
    "scaling_ratio": ("provision median at N nodes / at 0", 1.25, "at most"),
    "client_vs_import": ("mainclient wall time / python -c 'import Pyro4'", 1.5, "at most"),
    "server_peak_mb": ("main server peak resident memory, MB", 100.0, "under"),
    "import_vs_floor": ("import_image of 2 GiB random / its qemu-img convert alone", 1.15, "at most"),
    "two_gateways_vs_one": ("provision with two gateways / with one (rbd)", 1.5, "at most"),
    "file_seq_read": ("file: sequential read, iSCSI / direct, cold cache", 0.7, "at least"),
    "rbd_seq_read": ("rbd: sequential read, iSCSI / qemu's librbd", 0.85, "at least"),
    "rbd_rand_read_qd16": ("rbd: 4 KiB read at QD16, iSCSI / qemu's librbd", 0.6, "at least"),
    "rbd_idle_mb_per_node": ("rbd: tgtd's memory for an idle exported node, MB", 1.0, "at most"),
    "rbd_idle_threads_per_node": ("rbd: tgtd's threads for an idle exported node", 8, "at most"),
    "boot_bios_iscsi_vs_local": ("BIOS boot to the shell, iSCSI / local disk", 1.3, "at most"),
    "boot_uefi_iscsi_vs_local": ("UEFI boot to the shell, iSCSI / local disk", 1.3, "at most"),
    "boot_storm_16_vs_1": ("one boot's reads, 16 nodes at once / one alone", 1.5, "at most"),
    "move_control_share": ("moving a node: the control plane's share of the move", 0.10, "at most"),
}


def percentiles(samples):
    samples = sorted(samples)
    return {"median": statistics.median(samples), "p95": samples[int(0.95 * (len(samples) - 1))],
            "n": len(samples)}


def timed(function, repeat):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


class Bench:
    def __init__(self, backend, workdir, cluster, extra=None):
        """extra: more settings for the service (benchmarks/boot.py's boot network)."""
        self.workdir = workdir
        self.tgtd = Tgtd(os.path.join(workdir, "tgtd.log"))
        self.tgtd.start()
        values = {"BMI_STATE_DIR": os.path.join(workdir, "state"), "BMI_BACKEND": backend,
                  "BMI_KEY_FILE": os.path.join(workdir, "hmac.key"),
                  "BMI_TGT_CONTROL_PORT": self.tgtd.control, "BMI_ISCSI_PORTAL": self.tgtd.portal,
                  "BMI_NS_PORT": free_port(), "BMI_SERVER_PORT": free_port()}
        if cluster:
            values.update(cluster.settings)
        values.update(extra or {})
        self.settings = config.Settings(**values)
        self.service = Service(self.settings, workdir)
        self.service.start()
        pyrosetup.configure(self.settings)
        with pyrosetup.locate_ns(self.settings) as ns:
            self.uri = pyrosetup.gateways(ns, self.settings.BMI_OBJECT_NAME)[self.settings.BMI_GATEWAY]
        self.proxy = pyrosetup.proxy(self.uri)
        image = os.path.join(workdir, "golden.raw")
        make_image_file(image, 16 * 1024 * 1024)
        self.proxy.import_image("golden", image)

    def stop(self):
        self.proxy._pyroRelease()
        detach_every_node(self.service)
        self.service.stop()
        self.tgtd.stop()

    def service_nodes(self):
        return [n["node"] for n in self.proxy.list_all_images()["nodes"]]

    def audit_seconds(self, operation, since):
        """Server-side durations of operation, from the audit log lines after byte offset since."""
        with open(self.settings.BMI_AUDIT_LOG) as f:
            f.seek(since)
            lines = [json.loads(line) for line in f]
        return [line["seconds"] for line in lines if line["operation"] == operation and line["outcome"] == "ok"]

    def rpc_overhead(self, repeat=2000):
        local = MainServer.ping.__get__(object())   # the method itself, without a server behind it
        return {"in_process": percentiles(timed(local, repeat)),
                "round_trip": percentiles(timed(self.proxy.ping, repeat))}

    def provision_latency(self, repeat=30):
        """Through the server and by the scripts alone, in turns, so that both see the same machine."""
        since = os.path.getsize(self.settings.BMI_AUDIT_LOG)
        client, scripts = [], []
        for i in range(repeat):
            started = time.perf_counter()
            self.proxy.provision("golden", "lat-%d" % i)
            client.append(time.perf_counter() - started)
            self.proxy.detach_node("lat-%d" % i)
            scripts.append(self.scripts_directly(i))
            self.scripts_undo(i)
        return {"client": percentiles(client), "server": percentiles(self.audit_seconds("provision", since)),
                "scripts": percentiles(scripts)}

    def import_throughput(self, size=2 * GiB, pairs=5):
        """import_image of size bytes of random data against the floor, the same qemu-img convert
        run alone into the same store, in turns; each from a clean page cache (sync), each on disk
        when it ends."""
        source = os.path.join(self.workdir, "random.raw")
        make_random_file(source, size)
        service, floor = [], []
        for i in range(pairs):
            os.sync()
            started = time.perf_counter()
            self.proxy.import_image("import-%d" % i, source)
            service.append(time.perf_counter() - started)
            self.proxy.delete_image("import-%d" % i)
            os.sync()
            started = time.perf_counter()
            subprocess.run(["qemu-img", "convert", "-p", "-t", "writeback", "-f", "raw", "-O", "raw", source,
                            self.floor_target()], check=True, capture_output=True)
            floor.append(time.perf_counter() - started)
            self.remove_floor_target()
        os.unlink(source)
        return {"bytes": size, "service": percentiles(service), "floor": percentiles(floor),
                "ratios": percentiles([a / b for a, b in zip(service, floor)])}

    def floor_target(self):
        settings = self.settings
        if settings.BMI_BACKEND == "file":
            return os.path.join(settings.BMI_STATE_DIR, "images", ".floor.partial")
        return "rbd:%s/golden/_floor:id=%s:conf=%s" % (settings.BMI_CEPH_POOL, settings.BMI_CEPH_ID, settings.BMI_CEPH_CONF)

    def remove_floor_target(self):
        if self.settings.BMI_BACKEND == "file":
            os.unlink(self.floor_target())
        else:
            rbd(self.settings.environment(), "rm", "--no-progress", self.settings.BMI_CEPH_POOL + "/golden/_floor")

    def scripts_directly(self, i):
        """The floor: the provision's two scripts run by hand, with what tgtd needs; its seconds."""
        node = "floor-%d" % i
        started = time.perf_counter()
        backing = self.script("storage", "clone", "golden", node).rstrip("\n").split("\t")
        self.script("target", "create", str(9000 + i), "iqn.2026-11.bench:" + node, backing[0], backing[1],
                    backing[2] if len(backing) > 2 else "", node, "benchsecret12")
        return time.perf_counter() - started

    def scripts_undo(self, i):
        self.script("target", "delete", str(9000 + i), "floor-%d" % i, "--force")
        self.script("storage", "remove", "floor-%d" % i)

    def script(self, kind, *args):
        name = self.settings.BMI_BACKEND if kind == "storage" else "tgt"
        return subprocess.run([os.path.join(ROOT, "scripts", kind, name), *args], check=True, text=True,
                              capture_output=True, env=dict(os.environ, **self.settings.environment())).stdout

    def scripts_concurrently(self, count):
        """The floor of the throughput figure: count provisions' scripts, all at once, by hand."""
        seconds = run_together([lambda i=i: self.scripts_directly(i) for i in range(count)])
        run_together([lambda i=i: self.scripts_undo(i) for i in range(count)])
        return seconds

    def provision_many(self, nodes, clients):
        """Provision nodes with `clients` concurrent proxies; return the wall time."""
        pending = list(nodes)
        lock = threading.Lock()
        failures = []

        def work():
            with pyrosetup.proxy(self.uri) as proxy:
                while True:
                    with lock:
                        if not pending:
                            return
                        node = pending.pop()
                    try:
                        proxy.provision("golden", node)
                    except Exception as err:
                        failures.append("%s: %s" % (node, err))

        seconds = run_together([work] * clients)
        if failures:
            raise RuntimeError("%d provisions failed, first: %s" % (len(failures), failures[0]))
        return seconds

    def throughput(self, count=100):
        seconds = self.provision_many(["tp-%d" % i for i in range(count)], count)
        return {"nodes": count, "seconds": seconds, "per_second": count / seconds,
                "scripts_seconds": self.scripts_concurrently(count)}

    def scaling(self, sizes, repeat=20):
        result = {}
        existing = len(self.service_nodes())
        for size in sizes:
            if size > existing:
                self.provision_many(["scale-%d" % i for i in range(existing, size)], 8)
                existing = size
            since = os.path.getsize(self.settings.BMI_AUDIT_LOG)
            for i in range(repeat):
                self.proxy.provision("golden", "probe-%d" % i)
                self.proxy.detach_node("probe-%d" % i)
            result[str(size)] = percentiles(self.audit_seconds("provision", since))
            # the same work by the scripts alone: how much of any growth is tgtd's and Ceph's own
            floor = []
            for i in range(10):
                floor.append(self.scripts_directly(i))
                self.scripts_undo(i)
            result[str(size)]["scripts_median"] = statistics.median(floor)
            # listing the images must not grow with the nodes either
            result[str(size)]["list_median"] = statistics.median(timed(self.proxy.list_all_images, 10))
        return result

    def detach_all(self):
        nodes = self.service_nodes()

        def detach(chunk):
            with pyrosetup.proxy(self.uri) as proxy:
                for node in chunk:
                    proxy.detach_node(node, force=True)

        run_together([lambda i=i: detach(nodes[i::8]) for i in range(8)])

    def server_memory_mb(self):
        """(now, peak) resident memory of the main server process."""
        with open("/proc/%d/status" % self.service.mainserver.pid) as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def client_wall_time(self, repeat=20):
        client = [sys.executable, os.path.join(ROOT, "mainclient.py"), "list_all_images"]
        env = dict(os.environ, **self.settings.environment())
        run = lambda argv: subprocess.run(argv, env=env, check=True, capture_output=True)  # noqa: E731
        return {"mainclient_list": percentiles(timed(lambda: run(client), repeat)),
                "mainclient_ping": percentiles(timed(lambda: run(client[:2] + ["ping"]), repeat)),
                "import_pyro4": percentiles(timed(lambda: run([sys.executable, "-c", "import Pyro4"]), repeat))}


def run_together(jobs):
    """Run every job in a thread of its own at once; return the wall time."""
    threads = [threading.Thread(target=job) for job in jobs]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def run_backend(backend, nodes, workdir, cluster, groups):
    figures = {}
    if groups & {"control", "import", "datapath"}:
        figures = run_bench(backend, nodes, workdir, cluster, groups)
    if "boot" in groups:   # a Bench of its own, on the boot network's settings
        boot_dir = os.path.join(workdir, "boot")
        os.makedirs(boot_dir)
        figures["boot"] = boot.run(lambda extra: Bench(backend, boot_dir, cluster, extra), boot_dir)
    if "move" in groups:   # so too
        move_dir = os.path.join(workdir, "move")
        os.makedirs(move_dir)
        figures["move"] = move.run(lambda extra: Bench(backend, move_dir, cluster, extra), move_dir)
    return figures


def run_bench(backend, nodes, workdir, cluster, groups):
    bench = Bench(backend, workdir, cluster)
    figures = {}
    try:
        if "control" in groups:
            figures = {"rpc": bench.rpc_overhead(), "provision": bench.provision_latency(),
                       "client": bench.client_wall_time()}
            figures["throughput"] = bench.throughput()
            figures["memory_after_throughput_mb"] = bench.server_memory_mb()[0]
            bench.detach_all()
            figures["scaling"] = bench.scaling([0, 100, nodes])
            figures["memory_mb"], figures["peak_memory_mb"] = bench.server_memory_mb()
            bench.detach_all()
        if "import" in groups:
            figures["import"] = bench.import_throughput()
        if "datapath" in groups:
            figures["datapath"] = datapath.run(bench, workdir)
    finally:
        bench.stop()
    return figures


def verdicts(figures, nodes, backend):
    ratio = lambda a, b: a / b  # noqa: E731
    found = {}
    if "provision" in figures:
        found.update({
            "provision_vs_scripts": ratio(figures["provision"]["server"]["median"], figures["provision"]["scripts"]["median"]),
            "noop_median_ms": figures["rpc"]["round_trip"]["median"] * 1000,
            "throughput_seconds": figures["throughput"]["seconds"],
            "scaling_ratio": ratio(figures["scaling"][str(nodes)]["median"], figures["scaling"]["0"]["median"]),
            "client_vs_import": ratio(figures["client"]["mainclient_list"]["median"],
                                      figures["client"]["import_pyro4"]["median"]),
            "server_peak_mb": figures["peak_memory_mb"],
        })
    if "import" in figures:
        found["import_vs_floor"] = figures["import"]["ratios"]["median"]   # pair by pair: the machine drifts
    if "datapath" in figures:
        ratios = figures["datapath"]["ratios"]
        if backend == "file":
            found["file_seq_read"] = ratios["seq_read"]["ratio"]
        else:
            found.update({"rbd_seq_read": ratios["seq_read"]["ratio"],
                          "rbd_rand_read_qd16": ratios["rand_read_qd16"]["ratio"],
                          "rbd_idle_mb_per_node": figures["datapath"]["idle"]["mb_per_node"],
                          "rbd_idle_threads_per_node": figures["datapath"]["idle"]["threads_per_node"]})
    if "boot" in figures:
        found.update({"boot_bios_iscsi_vs_local": figures["boot"]["bios"]["ratio"],
                      "boot_uefi_iscsi_vs_local": figures["boot"]["uefi"]["ratio"],
                      "boot_storm_16_vs_1": figures["boot"]["storm"]["ratio"]})
    if "move" in figures:
        found["move_control_share"] = figures["move"]["control_share"]
    if "gateways" in figures:
        found["two_gateways_vs_one"] = ratio(figures["gateways"]["provision_two_gateways_s"],
                                             figures["gateways"]["provision_one_gateway_s"])
    return found


def table(results):
    lines = ["%-52s %10s %10s  %s" % ("figure", "file", "rbd", "target")]
    for key, (label, limit, how) in TARGETS.items():
        cells = ["%10.3f" % results[b]["verdicts"][key] if key in results.get(b, {}).get("verdicts", {})
                 else "%10s" % "-" for b in ("file", "rbd")]
        lines.append("%-52s %s %s  %s %g" % (label, cells[0], cells[1], how, limit))
    if "placement" in results:
        lines.extend(placement.lines(results["placement"]))
    if "scale" in results.get("rbd", {}).get("figures", {}):
        lines.extend(scale.lines(results["rbd"]["figures"]["scale"]))
    if "fleet" in results.get("rbd", {}).get("figures", {}):
        lines.extend(fleet.lines(results["rbd"]["figures"]["fleet"]))
    for backend in ("file", "rbd"):
        if backend not in results:
            continue
        f = results[backend]["figures"]
        if "datapath" in f:
            d = f["datapath"]
            lines.append("%s: through iSCSI / directly (speed; median of %d pairs): %s" % (
                backend, datapath.PAIRS, ", ".join("%s %.2f" % (name, r["ratio"]) for name, r in d["ratios"].items())))
            lines.append("%s: an idle exported node costs tgtd %.1f threads and %.2f MB; boot storm, s: %s" % (
                backend, d["idle"]["threads_per_node"], d["idle"]["mb_per_node"],
                ", ".join("%s at once %s" % (n, "%.1f" % t if t else "failed") for n, t in d["boot_storm"].items())))
        if "boot" in f:
            lines.extend(boot_lines(backend, f["boot"]))
        if "move" in f:
            lines.extend(move.lines(backend, f["move"]))
        if "gateways" in f:
            g = f["gateways"]
            lines.append("%s: provision median %.1f ms with one gateway, %.1f ms with two" % (
                backend, g["provision_one_gateway_s"] * 1e3, g["provision_two_gateways_s"] * 1e3))
            for label, tgtds in (("two gateways", g["idle_two_gateways"]), ("one gateway", g["idle_one_gateway"])):
                lines.append("%s: %d idle nodes, %s: %s" % (backend, g["nodes"], label, "; ".join(
                    "%s's tgtd %.1f%% of a core, %.0f MB, %d threads" % (name, u["core_share"] * 100, u["rss_mb"],
                                                                       u["threads"]) for name, u in tgtds.items())))
        if "import" in f:
            lines.append("%s: import_image of %d MiB of random data median %.2f s, its qemu-img convert alone %.2f s; "
                         "ratio pair by pair median %.2f, p95 %.2f"
                         % (backend, f["import"]["bytes"] >> 20, f["import"]["service"]["median"],
                            f["import"]["floor"]["median"], f["import"]["ratios"]["median"], f["import"]["ratios"]["p95"]))
        if "rpc" not in f:
            continue
        lines.append("")
        lines.append("%s: round trip median %.3f ms p95 %.3f ms, in-process %.4f ms" % (
            backend, f["rpc"]["round_trip"]["median"] * 1e3, f["rpc"]["round_trip"]["p95"] * 1e3,
            f["rpc"]["in_process"]["median"] * 1e3))
        lines.append("%s: provision median/p95 ms: client %.1f/%.1f, server %.1f/%.1f, scripts %.1f/%.1f" % (
            (backend,) + tuple(f["provision"][k][s] * 1e3 for k in ("client", "server", "scripts")
                               for s in ("median", "p95"))))
        lines.append("%s: 100 concurrent provisions in %.2f s (%.1f/s); their scripts alone, all at once, %.2f s" % (
            backend, f["throughput"]["seconds"], f["throughput"]["per_second"], f["throughput"]["scripts_seconds"]))
        lines.append("%s: provision median (its scripts alone; list_all_images) at %s" % (backend, ", ".join(
            "%s nodes %.1f ms (%.1f ms; %.1f ms)" % (n, p["median"] * 1e3, p["scripts_median"] * 1e3, p["list_median"] * 1e3)
            for n, p in f["scaling"].items())))
        lines.append("%s: mainclient list_all_images %.1f ms (ping %.1f ms), import Pyro4 %.1f ms; "
                     "server memory %.1f MB now, %.1f MB peak" % (
                         backend, f["client"]["mainclient_list"]["median"] * 1e3,
                         f["client"]["mainclient_ping"]["median"] * 1e3, f["client"]["import_pyro4"]["median"] * 1e3,
                         f["memory_mb"], f["peak_memory_mb"]))
    return "\n".join(lines)


def boot_lines(backend, b):
    lines = []
    for firmware in boot.FIRMWARES:
        d = b[firmware]
        lines.append("%s: %s power-on to shell, median of %d pairs: iSCSI %.1f s, local disk %.1f s; "
                     "iSCSI / local pair by pair %s, median %.2f" % (
                         backend, firmware.upper(), len(d["pairs"]), d["iscsi_s"], d["local_s"],
                         " ".join("%.2f" % p["ratio"] for p in d["pairs"]), d["ratio"]))
        lines.append("%s: %s iSCSI boot: %s" % (backend, firmware.upper(), ", ".join(
            "%s %.1f s (%.0f%%)" % (boot.LABELS[name], p["seconds"], p["share"] * 100)
            for name, p in d["iscsi_phases"].items())))
        lines.append("%s: %s local boot: %s" % (backend, firmware.upper(), ", ".join(
            "%s %.1f s (%.0f%%)" % (boot.LABELS[name], p["seconds"], p["share"] * 100)
            for name, p in d["local_phases"].items())))
    s = b["storm"]
    lines.append("%s: boot storm, one boot's %d reads (%.1f MiB) by qemu-io, medians: one node alone %.2f s, "
                 "%d at once %.2f s; ratio pair by pair median %.2f (log in and out alone %.3f s)" % (
                     backend, s["reads"], s["bytes"] / 2 ** 20, s["alone_seconds"], s["nodes"],
                     s["together_seconds"], s["ratio"], s["login_s"]))
    lines.append("%s: boot storm CPU seconds, tgtd and the initiators: alone %.2f and %.2f, %d at once %.2f and %.2f"
                 % (backend, s["alone_tgtd_cpu_s"], s["alone_initiators_cpu_s"], s["nodes"],
                    s["together_tgtd_cpu_s"], s["together_initiators_cpu_s"]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["file", "rbd", "both"], default="both")
    parser.add_argument("--nodes", type=int, default=500, help="largest number of nodes for the scaling figure")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.json"))
    parser.add_argument("--figures", default="control,import,gateways,datapath",
                        help="which groups of figures: control (RPC, provisions, scaling, memory), import, "
                             "gateways (rbd), datapath, boot (not by default: VMs under TCG, about 5 minutes a backend), "
                             "move (not by default either: a node moved 4 times, about 3 minutes a backend), "
                             "placement (no daemons: 10,000 nodes on 20 gateways), "
                             "scale (rbd: a gateway with 10,000 records in RADOS, idle and listing), "
                             "fleet (rbd, not by default: 4 gateways with 400 nodes, one killed and back; 3 to 7 minutes)")
    args = parser.parse_args()
    groups = set(args.figures.split(","))
    results = {}
    if "placement" in groups:   # of no backend: the rule every gateway computes
        results["placement"] = placement.run()
    backends = (["file", "rbd"] if args.backend == "both" else [args.backend]) if groups - {"placement"} else []
    with tempfile.TemporaryDirectory(prefix="bmi-bench-") as workdir:
        cluster = CephCluster(os.path.join(workdir, "ceph")) if "rbd" in backends else None
        try:
            for backend in backends:
                os.makedirs(os.path.join(workdir, backend))
                figures = run_backend(backend, args.nodes, os.path.join(workdir, backend), cluster, groups)
                if backend == "rbd" and "gateways" in groups:
                    os.makedirs(os.path.join(workdir, "gateways"))
                    figures["gateways"] = gateways.run(cluster.settings, os.path.join(workdir, "gateways"), args.nodes)
                if backend == "rbd" and "scale" in groups:
                    os.makedirs(os.path.join(workdir, "scale"))
                    figures["scale"] = scale.run(cluster.settings, os.path.join(workdir, "scale"))
                if backend == "rbd" and "fleet" in groups:
                    os.makedirs(os.path.join(workdir, "fleet"))
                    figures["fleet"] = fleet.run(cluster.settings, os.path.join(workdir, "fleet"))
                results[backend] = {"figures": figures, "verdicts": verdicts(figures, args.nodes, backend)}
        finally:
            if cluster:
                cluster.stop()
    print(table(results))
    results["targets"] = {key: {"limit": limit, "how": how, "figure": label} for key, (label, limit, how) in TARGETS.items()}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("\nwritten to %s" % args.out)


if __name__ == "__main__":
    main()
