"""Test fixtures of bmi-rpc: a private tgtd, a throwaway Ceph cluster, the three real processes.

Everything binds to 127.0.0.1 and is stopped by its own process id. A missing component fails
the run in CI (CI=true) and skips the test elsewhere, naming the Debian package to install.
"""
import glob
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time

import pytest

import config
from mainserver import MainServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = os.environ.get("CI") == "true"
BACKENDS = ["file", "rbd"]
# I/O threads tgtd gives each LUN (its default is 16): with rbd each LUN also carries a Ceph client
# of its own, and at hundreds of LUNs the threads' wake-ups cost tgtd a core (see README).
TGTD_IO_THREADS = "4"


def require(present, package):
    if not present:
        message = "needs the Debian package %s" % package
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


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("%s: not within %s s" % (what, timeout))
        time.sleep(0.05)


def variant(settings, **changes):
    """The settings with some changed: another program, or the same ones configured otherwise."""
    return config.Settings(**dict(settings.environment(), **changes))


def audit_lines(settings):
    """The main server's audit log, one dict a call."""
    if not os.path.exists(settings.BMI_AUDIT_LOG):
        return []
    with open(settings.BMI_AUDIT_LOG) as f:
        return [json.loads(line) for line in f]


def node_record(settings, node):
    with open(os.path.join(settings.BMI_STATE_DIR, "nodes", node + ".json")) as f:
        return json.load(f)


def lun_url(settings, node, portal=None, credentials=True):
    """iscsi:// URL of a node's LUN, logging in with its CHAP user and secret."""
    record = node_record(settings, node)
    login = "%s%%%s@" % (record["chap_user"], record["chap_secret"]) if credentials else ""
    return "iscsi://%s%s/%s/1" % (login, portal or settings.BMI_ISCSI_PORTAL, record["iqn"])


def read_lun(url, path):
    """Copy a whole LUN into a file with a real initiator (qemu's libiscsi driver)."""
    require_command("qemu-img", "qemu-utils")
    require(glob.glob("/usr/lib/*/qemu/block-iscsi.so"), "qemu-block-extra")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(path)],
                   check=True, capture_output=True, timeout=120)
    with open(path, "rb") as f:
        return f.read()


def write_lun(url, offset, data_path):
    """Write a file's bytes into a LUN at offset, through iSCSI."""
    size = os.path.getsize(data_path)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -s %s %d %d" % (data_path, offset, size), url],
                   check=True, capture_output=True, timeout=120)


class Tgtd:
    """A private tgtd on a loopback portal, with a control port (tgtadm -C) of its own."""

    def __init__(self, log_path):
        require_command("tgtd", "tgt")
        self.log_path = log_path
        self.control = None
        self.port = free_port()
        self.portal = "127.0.0.1:%d" % self.port
        self.proc = None

    def start(self):
        # A control port (1 to 32767) another tgtd holds makes ours exit: then take another one.
        for control in [self.control] if self.control else random.sample(range(1000, 32768), 5):
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(["tgtd", "-f", "-C", str(control), "--nr_iothreads", TGTD_IO_THREADS,
                                              "--iscsi", "portal=" + self.portal], stdout=log, stderr=subprocess.STDOUT)
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

    def osd_pid(self):
        with open(os.path.join(self.directory, "osd.pid")) as f:
            return int(f.read())

    def spec(self, name):
        """An image name as rbd_images gives it, with the pool: POOL/node.NODE, POOL/golden/IMAGE."""
        return "%s/%s" % (self.settings["BMI_CEPH_POOL"], name)

    def images(self):
        return rbd_images(self.settings)

    def wipe(self):
        """Remove every image of the pool, so the next test starts empty: clones (node disks, which
        images() gives first) before parents."""
        for name in self.images():
            image = self.spec(name)
            for snap in json.loads(self.rbd("snap", "ls", "--format", "json", image).stdout or "[]"):
                self.rbd("snap", "unprotect", "%s@%s" % (image, snap["name"]))
                self.rbd("snap", "rm", "%s@%s" % (image, snap["name"]))
            self.rbd("rm", image)

    def stop(self):
        subprocess.run([os.path.join(ROOT, "tools", "ceph-cluster"), "stop", self.directory],
                       capture_output=True, timeout=60)


@pytest.fixture
def tgtd(tmp_path):
    daemon = Tgtd(tmp_path / "tgtd.log")
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory):
    cluster = CephCluster(tmp_path_factory.mktemp("ceph") / "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def settings(backend, tgtd, tmp_path, request):
    values = {"BMI_STATE_DIR": str(tmp_path / "state"), "BMI_BACKEND": backend,
              "BMI_TGT_CONTROL_PORT": tgtd.control, "BMI_ISCSI_PORTAL": tgtd.portal,
              # what a test VM on qemu's user-mode network sees of the host's loopback
              "BMI_BOOT_PORTAL": "10.0.2.2:%d" % tgtd.port,
              "BMI_NS_PORT": free_port(), "BMI_SERVER_PORT": free_port(),
              "BMI_KEY_FILE": str(tmp_path / "hmac.key"),
              "BMI_TGT_CHECK_SECONDS": 0.5, "BMI_SCRIPT_TIMEOUT": 60}
    if backend == "rbd":
        cluster = request.getfixturevalue("ceph_cluster")
        require("rbd" in tgtd.backing_stores(), "tgt-rbd (installed before tgtd starts)")
        values.update(cluster.settings)
        request.addfinalizer(cluster.wipe)
    return config.Settings(**values)


@pytest.fixture
def server(settings):
    main = MainServer(settings)
    yield main
    for node in main.list_all_images()["nodes"]:   # before tgtd goes: rbd keeps a killed tgtd's watch
        main.detach_node(node["node"], force=True)


class Service:
    """The three real processes: name server, main server, and mainclient run as a user runs it."""

    def __init__(self, settings, workdir):
        self.settings = settings
        self.workdir = workdir
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **settings.environment())
        self.nameserver = self.mainserver = None

    def _start(self, program):
        with open(os.path.join(self.workdir, program + ".log"), "ab") as log:
            return subprocess.Popen([sys.executable, os.path.join(ROOT, program + ".py")],
                                    env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def start_nameserver(self):
        self.nameserver = self._start("nameserver")

    def start_mainserver(self):
        self.mainserver = self._start("mainserver")

    def start(self):
        self.start_nameserver()
        self.start_mainserver()
        self.wait_ready()

    def wait_ready(self, timeout=30):
        wait_until(lambda: self.client("list_all_images").returncode == 0, timeout, "main server reachable")

    def client(self, *args, timeout=180):
        return subprocess.run([sys.executable, os.path.join(ROOT, "mainclient.py"), *args], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def log(self, program):
        with open(os.path.join(self.workdir, program + ".log")) as f:
            return f.read()

    def stop(self):
        for proc in (self.mainserver, self.nameserver):
            if proc is not None:
                stop_process(proc)


@pytest.fixture
def service(settings, tmp_path):
    processes = Service(settings, str(tmp_path))
    try:   # a start that fails half way stops what it started too
        processes.start()
        yield processes
        for node in json.loads(processes.client("--json", "list_all_images").stdout or '{"nodes": []}')["nodes"]:
            processes.client("detach_node", "--force", node["node"])   # before tgtd goes (rbd watches)
    finally:
        processes.stop()


def make_image_file(path, size=4 * 1024 * 1024):
    """A raw disk image file of random bytes; returns them."""
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def state_of(settings, tgtd):
    """Everything an operation may change: files, targets, CHAP accounts, rbd images."""
    files = sorted(os.path.relpath(os.path.join(d, f), settings.BMI_STATE_DIR)
                   for d, _, names in os.walk(settings.BMI_STATE_DIR) for f in names)
    state = {"files": files, "targets": tgtd.targets(), "accounts": tgtd.accounts()}
    if settings.BMI_BACKEND == "rbd":
        state["rbd"] = rbd_images(settings.environment())
    return state


def rbd(settings, *args):
    """The rbd tool run as the service runs it, with the BMI_CEPH_* of settings (a dict)."""
    return subprocess.run(["rbd", "--conf", settings["BMI_CEPH_CONF"], "--id", settings["BMI_CEPH_ID"], *args],
                          capture_output=True, text=True, timeout=120)


def rbd_images(settings):
    """The images of the pool in settings (BMI_CEPH_*): node disks, then "golden/NAME" of the
    golden images' namespace, which exists once an image was made."""
    def ls(where):
        out = rbd(settings, "ls", where)
        assert out.returncode == 0 or "does not exist" in out.stderr, out.stderr
        return out.stdout.split()
    pool = settings["BMI_CEPH_POOL"]
    return sorted(ls(pool)) + sorted("golden/" + name for name in ls(pool + "/golden"))
