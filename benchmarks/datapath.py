"""The data path: a node's disk read and written through iSCSI (tgtd) against the same work on its
backing store directly, side by side, pair by pair; the cost in tgtd of an exported node at idle;
and a boot storm. Part of benchmarks/bench.py (--figures datapath).

Both sides run qemu-img bench, the same requests: through iSCSI with qemu's libiscsi driver, and
directly on the node's disk file (file backend; the file's page cache dropped before each run of
either side, so both read from the disk) or its RBD image through qemu's librbd (rbd backend, with
the cache tgtd's Ceph clients use). 4 KiB requests go 1 MiB + 4 KiB apart, wrapping at the disk's
end: spread over the whole disk, the same for both sides.
"""
import contextlib
import os
import random
import statistics
import subprocess
import time

from testkit.bootdisk import write_boot_image
from testkit.bootvm import booted_node, wait_for_marker
from testkit.images import GiB, make_random_file
from testkit.initiator import lun_url

STEP = str(1024 * 1024 + 4096)
WORKLOADS = {   # name: qemu-img bench arguments
    "seq_read": ["-s", "256K", "-d", "8", "-c", "4096"],
    "seq_write": ["-w", "-s", "256K", "-d", "8", "-c", "2048"],
    "rand_read_qd1": ["-s", "4K", "-d", "1", "-c", "3000", "-S", STEP],
    "rand_read_qd16": ["-s", "4K", "-d", "16", "-c", "20000", "-S", STEP],
    "rand_write_qd1": ["-w", "-s", "4K", "-d", "1", "-c", "2000", "-S", STEP],
    "rand_write_qd16": ["-w", "-s", "4K", "-d", "16", "-c", "10000", "-S", STEP],
}
PAIRS = 5
BOOT_STORM = (1, 4, 8)


def bench_seconds(target, arguments, cache):
    """Seconds qemu-img bench takes for arguments on target (a file, an rbd: or iscsi:// URL)."""
    started = time.perf_counter()
    subprocess.run(["qemu-img", "bench", "-f", "raw", "-t", cache, *arguments, target], check=True,
                   capture_output=True, timeout=600)
    return time.perf_counter() - started


def drop_cache(path):
    """Evict path's pages from the page cache (posix_fadvise DONTNEED, as dd's nocache does)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class DataPath:
    """The data path of one node of a running service (bench: benchmarks/bench.py's Bench)."""

    def __init__(self, bench, workdir):
        self.bench = bench
        self.settings = bench.settings
        self.workdir = workdir
        golden = os.path.join(workdir, "disk.raw")
        make_random_file(golden, GiB)   # data everywhere: no read is of a hole
        bench.proxy.import_image("datapath", golden)
        os.unlink(golden)
        bench.proxy.provision("datapath", "datapath")

    def direct(self):
        """(target, cache) of the node's disk itself."""
        if self.settings.BMI_BACKEND == "file":
            return os.path.join(self.settings.BMI_STATE_DIR, "disks", "datapath.img"), "writeback"
        s = self.settings
        # the cache of tgtd's Ceph clients: librbd's default (on; writethrough until the first flush)
        return "rbd:%s/node.datapath:id=%s:conf=%s" % (s.BMI_CEPH_POOL, s.BMI_CEPH_ID, s.BMI_CEPH_CONF), "writeback"

    def through_iscsi(self):
        return lun_url(self.settings, "datapath"), "none"   # libiscsi: no cache of qemu's

    def ratios(self):
        """{workload: {"direct_s", "iscsi_s", "ratio"}}: ratio is speed through iSCSI / directly,
        the median of the pairs."""
        figures = {}
        for name, arguments in WORKLOADS.items():
            direct, iscsi = [], []
            for _ in range(PAIRS):
                # Which side goes first is drawn for each pair: runs here are now and then slowed by
                # stalls of the machine's own (seen: every fourth 1 GiB read, 0.5-0.9 s, either side),
                # which a fixed order can land on the same side of every pair.
                for side, seconds in random.sample([(self.direct(), direct), (self.through_iscsi(), iscsi)], 2):
                    if self.settings.BMI_BACKEND == "file":
                        drop_cache(self.direct()[0])
                    seconds.append(bench_seconds(side[0], arguments, side[1]))
            figures[name] = {"direct_s": statistics.median(direct), "iscsi_s": statistics.median(iscsi),
                             "ratio": statistics.median(d / i for d, i in zip(direct, iscsi))}
        return figures

    def idle_node_cost(self, count=50):
        """tgtd's threads and resident memory for each exported node, from count nodes more."""
        pid = self.bench.tgtd.proc.pid

        def usage():
            with open("/proc/%d/status" % pid) as f:
                status = dict(line.split(":", 1) for line in f)
            return int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024

        threads, rss = usage()
        for i in range(count):
            self.bench.proxy.provision("datapath", "idle-%d" % i)
        time.sleep(3)   # measuring idle: nothing to poll for
        more_threads, more_rss = usage()
        for i in range(count):
            self.bench.proxy.detach_node("idle-%d" % i)
        return {"threads_per_node": (more_threads - threads) / count, "mb_per_node": (more_rss - rss) / count}

    def boot_storm(self):
        """{nodes at once: seconds until every one has booted}; one VM each, software-emulated."""
        write_boot_image(os.path.join(self.workdir, "boot.raw"), "BMI-STORM")
        self.bench.proxy.import_image("storm", os.path.join(self.workdir, "boot.raw"))
        boot_dir = os.path.join(self.settings.BMI_STATE_DIR, "boot")
        figures = {}
        for count in BOOT_STORM:
            nodes = ["storm-%d" % i for i in range(count)]
            for node in nodes:
                self.bench.proxy.provision("storm", node)
            serials = [os.path.join(self.workdir, node + ".serial") for node in nodes]
            started = time.perf_counter()
            with contextlib.ExitStack() as vms:
                procs = [vms.enter_context(booted_node(boot_dir, node + ".ipxe", serial))
                         for node, serial in zip(nodes, serials)]
                booted = [wait_for_marker(serial, "BMI-STORM", 300, proc=proc) for serial, proc in zip(serials, procs)]
                figures[str(count)] = (time.perf_counter() - started) if all(booted) else None
            for node in nodes:
                self.bench.proxy.detach_node(node, True)
        return figures

    def stop(self):
        self.bench.proxy.detach_node("datapath", True)


def run(bench, workdir):
    path = DataPath(bench, workdir)
    try:
        return {"ratios": path.ratios(), "idle": path.idle_node_cost(), "boot_storm": path.boot_storm()}
    finally:
        path.stop()
