"""Witnesses: each workaround in the scripts has a test here that shows the behaviour it works
around, so that it goes when the behaviour does."""
import subprocess
import time

import pytest

from bmi import runner
from bmi.nodes import Backing
from bmi.target import Target
from testkit.daemons import rbd

rbd_only = pytest.mark.parametrize("backend", ["rbd"], indirect=True)
file_only = pytest.mark.parametrize("backend", ["file"], indirect=True)


def rbd_url(settings, image):
    return "rbd:%s/%s:conf=%s:id=%s" % (settings.BMI_CEPH_POOL, image, settings.BMI_CEPH_CONF, settings.BMI_CEPH_ID)


def write_seconds(settings, image):
    started = time.monotonic()
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 4k", rbd_url(settings, image)], check=True,
                   capture_output=True, timeout=120)
    return time.monotonic() - started


@rbd_only
@pytest.mark.parametrize("features, slow", [("layering,exclusive-lock", True), ("layering", False)])
def test_an_exclusive_lock_stalls_the_next_writer_after_a_killed_one(settings, features, slow):
    """Why node disks are cloned with layering alone (scripts/storage/rbd, clone): a tgtd killed while
    it holds a disk's exclusive lock makes the restarted tgtd's first write wait for the lock."""
    env = settings.environment()
    assert rbd(env, "create", "--size", "4M", "--image-feature", features, settings.BMI_CEPH_POOL + "/witness").returncode == 0
    writer = subprocess.Popen(["stdbuf", "-oL", "qemu-io", "-f", "raw", "-c", "write 0 4k", "-c", "sleep 600000",
                               rbd_url(settings, "witness")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert writer.stdout.readline().startswith(b"wrote")   # it holds the lock now, if there is one
    finally:
        writer.kill()
        writer.wait(10)
    seconds = write_seconds(settings, "witness")
    assert (seconds > 15) == slow, seconds


@rbd_only
def test_a_killed_tgtd_keeps_watching_its_disks_for_a_while(server, settings, tgtd, tmp_path):
    """Why removing a node disk retries on "still has watchers" for up to 45 s (scripts/storage/rbd,
    remove): the OSD keeps a killed tgtd's watch for osd_client_watch_timeout (30 s)."""
    (tmp_path / "golden.raw").write_bytes(b"\1" * 1024 * 1024)
    server.import_image("golden", str(tmp_path / "golden.raw"))
    server.provision("golden", "node-a")
    tgtd.stop()   # SIGKILL, as a crash
    removed = rbd(settings.environment(), "rm", "--no-progress", settings.BMI_CEPH_POOL + "/node.node-a")
    assert removed.returncode != 0 and "still has watchers" in removed.stderr
    tgtd.start()
    started = time.monotonic()
    server.detach_node("node-a", force=True)   # waits the watch out
    assert 1 < time.monotonic() - started < 45


@file_only
def test_tgtadm_reports_a_target_it_could_not_make_and_nothing_is_left(settings, tgtd):
    """Why the target script does not check a target again after making it: tgtadm fails when a step
    fails, and the script then takes back what it made."""
    target = Target(settings)
    with pytest.raises(runner.CommandFailed, match="^cannot export iqn.2026-11.io.bmi-rpc:ghost: tgtd: "):
        target.create("iqn.2026-11.io.bmi-rpc:ghost", Backing("rdwr", "/nonexistent/ghost.img"), "ghost", "s" * 16)
    assert (tgtd.targets(), tgtd.accounts()) == ({}, [])
