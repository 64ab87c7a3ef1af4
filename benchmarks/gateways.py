"""Gateways (rbd): provision latency through one gateway, with one gateway and with two (a
provision returns once every gateway exports the node); and the idle cost of a tgtd holding N nodes,
each of two gateways' and one gateway's alone. Part of benchmarks/bench.py (--figures gateways)."""
import os
import statistics
import threading
import time

import config
from bmi import pyrosetup
from testkit.daemons import free_port, wait_until
from testkit.gateways import GatewayGroup
from testkit.images import MiB, make_image_file

TICKS = os.sysconf("SC_CLK_TCK")


def idle_cost(pid, seconds=10.0):
    """A process's share of a core over seconds, its resident memory (MB) and its threads."""
    def cpu():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS   # utime + stime
    before, started = cpu(), time.monotonic()
    time.sleep(seconds)   # measuring idle: nothing to poll for
    share = (cpu() - before) / (time.monotonic() - started)
    with open("/proc/%d/status" % pid) as f:
        status = dict(line.split(":", 1) for line in f)
    return {"core_share": share, "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
            "threads": int(status["Threads"])}


def proxy_to(settings, gateway):
    with pyrosetup.locate_ns(settings) as ns:
        return pyrosetup.proxy(pyrosetup.gateways(ns, settings.BMI_OBJECT_NAME)[gateway])


def provision_latency(settings, gateway, repeat=20):
    """Median seconds of a provision through gateway, each detached again."""
    samples = []
    with proxy_to(settings, gateway) as server:
        for i in range(repeat):
            started = time.perf_counter()
            server.provision("golden", "lat-%d" % i)
            samples.append(time.perf_counter() - started)
            server.detach_node("lat-%d" % i)
    return statistics.median(samples)


def provision_many(settings, gateway, nodes, clients=8):
    pending, lock = list(nodes), threading.Lock()

    def work():
        with proxy_to(settings, gateway) as server:
            while True:
                with lock:
                    if not pending:
                        return
                    node = pending.pop()
                server.provision("golden", node)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(cluster_settings, workdir, nodes):
    settings = config.Settings(**dict(cluster_settings, BMI_BACKEND="rbd", BMI_NS_PORT=free_port(),
                                      BMI_KEY_FILE=os.path.join(workdir, "hmac.key")))
    group = GatewayGroup(settings, workdir)
    try:
        group.start_all("gw-a")
        pyrosetup.configure(settings)
        make_image_file(os.path.join(workdir, "golden.raw"), 16 * MiB)
        group.client("gw-a", "import_image", "golden", os.path.join(workdir, "golden.raw"))   # or there already
        figures = {"provision_one_gateway_s": provision_latency(settings, "gw-a")}
        group.add("gw-b")
        group.start("gw-b")
        figures["provision_two_gateways_s"] = provision_latency(settings, "gw-a")

        names = ["idle-%d" % i for i in range(nodes)]
        provision_many(settings, "gw-a", names)
        iqns = sorted("%s:%s" % (settings.BMI_IQN_PREFIX, node) for node in names)
        wait_until(lambda: all(group.exported(name) == iqns for name in ("gw-a", "gw-b")), 600,
                   "both gateways export every node")
        time.sleep(5)   # let the exports settle
        figures["idle_two_gateways"] = {name: idle_cost(group.tgtds[name].proc.pid) for name in ("gw-a", "gw-b")}
        group.kill("gw-b")
        time.sleep(5)
        figures["idle_one_gateway"] = {"gw-a": idle_cost(group.tgtds["gw-a"].proc.pid)}
        figures["nodes"] = nodes
        return figures
    finally:
        group.stop()
