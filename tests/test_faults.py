"""Faults: a server killed or frozen halfway through an operation, a script that hangs, a full disk.

Each test runs on every storage backend, and checks that the service comes back by itself within a
bounded time, with every operation either whole or taken back.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from config import ROOT
from mainserver import MainServer
from bmi.nodes import EXPORTING
from testkit.daemons import rbd_images, stop_process, wait_until
from testkit.filesystems import fill_up, tmpfs
from testkit.fixtures import FILLER, state_of
from testkit.images import make_image_file
from testkit.initiator import lun_url, node_record, read_lun
from testkit.service import Service, variant


MiB = 1024 * 1024


@contextlib.contextmanager
def frozen(pid):
    """A daemon stopped with SIGSTOP: tgtd (every tgtadm call, and so every target script, blocks until
    it goes on) or the Ceph OSD (every rbd command that reads or writes the pool)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def eventually_equal(get, expected, timeout):
    """Wait until get() returns expected; if it does not in time, the assertion shows the difference."""
    deadline = time.monotonic() + timeout
    while (value := get()) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert value == expected


def record_state(settings, node):
    try:
        return node_record(settings, node)["state"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def has_disk(settings, node):
    """Without tgtd, which may be frozen (state_of asks it too)."""
    if settings.BMI_BACKEND == "file":
        return os.path.exists(os.path.join(settings.BMI_STATE_DIR, "disks", node + ".img"))
    return "node." + node in rbd_images(settings.environment())




def import_golden(service, tmp_path, size=MiB):
    data = make_image_file(tmp_path / "golden.raw", size)
    done = service.client("import_image", "golden", str(tmp_path / "golden.raw"))
    assert done.returncode == 0, done.stderr
    return data


# 1. The name server


def test_a_killed_name_server_finds_the_main_server_again_once_restarted(service):
    service.nameserver.kill()   # SIGKILL: no clean stop, the registrations are simply gone
    service.nameserver.wait(10)
    restarted = time.monotonic()
    service.start_nameserver()
    wait_until(lambda: service.client("list_all_images").returncode == 0, 30, "main server found again")
    assert time.monotonic() - restarted < 10
    assert service.mainserver.poll() is None   # it registered again by itself, without a restart


# 2. The main server killed halfway through a provision


def command_lines():
    """The argument list of every process running now."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().decode(errors="replace").split("\0")[:-1]
        except OSError:   # gone meanwhile
            continue
        if args:   # kernel threads have none
            yield args


def tgtadm_calls(tgtd):
    """The argument lists of the tgtadm processes running on this tgtd."""
    return [args for args in command_lines()
            if os.path.basename(args[0]) == "tgtadm" and args[1:3] == ["-C", str(tgtd.control)]]


def provision_killed_halfway(service, settings, tgtd, node):
    """Run mainclient provision; with tgtd frozen, SIGKILL the main server once the node's disk is made
    and its target script waits for tgtd. Returns the client's exit code, stdout and stderr."""
    client = subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), "provision", "golden", node],
                              env=service.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: record_state(settings, node) is not None and has_disk(settings, node) and
                   any("new" in call for call in tgtadm_calls(tgtd)), 60, "%s's target being made" % node)
        service.mainserver.kill()
        service.mainserver.wait(10)
        out, err = client.communicate(timeout=60)
        return client.returncode, out, err
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)


def test_a_main_server_killed_halfway_through_provision_undoes_it_when_it_starts_again(service, settings, tgtd,
                                                                                       tmp_path):
    golden = import_golden(service, tmp_path)
    before = state_of(settings, tgtd)
    with frozen(tgtd.proc.pid):   # the target script blocks in tgtadm: the provision stops after the clone
        code, out, err = provision_killed_halfway(service, settings, tgtd, "node-a")
    assert (code, out) == (3, ""), err   # the client lost its server
    assert "cannot reach the main server" in err

    assert record_state(settings, "node-a") == EXPORTING   # its disk made, its target not yet: unfinished

    service.start_mainserver()
    service.wait_ready()
    # taken back: no record, boot script, disk, target or CHAP account is left, and none was listed
    eventually_equal(lambda: state_of(settings, tgtd), before, 30)
    assert json.loads(service.client("--json", "list_all_images").stdout)["nodes"] == []

    # no lock or record left in the way of the same node
    done = service.client("provision", "golden", "node-a")
    assert done.returncode == 0, done.stderr
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "again.raw") == golden
    assert service.client("detach_node", "node-a").returncode == 0
    assert state_of(settings, tgtd) == before


def test_a_killed_main_server_leaves_no_command_of_its_scripts_running(service, settings, tgtd, tmp_path):
    import_golden(service, tmp_path)
    with frozen(tgtd.proc.pid):
        provision_killed_halfway(service, settings, tgtd, "node-a")
        # An orphan tgtadm would make its target as soon as tgtd goes on: maybe after a restarted
        # server took the half-made node away, leaving a target nobody knows of.
        wait_until(lambda: not tgtadm_calls(tgtd), 10, "the target script's tgtadm gone with the server")


# 3. tgtd killed and restarted


def test_tgtd_restarted_twice_gives_back_every_target_and_chap_account(service, settings, tgtd, tmp_path):
    golden = import_golden(service, tmp_path)
    nodes = ["node-a", "node-b", "node-c"]
    for node in nodes:
        assert service.client("provision", "golden", node).returncode == 0
    exported = tgtd.exports()
    assert {iqn: (target["accounts"], target["acl"]) for iqn, target in exported.items()} == {
        settings.BMI_IQN_PREFIX + ":" + node: ([node], ["ALL"]) for node in nodes}

    for _ in range(2):   # twice: what the first recovery did is not in the way of the second
        tids = tgtd.targets()
        tgtd.restart()
        eventually_equal(lambda: (tgtd.targets(), tgtd.exports(), tgtd.accounts()), (tids, exported, nodes), 20)
    assert service.mainserver.poll() is None   # no main server restart
    for node in nodes:
        assert read_lun(lun_url(settings, node), tmp_path / (node + ".raw")) == golden
    with pytest.raises(subprocess.CalledProcessError):   # CHAP is required again, not only the account back
        read_lun(lun_url(settings, "node-b", credentials=False), tmp_path / "anonymous.raw")


# 4. A script that hangs


@pytest.fixture
def impatient_server(server_with):
    """An in-process main server whose scripts may run 3 s, checking tgtd in the background as the real one does."""
    main = server_with(BMI_SCRIPT_TIMEOUT="3")
    stop = threading.Event()
    checker = threading.Thread(target=main.keep_targets_exported, args=(stop,), daemon=True)
    checker.start()
    yield main
    stop.set()
    checker.join(30)


def test_a_hanging_script_times_out_and_the_provision_is_taken_back(impatient_server, settings, tgtd, tmp_path):
    golden = make_image_file(tmp_path / "golden.raw", MiB)
    impatient_server.import_image("golden", str(tmp_path / "golden.raw"))
    before = state_of(settings, tgtd)
    with frozen(tgtd.proc.pid):
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=r"^cannot export .*:node-a: no answer within 3 s \(BMI_SCRIPT_TIMEOUT\)$"):
            impatient_server.provision("golden", "node-a")
        assert time.monotonic() - started < 30   # create and its undo each time out after 3 s
    eventually_equal(lambda: state_of(settings, tgtd), before, 30)   # the background check finishes the undo

    impatient_server.provision("golden", "node-a")
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == golden
    impatient_server.detach_node("node-a")
    assert state_of(settings, tgtd) == before


# 5. A full disk


@pytest.mark.parametrize("backend", ["file"], indirect=True)
def test_an_import_that_does_not_fit_names_where_and_leaves_nothing(small_service, settings, tgtd, tmp_path):
    """The file backend keeps golden images in the state directory, here a 3 MiB tmpfs."""
    make_image_file(tmp_path / "big.raw", 8 * MiB)
    before = state_of(settings, tgtd)
    done = small_service.client("import_image", "big", str(tmp_path / "big.raw"))
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.startswith("mainclient: import_image failed: cannot write image big in %s/images: "
                                  % settings.BMI_STATE_DIR) and done.stderr.endswith("No space left on device\n")
    assert done.stderr.count("\n") == 1 and "qemu-img" not in done.stderr, done.stderr
    assert state_of(settings, tgtd) == before   # no partial file left


def test_a_full_state_directory_fails_provision_cleanly_and_the_service_goes_on(small_service, settings, tgtd,
                                                                                 tmp_path):
    golden = import_golden(small_service, tmp_path)
    filler = os.path.join(settings.BMI_STATE_DIR, FILLER)
    if settings.BMI_BACKEND == "file":
        # node disks are 1 MiB copies in the state directory: provision until one does not fit
        for number in range(5):
            node = "node-%d" % number
            before = state_of(settings, tgtd)
            done = small_service.client("provision", "golden", node)
            if done.returncode != 0:
                break
    else:
        # the state directory holds only records, boot scripts and the audit log: leave it no room
        node = "node-0"
        fill_up(filler)
        before = state_of(settings, tgtd)
        done = small_service.client("provision", "golden", node)
    assert (done.returncode, done.stdout, done.stderr.count("\n")) == (1, "", 1), done.stderr
    assert done.stderr.startswith("mainclient: provision failed: ") and "No space left on device" in done.stderr
    if settings.BMI_BACKEND == "file":   # the copy that did not fit names where it went
        assert "cannot write a disk of node %s in %s/disks: " % (node, settings.BMI_STATE_DIR) in done.stderr
    # nothing half written: no partial file, no record of the node, no target, no disk
    assert state_of(settings, tgtd) == before

    if settings.BMI_BACKEND == "file":
        assert small_service.client("detach_node", "node-0").returncode == 0
    else:
        os.unlink(filler)
    done = small_service.client("provision", "golden", node)
    assert done.returncode == 0, done.stderr
    assert read_lun(lun_url(settings, node), tmp_path / "back.raw") == golden


def test_an_audit_log_that_cannot_be_written_does_not_fail_operations(settings, tgtd, tmp_path, caplog):
    golden = make_image_file(tmp_path / "golden.raw", MiB)
    audit_dir = str(tmp_path / "audit")
    with tmpfs(audit_dir, 64 * 1024):
        filler = os.path.join(audit_dir, "filler")
        fill_up(filler)   # before the server opens its log: not one line fits
        with MainServer(variant(settings, BMI_AUDIT_LOG=os.path.join(audit_dir, "audit.log"))) as main:
            # each operation is done, and says so, though its audit line could not be written
            assert main.import_image("golden", str(tmp_path / "golden.raw"))["image"] == "golden"
            assert main.provision("golden", "node-a")["node"] == "node-a"
            assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == golden
            assert main.detach_node("node-a")["node"] == "node-a"
            listing = main.list_all_images()
            assert (listing["images"], listing["nodes"]) == ([{"name": "golden", "size_bytes": MiB}], [])
            unwritten = [r.getMessage() for r in caplog.records if "cannot write the audit log" in r.getMessage()]
            assert [json.loads(m.split("the line was ", 1)[1])["operation"] for m in unwritten] == [
                "import_image", "provision", "detach_node", "list_all_images"]

            os.unlink(filler)   # room again: every line that makes it to the log is whole
            main.list_all_images()
        with open(os.path.join(audit_dir, "audit.log")) as f:
            lines = [json.loads(line) for line in f]
        assert [(line["operation"], line["outcome"]) for line in lines] == [("list_all_images", "ok")]


def test_a_main_server_that_cannot_write_its_key_file_says_so_and_leaves_no_partial_file(settings, tmp_path):
    key_dir = str(tmp_path / "keys")
    with tmpfs(key_dir, 64 * 1024):
        fill_up(os.path.join(key_dir, "filler"))
        key_file = os.path.join(key_dir, "hmac.key")
        service = Service(variant(settings, BMI_KEY_FILE=key_file), str(tmp_path))
        service.start_mainserver()
        try:
            assert service.mainserver.wait(30) != 0
        finally:
            stop_process(service.mainserver)
        assert os.listdir(key_dir) == ["filler"]
    log = service.log("mainserver")
    assert "No space left on device" in log and key_file in log, log


def clones_running(nodes):
    """Which of nodes have a storage "clone" script running now."""
    script = os.path.join(ROOT, "scripts", "storage", "rbd")
    return {args[-1] for args in command_lines() if args[-4:-2] == [script, "clone"]} & set(nodes)


@pytest.mark.parametrize("backend", ["rbd"], indirect=True)
def test_a_burst_of_provisions_clones_only_a_few_disks_at_a_time(server_with, ceph_cluster, tmp_path):
    """BMI_CLONE_CONCURRENCY=2: with the monitor frozen, four provisions at once run two clones, not
    four; all four end well once the monitor goes on. (rbd only: a file clone cannot be held half way.
    The monitor, not the OSD: a clone's new rbd process waits for the monitor, while the records'
    helper, connected already, writes to the OSD.)"""
    main = server_with(BMI_CLONE_CONCURRENCY=2)
    make_image_file(tmp_path / "golden.raw", MiB)
    main.import_image("golden", str(tmp_path / "golden.raw"))
    nodes = ["burst-%d" % i for i in range(4)]
    threads = [threading.Thread(target=main.provision, args=("golden", node)) for node in nodes]
    with frozen(ceph_cluster.pid("mon")):
        for thread in threads:
            thread.start()
        wait_until(lambda: len(clones_running(nodes)) == 2, 20, "two clones running")
        time.sleep(1)   # time for a third, if it were let in
        assert len(clones_running(nodes)) == 2
    for thread in threads:
        thread.join(120)
    assert sorted(n["node"] for n in main.list_all_images()["nodes"]) == nodes


@pytest.mark.parametrize("backend", ["rbd"], indirect=True)
def test_a_stalled_ceph_fails_a_provision_within_bmi_ceph_timeout_and_leaves_nothing(server_with, ceph_cluster,
                                                                                     settings, tgtd, tmp_path):
    """The monitor frozen: the clone's rbd, a new Ceph client, gives up after BMI_CEPH_TIMEOUT (5 s)
    with Ceph's reason, well within BMI_SCRIPT_TIMEOUT (60 s); once the monitor goes on, reconciling
    takes the half-made node away."""
    main = server_with(BMI_CEPH_TIMEOUT="5", BMI_SCRIPT_TIMEOUT="60")
    stop = threading.Event()
    checker = threading.Thread(target=main.keep_targets_exported, args=(stop,), daemon=True)
    checker.start()
    try:
        make_image_file(tmp_path / "golden.raw", MiB)
        main.import_image("golden", str(tmp_path / "golden.raw"))
        before = state_of(settings, tgtd)
        with frozen(ceph_cluster.pid("mon")):
            started = time.monotonic()
            with pytest.raises(Exception) as failed:
                main.provision("golden", "node-a")
            seconds = time.monotonic() - started
        assert seconds < 30, "the provision took %.0f s: %s" % (seconds, failed.value)
        assert "BMI_SCRIPT_TIMEOUT" not in str(failed.value), failed.value   # Ceph's limit, not the kill
        eventually_equal(lambda: state_of(settings, tgtd), before, 60)
    finally:
        stop.set()
        checker.join(30)

