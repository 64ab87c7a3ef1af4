"""Nothing acknowledged is lost: what a node wrote and flushed (SYNCHRONIZE CACHE) through iSCSI is
on its disk after tgtd is killed and the node exported again, on both backends, with the cache
settings tgtd's LUNs run with (README, Benchmark)."""
import subprocess

from testkit.daemons import wait_until
from testkit.images import MiB, make_image_file
from testkit.initiator import lun_holds, lun_url

PATTERN = 0xA5


def test_flushed_writes_survive_a_killed_tgtd(service, settings, tgtd, tmp_path):
    make_image_file(tmp_path / "golden.raw", 16 * MiB)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    assert service.client("provision", "golden", "node-a").returncode == 0
    url = lun_url(settings, "node-a")
    # Write 8 MiB, flush, read a sector back (the sign that the flush returned), then hold the
    # session open: tgtd dies under a logged-in node, as it would in production.
    writer = subprocess.Popen(["stdbuf", "-oL", "qemu-io", "-f", "raw", "-c", "write -P %d 1M 8M" % PATTERN,
                               "-c", "flush", "-c", "read -P %d 1M 512" % PATTERN, "-c", "sleep 600000", url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = [writer.stdout.readline() for _ in range(4)]   # wrote ..., its rate, read ..., its rate
        assert said[0].startswith("wrote 8388608/8388608") and said[2].startswith("read 512/512"), said
        tgtd.stop()   # SIGKILL, with the node logged in
    finally:
        writer.kill()
        writer.wait(10)
    tgtd.start()
    exported = settings.BMI_IQN_PREFIX + ":node-a"
    # whole once its ACL is there, the last step of making a target
    wait_until(lambda: tgtd.exports().get(exported, {}).get("acl") == ["ALL"], 30, "node-a exported again")
    assert lun_holds(url, MiB, PATTERN, 8 * MiB)
