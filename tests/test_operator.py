"""An operator's mistakes are refused, not destructive: a second main server on the same state or
tgtd, ports in use, a full disk or a stuck disk during detach, loopback boot portals, rotated logs.
Messages speak of images, nodes and targets, never of the scripts behind them."""
import json
import os
import subprocess
import sys
import time

import pytest

from bmi.exports import MADE
from config import ROOT
from mainserver import MainServer
from testkit.daemons import free_port, wait_until
from testkit.filesystems import fill_up
from testkit.fixtures import FILLER, state_of
from testkit.images import MiB, make_image_file
from testkit.initiator import lun_url, node_record, read_lun
from testkit.service import Service, audit_lines, variant

file_only = pytest.mark.parametrize("backend", ["file"], indirect=True)


def import_golden(service, tmp_path, size=MiB):
    data = make_image_file(tmp_path / "golden.raw", size)
    done = service.client("import_image", "golden", str(tmp_path / "golden.raw"))
    assert done.returncode == 0, done.stderr
    return data


def program(settings, name, workdir, **changes):
    """Run a server program to its end (a refused one ends at once); its exit code and stderr."""
    env = dict(os.environ, **variant(settings, **changes).environment())
    done = subprocess.run([sys.executable, os.path.join(ROOT, name + ".py")], env=env, cwd=workdir,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


# --- one owner -------------------------------------------------------------------------------------

def test_a_second_main_server_started_during_a_burst_changes_nothing(service, settings, tgtd, tmp_path):
    golden = import_golden(service, tmp_path)
    nodes = ["d%02d" % i for i in range(12)]
    clients = [subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), "provision", "golden", node],
                                env=service.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for node in nodes]
    wait_until(lambda: tgtd.targets(), 60, "provisions under way")

    code, err = program(settings, "mainserver", str(tmp_path))   # the same settings, by mistake
    assert code == 1 and err.count("\n") == 1, err
    assert err == ("mainserver: the state directory %s belongs to the main server with process id %d "
                   "(it holds %s)\n" % (settings.BMI_STATE_DIR, service.mainserver.pid,
                                        os.path.join(settings.BMI_STATE_DIR, "lock")))

    outcomes = [(client.wait(120), client.stderr.read()) for client in clients]
    assert outcomes == [(0, "")] * len(nodes)
    assert [n["node"] for n in service.list_all_images()["nodes"]] == nodes
    assert sorted(tgtd.targets().values()) == [settings.BMI_IQN_PREFIX + ":" + node for node in nodes]
    assert read_lun(lun_url(settings, "d07"), tmp_path / "d07.raw") == golden
    assert "taking it away" not in service.log("mainserver")


@file_only
def test_a_second_main_server_on_the_same_tgtd_is_refused(service, settings, tgtd, tmp_path):
    code, err = program(settings, "mainserver", str(tmp_path), BMI_STATE_DIR=str(tmp_path / "other"),
                        BMI_SERVER_PORT=free_port())
    assert (code, err) == (1, "mainserver: tgtd at control port %d belongs to the main server with process id %d "
                              "(it holds /run/lock/bmi-rpc-tgtd-%d.lock)\n"
                           % (tgtd.control, service.mainserver.pid, tgtd.control))
    assert not os.path.exists(tmp_path / "other" / "nodes")   # it read and changed nothing


@file_only
@pytest.mark.parametrize("name, setting", [("mainserver", "BMI_SERVER_PORT"), ("nameserver", "BMI_NS_PORT")])
def test_a_port_in_use_is_one_line_naming_it(service, settings, tmp_path, name, setting):
    code, err = program(settings, name, str(tmp_path), BMI_STATE_DIR=str(tmp_path / "other"),
                        BMI_TGT_CONTROL_PORT=free_port() % 30000 + 1)
    port = getattr(settings, setting)
    assert (code, err) == (1, "%s: port %d on 127.0.0.1 is in use by another program (%s)\n" % (name, port, setting))


# --- a reply tells the truth ---------------------------------------------------------------------

def still_provisioned(service, settings, tgtd, node):
    listed = [n["node"] for n in service.list_all_images()["nodes"]]
    return (node in listed and node_record(settings, node)["state"] == "ready"
            and settings.BMI_IQN_PREFIX + ":" + node in tgtd.targets().values())


@file_only   # with rbd, a detach writes no file of the state directory: its records are in the cluster
def test_a_full_disk_during_detach_leaves_the_node_provisioned(small_service, settings, tgtd, tmp_path):
    golden = import_golden(small_service, tmp_path, 256 * 1024)
    assert small_service.client("provision", "golden", "node-a").returncode == 0
    filler = os.path.join(settings.BMI_STATE_DIR, FILLER)
    fill_up(filler)
    done = small_service.client("detach_node", "node-a")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("mainclient: detach_node failed: cannot write %s: No space left on device\n"
                           % os.path.join(settings.BMI_STATE_DIR, "nodes", "node-a.json"))
    # as the reply says: provisioned, exported, listed; and it stays so, reconciling or not
    for _ in range(8):   # BMI_TGT_CHECK_SECONDS is 0.5: several rounds of the background check
        assert still_provisioned(small_service, settings, tgtd, "node-a")
        time.sleep(0.5)
    assert MADE % ("node-a", settings.BMI_IQN_PREFIX + ":node-a") not in small_service.log("mainserver")   # not made again
    os.unlink(filler)
    assert still_provisioned(small_service, settings, tgtd, "node-a")   # it did not finish on its own
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == golden
    assert small_service.client("detach_node", "node-a").returncode == 0
    assert small_service.list_all_images()["nodes"] == []


@file_only
def test_a_disk_that_cannot_be_removed_gives_the_node_back(service, settings, tgtd, tmp_path):
    golden = import_golden(service, tmp_path)
    assert service.client("provision", "golden", "node-a").returncode == 0
    before = state_of(settings, tgtd)
    disks = os.path.join(settings.BMI_STATE_DIR, "disks")
    subprocess.run(["chattr", "+i", disks], check=True)   # no file in it can be removed, each still written
    try:
        done = service.client("detach_node", "node-a")
    finally:
        subprocess.run(["chattr", "-i", disks], check=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("mainclient: detach_node failed: cannot remove the disk of node node-a: ")
    assert "Operation not permitted" in done.stderr
    # its target was taken away, then given back: the node is as it was, CHAP account and all
    assert state_of(settings, tgtd)["files"] == before["files"]
    assert still_provisioned(service, settings, tgtd, "node-a") and tgtd.accounts() == ["node-a"]
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == golden


# --- clear words ---------------------------------------------------------------------------------

def test_failures_speak_of_images_nodes_and_targets_not_scripts(service, settings, tgtd, tmp_path):
    import_golden(service, tmp_path)
    said = [service.client("import_image", "golden", str(tmp_path / "golden.raw")),
            service.client("provision", "missing", "node-a"),
            service.client("create_snapshot", "node-x", "snap"),
            service.client("detach_node", "node-x")]
    assert service.client("provision", "golden", "node-a").returncode == 0
    said.append(service.client("create_snapshot", "node-a", "golden"))
    tgtd.stop()
    said.append(service.client("provision", "golden", "node-b"))
    tgtd.start()
    messages = [done.stderr for done in said]
    assert [done.returncode for done in said] == [5, 4, 4, 4, 5, 1], messages   # exists, not found..., failed
    assert messages == [
        "mainclient: import_image failed: image golden already exists\n",
        "mainclient: provision failed: no such image: missing\n",
        "mainclient: create_snapshot failed: node node-x is not provisioned\n",
        "mainclient: detach_node failed: node node-x is not provisioned\n",
        "mainclient: create_snapshot failed: image golden already exists\n",
        "mainclient: provision failed: cannot export %s:node-b: tgtd is not running (no tgtd answers on "
        "control port %d)\n" % (settings.BMI_IQN_PREFIX, tgtd.control)]
    for text in messages + [line["outcome"] for line in audit_lines(settings)]:
        for leak in ("scripts/", "storage/", "tgtadm", ".img", "rbd:", "Traceback"):
            assert leak not in text, text


@pytest.mark.parametrize("portal, warned", [("127.0.0.1:3260", True), ("0.0.0.0:3260", True),
                                            ("10.0.2.2:3260", False)])
def test_a_boot_portal_nodes_cannot_reach_is_warned_of_at_start(settings, caplog, portal, warned):
    with MainServer(variant(settings, BMI_BOOT_PORTAL=portal)):
        pass
    warnings = [r.getMessage() for r in caplog.records if "which no node can reach" in r.getMessage()]
    assert bool(warnings) == warned
    if warned:
        assert warnings == ["boot scripts send nodes to %s, which no node can reach: set BMI_BOOT_PORTAL to the "
                            "address:port at which nodes reach this host's tgtd" % portal]


# --- logs that survive rotation ------------------------------------------------------------------

@file_only
def test_logrotate_moves_the_audit_log_and_the_server_log_and_both_go_on(settings, tmp_path):
    log_file = str(tmp_path / "mainserver.log")
    service = Service(variant(settings, BMI_LOG_FILE=log_file), str(tmp_path))
    try:
        service.start()
        assert service.client("list_all_images").returncode == 0
        config = tmp_path / "logrotate.conf"
        config.write_text("%s %s {\n    rotate 3\n    missingok\n    nocompress\n}\n" % (settings.BMI_AUDIT_LOG, log_file))
        subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "logrotate.state"), str(config)],
                       check=True, timeout=60)
        assert service.client("ping").returncode == 0 and service.client("list_all_images").returncode == 0
        service.stop()   # its last lines ("stopped") go to the new log too
    finally:
        service.stop()
    with open(settings.BMI_AUDIT_LOG + ".1") as old, open(settings.BMI_AUDIT_LOG) as new:
        assert [json.loads(line)["operation"] for line in old] == ["list_all_images"] * 2   # wait_ready's and ours
        assert [json.loads(line)["operation"] for line in new] == ["list_all_images"]
    with open(log_file + ".1") as old, open(log_file) as new:   # both servers' log, as set for both here
        assert " mainserver INFO serving " in old.read()
        assert " mainserver INFO stopped" in new.read()
