"""A private tgtd and a throwaway Ceph cluster, on loopback, stopped by their own process id."""
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time

from config import ROOT

IN_CI = os.environ.get("CI") == "true"
# I/O threads tgtd gives each LUN (its default is 16): with rbd, each makes one synchronous librbd
# call at a time, so they bound the queue depth that reaches Ceph; 8 keeps 4 KiB reads at QD16 above
# 0.6 of qemu's librbd, and waiting threads cost no CPU (README, Benchmark).
TGTD_IO_THREADS = "8"
TGTD_NOP = ",nop_interval=5,nop_count=3"   # as systemd/bmi-tgtd.service: a powered-off node's session goes in 15 s


class Missing(RuntimeError):
    """A component the machine lacks."""


def require(present, package):
    """Under pytest, skip the test, or fail it in CI (CI=true), when present is false; elsewhere
    raise Missing. Either way the message names the Debian package to install."""
    if present:
        return
    message = "needs the Debian package %s" % package
    pytest = sys.modules.get("pytest")
    if pytest is None:
        raise Missing(message)
    if IN_CI:
        pytest.fail(message + " (CI must install it)")
    pytest.skip(message)


def require_command(command, package):
    require(shutil.which(command) is not None, package)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc, timeout=10):
    """Stop a process we started, by its pid: SIGTERM, then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def running_pid(pid_file):
    """The process whose id pid_file holds, while it runs (not a zombie), or None."""
    try:
        with open(pid_file) as f:
            pid = int(f.read())
        with open("/proc/%d/stat" % pid) as f:
            return pid if f.read().rpartition(")")[2].split()[0] != "Z" else None
    except (FileNotFoundError, ValueError):
        return None


def wait_until(check, timeout, what):
    """Poll check until it holds; past timeout seconds raise TimeoutError naming what (a string, or a
    function giving one then, to say how things stand)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("%s: not within %s s" % (what() if callable(what) else what, timeout))
        time.sleep(0.05)


class Tgtd:
    """A private tgtd on a loopback portal, or on a test host's address (testkit/netns.py), with a
    control port (tgtadm -C) of its own."""

    def __init__(self, log_path, host=None):
        require_command("tgtd", "tgt")
        self.log_path = log_path
        self.host = host
        self.control = None
        self.port = free_port()
        self.portal = "%s:%d" % (host.address if host else "127.0.0.1", self.port)
        self.proc = None

    def start(self):
        # A control port (1 to 32767) another tgtd holds makes ours exit: then take another one.
        for control in [self.control] if self.control else random.sample(range(1000, 32768), 5):
            with open(self.log_path, "ab") as log:
                command = ["tgtd", "-f", "-C", str(control), "--nr_iothreads", TGTD_IO_THREADS,
                           "--iscsi", "portal=" + self.portal + TGTD_NOP]
                self.proc = subprocess.Popen(self.host.command(*command) if self.host else command,
                                             stdout=log, stderr=subprocess.STDOUT)
            self.control = control
            try:
                wait_until(lambda: self.proc.poll() is not None or
                           self.admin("--op", "show", "--mode", "sys").returncode == 0, 10, "tgtd start")
            except TimeoutError:
                self.stop()
                raise
            if self.proc.poll() is None:
                return
        raise RuntimeError("tgtd does not start: see %s" % self.log_path)

    def stop(self):
        # tgtd ignores SIGTERM; a killed tgtd takes its targets with it, as a crash would
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        self.stop()
        self.start()

    def admin(self, *args):
        return subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
                              capture_output=True, text=True, timeout=30)

    def targets(self):
        """{tid: iqn} of the targets this tgtd has."""
        out = self.admin("--op", "show", "--mode", "target").stdout
        return {int(line.split()[1].rstrip(":")): line.split()[2]
                for line in out.splitlines() if line.startswith("Target ")}

    def tid(self, iqn):
        return {name: tid for tid, name in self.targets().items()}[iqn]

    def exports(self):
        """{iqn: {"luns": backing stores, "accounts": bound CHAP users, "acl": initiators allowed}} of every
        target, from tgtadm's listing: a target is whole once its ACL is there, the last thing made."""
        targets, target, section = {}, None, None
        for line in self.admin("--op", "show", "--mode", "target").stdout.splitlines():
            if line.startswith("Target "):
                target = targets[line.split()[2]] = {"luns": [], "accounts": [], "acl": []}
            elif line.startswith("    ") and not line.startswith("     "):
                section = {"LUN information:": "luns", "Account information:": "accounts",
                           "ACL information:": "acl"}.get(line.strip())
            elif section == "luns" and line.strip().startswith("Backing store path:"):
                target["luns"].append(line.split(":", 1)[1].strip())
            elif section in ("accounts", "acl") and line.strip():
                target[section].append(line.strip())
        return targets

    def accounts(self):
        out = self.admin("--op", "show", "--mode", "account").stdout
        return sorted(line.strip() for line in out.splitlines()[1:])

    def backing_stores(self):
        return self.admin("--op", "show", "--mode", "sys").stdout


class CephCluster:
    """The project's throwaway cluster (tools/ceph-cluster), on loopback."""

    def __init__(self, directory):
        for command, package in (("ceph-mon", "ceph-mon"), ("ceph-osd", "ceph-osd"), ("rbd", "ceph-common")):
            require_command(command, package)
        self.directory = str(directory)
        out = subprocess.run([os.path.join(ROOT, "tools", "ceph-cluster"), "start", self.directory],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("ceph-cluster start failed: " + out.stderr[-2000:])
        self.settings = dict(line.split("=", 1) for line in out.stdout.split())

    def rbd(self, *args):
        return rbd(self.settings, *args)

    def pid(self, daemon):
        """The process id of the cluster's "mon" or "osd"."""
        with open(os.path.join(self.directory, daemon + ".pid")) as f:
            return int(f.read())

    def spec(self, name):
        """An image name as rbd_images gives it, with the pool: POOL/node.NODE, POOL/golden/IMAGE."""
        return "%s/%s" % (self.settings["BMI_CEPH_POOL"], name)

    def images(self):
        return rbd_images(self.settings)

    def wipe(self):
        """Remove every image and record of the pool, so the next test starts empty: clones (node
        disks, which images() gives first) before parents."""
        for name in self.images():
            image = self.spec(name)
            for snap in json.loads(self.rbd("snap", "ls", "--format", "json", image).stdout or "[]"):
                self.rbd("snap", "unprotect", "%s@%s" % (image, snap["name"]))
                self.rbd("snap", "rm", "%s@%s" % (image, snap["name"]))
            self.rbd("rm", image)
        for name in rados_objects(self.settings):
            rados(self.settings, "rm", name)

    def stop(self):
        subprocess.run([os.path.join(ROOT, "tools", "ceph-cluster"), "stop", self.directory],
                       capture_output=True, timeout=60)


def rbd(settings, *args):
    """The rbd tool run as the service runs it, with the BMI_CEPH_* of settings (a dict)."""
    return subprocess.run(["rbd", "--conf", settings["BMI_CEPH_CONF"], "--id", settings["BMI_CEPH_ID"], *args],
                          capture_output=True, text=True, timeout=120)


def rados(settings, *args):
    """The rados tool on the namespace of the service's records (node.NODE, gateway.NAME)."""
    return subprocess.run(["rados", "--conf", settings["BMI_CEPH_CONF"], "--id", settings["BMI_CEPH_ID"], "-p",
                           settings["BMI_CEPH_POOL"], "-N", "bmi", *args], capture_output=True, text=True, timeout=120)


def rados_objects(settings):
    """The RADOS objects of the service's records in the pool in settings."""
    out = rados(settings, "ls")
    if out.returncode != 0:
        raise RuntimeError("rados ls: %s" % out.stderr)
    return sorted(out.stdout.split())


def rbd_images(settings):
    """The images of the pool in settings (BMI_CEPH_*): node disks, then "golden/NAME" of the
    golden images' namespace, which exists once an image was made."""
    def ls(where):
        out = rbd(settings, "ls", where)
        if out.returncode != 0 and "does not exist" not in out.stderr:
            raise RuntimeError("rbd ls %s: %s" % (where, out.stderr))
        return out.stdout.split()
    pool = settings["BMI_CEPH_POOL"]
    return sorted(ls(pool)) + sorted("golden/" + name for name in ls(pool + "/golden"))
