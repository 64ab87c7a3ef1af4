"""A real iSCSI initiator (qemu's libiscsi driver) reading and writing nodes' LUNs."""
import contextlib
import dataclasses
import glob
import json
import os
import subprocess

from bmi.records import FileRecords, records_for
from testkit.daemons import require, require_command


def node_record(settings, node):
    """The node's record as the service keeps it, a dict: in a file of the state directory (read,
    not loaded: that would tidy the directory under a running server's feet), or in RADOS."""
    records = records_for(settings)
    if isinstance(records, FileRecords):
        with open(os.path.join(settings.BMI_STATE_DIR, "nodes", node + ".json")) as f:
            return json.load(f)
    try:
        record = records.get(node)
    finally:
        records.close()
    if record is None:
        raise FileNotFoundError("node %s has no record" % node)
    return dataclasses.asdict(record)


def lun_url(settings, node, portal=None, credentials=True):
    """iscsi:// URL of a node's LUN, logging in with its CHAP user and secret."""
    record = node_record(settings, node)
    login = "%s%%%s@" % (record["chap_user"], record["chap_secret"]) if credentials else ""
    return "iscsi://%s%s/%s/1" % (login, portal or settings.BMI_ISCSI_PORTAL, record["iqn"])


def read_lun(url, path):
    """Copy a whole LUN into a file; return its bytes."""
    require_command("qemu-img", "qemu-utils")
    require(glob.glob("/usr/lib/*/qemu/block-iscsi.so"), "qemu-block-extra")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, str(path)],
                   check=True, capture_output=True, timeout=120)
    with open(path, "rb") as f:
        return f.read()


def write_lun(url, offset, data_path):
    """Write a file's bytes into a LUN at offset."""
    size = os.path.getsize(data_path)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -s %s %d %d" % (data_path, offset, size), url],
                   check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def session(url):
    """A real initiator logged in to a LUN for the with block (qemu-io, having read its first sector:
    the login is done), then killed."""
    require_command("qemu-io", "qemu-utils")
    reader = subprocess.Popen(["stdbuf", "-oL", "qemu-io", "-f", "raw", "-c", "read 0 512", "-c", "sleep 600000", url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = reader.stdout.readline()
        assert said.startswith("read 512/512"), said
        yield reader
    finally:
        reader.kill()
        reader.wait(10)


def lun_holds(url, offset, byte, length):
    """Does the LUN hold length bytes of byte at offset? (qemu-io's read -P checks them.)"""
    done = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P %d %d %d" % (byte, offset, length), url],
                          capture_output=True, text=True, timeout=120)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr
