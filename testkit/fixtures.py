"""The pytest fixtures of bmi-rpc (a plugin the root conftest.py loads): a private tgtd, a throwaway
Ceph cluster, settings on both storage backends, an in-process MainServer, the three real processes.

Everything binds to 127.0.0.1 and is stopped by its own process id. A missing component fails
the run in CI (CI=true) and skips the test elsewhere, naming the Debian package to install.
"""
import contextlib
import os

import pytest

import config
from mainserver import MainServer
from testkit.daemons import CephCluster, Tgtd, free_port, rados_objects, rbd_images, require
from testkit.filesystems import tmpfs
from testkit.images import MiB
from testkit.service import Service, detach_every_node, variant

BACKENDS = ["file", "rbd"]


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
              "BMI_KEY_FILE": str(tmp_path / "hmac.key"), "BMI_GATEWAY": "gw-a",
              # checks often; the full re-read (rbd, with changes pushed) a few times as often as in production
              "BMI_TGT_CHECK_SECONDS": 0.5, "BMI_RESCAN_SECONDS": 5, "BMI_SCRIPT_TIMEOUT": 60,
              "BMI_METRICS_PORT": 0}   # none: a test that scrapes them gives its own port
    if backend == "rbd":
        cluster = request.getfixturevalue("ceph_cluster")
        require("rbd" in tgtd.backing_stores(), "tgt-rbd (installed before tgtd starts)")
        values.update(cluster.settings)
        request.addfinalizer(cluster.wipe)
    return config.Settings(**values)


@pytest.fixture
def server_with(settings):
    """A function that starts an in-process MainServer on the settings, changed by its keyword
    arguments. At the end of the test they are closed, and every node is force-detached."""
    started = []

    def start(**changes):
        started.append(MainServer(variant(settings, **changes)).start())
        return started[-1]

    yield start
    for main in started:
        main.close()
    with MainServer(settings) as last:   # the test may have closed its server, or started another
        detach_every_node(last)


@pytest.fixture
def server(server_with):
    return server_with()


@pytest.fixture
def service(settings, tmp_path):
    processes = Service(settings, str(tmp_path))
    try:   # a start that fails half way stops what it started too
        processes.start()
        yield processes
        detach_every_node(processes)
    finally:
        processes.stop()


FILLER = "filler"   # the file that fills a state directory up


@pytest.fixture
def small_service(settings, tgtd, tmp_path):
    """The three processes, with BMI_STATE_DIR on a 3 MiB tmpfs of its own."""
    with tmpfs(settings.BMI_STATE_DIR, 3 * MiB):
        processes = Service(settings, str(tmp_path))
        try:
            processes.start()
            yield processes
            with contextlib.suppress(FileNotFoundError):   # room for the detaches, whatever the test left
                os.unlink(os.path.join(settings.BMI_STATE_DIR, FILLER))
            detach_every_node(processes)
        finally:
            processes.stop()


def state_of(settings, tgtd):
    """Everything an operation may change: files, targets, CHAP accounts, rbd images, RADOS records."""
    files = sorted(os.path.relpath(os.path.join(d, f), settings.BMI_STATE_DIR)
                   for d, _, names in os.walk(settings.BMI_STATE_DIR) for f in names)
    state = {"files": files, "targets": tgtd.targets(), "accounts": tgtd.accounts()}
    if settings.BMI_BACKEND == "rbd":
        state["rbd"] = rbd_images(settings.environment())
        state["records"] = rados_objects(settings.environment())
    return state
