"""Exports and Recovery (bmi/exports.py, bmi/recovery.py) on their own, built as MainServer builds
them for its one gateway, over real parts: a private tgtd, the file storage backend, file records,
named locks and boot scripts in a state directory. No main server, no Pyro4: each test calls the two
classes directly and checks tgtd, the state directory and a real initiator."""
import concurrent.futures
import logging
import os
import secrets
import subprocess

import pytest

from bmi.bootscripts import BootScripts
from bmi.exports import MADE, Exports
from bmi.gateways import Gateways
from bmi.locks import NamedLocks
from bmi.nodes import DETACHING, EXPORTING, PROVISIONING, READY, GatewayRecord, NodeRecord
from bmi.records import FileRecords, records_for
from bmi.recovery import Recovery
from bmi.runner import CommandFailed
from bmi.storage import Storage
from bmi.target import Target
from testkit.daemons import require_command
from testkit.images import MiB, make_image_file
from testkit.initiator import lun_url, read_lun

pytestmark = pytest.mark.parametrize("backend", ["file"], indirect=True)


class Parts:
    """Exports and Recovery over the parts MainServer.__init__ makes and start() opens: its storage,
    target, records (loaded from the state directory), its one gateway, boot scripts and locks.
    A second Parts on the same settings is a restarted server."""

    def __init__(self, settings):
        os.makedirs(settings.BMI_STATE_DIR, mode=0o700, exist_ok=True)
        self.settings = settings
        self.storage = Storage(settings)
        self.target = Target(settings)
        self.records = records_for(settings)
        assert isinstance(self.records, FileRecords)
        self.gateways = Gateways(self.records, settings.BMI_GATEWAY, settings.BMI_PEER_TIMEOUT)
        self.boot_scripts = BootScripts(os.path.join(settings.BMI_STATE_DIR, "boot"))
        self.locks = NamedLocks()
        self.exports = Exports(settings, self.target, self.boot_scripts, self.gateways, self.records, self.locks)
        self.recovery = Recovery(self.records, self.storage, self.exports, self.gateways, self.locks)
        self.boot_scripts.open()
        self.records.load()
        self.records.put_gateway(GatewayRecord(self.gateways.name, settings.BMI_ISCSI_PORTAL,
                                               settings.BMI_BOOT_PORTAL, None))

    def provisioned(self, node, until=READY, gateway=None, exported=True):
        """node's record, written through the records API as provision writes it, up to the state
        until (DETACHING: a detach begun after it was ready), on behalf of gateway (this one by
        default); its disk cloned from "golden" from EXPORTING on, and exported here if exported."""
        gateway = gateway or self.gateways.name
        record = self.records.add(NodeRecord(node=node, image="golden", iqn=self.target.iqn(node), chap_user=node,
                                             chap_secret=secrets.token_urlsafe(12), gateway=gateway))
        if until == PROVISIONING:
            return record
        record = self.records.move(record, EXPORTING, backing=self.storage.clone("golden", node))
        if exported:
            self.exports.export(record)
        if until == EXPORTING:
            return record
        record = self.records.move(record, READY, gateway=None)
        if until == DETACHING:
            record = self.records.move(record, DETACHING, gateway=gateway)
        return record

    def forget(self, node):
        """Delete node's record through the records API (by way of detaching), leaving the rest."""
        record = self.records.get(node)
        if record.state == READY:
            record = self.records.move(record, DETACHING, gateway=self.gateways.name)
        self.records.delete(record)


@pytest.fixture
def parts(settings, tgtd, tmp_path):
    """The parts, with golden image "golden" (1 MiB of random bytes, as parts.golden) imported."""
    built = Parts(settings)
    built.golden = make_image_file(tmp_path / "golden.raw", MiB)
    built.storage.import_image("golden", str(tmp_path / "golden.raw"))
    return built


def left_of(parts, tgtd, node):
    """What there is of node: its target and CHAP account in tgtd, boot script, disk, record (kept
    and on disk)."""
    state_dir = parts.settings.BMI_STATE_DIR
    return {"target": parts.target.iqn(node) in tgtd.targets().values(),
            "account": node in tgtd.accounts(),
            "boot script": os.path.exists(parts.boot_scripts.path(node)),
            "disk": os.path.exists(os.path.join(state_dir, "disks", node + ".img")),
            "record": parts.records.get(node) is not None,
            "record file": os.path.exists(os.path.join(state_dir, "nodes", node + ".json"))}


WITHDRAWN = {"target": False, "account": False, "boot script": False}
EXPORTED = {what: True for what in WITHDRAWN}
HELD = {"disk": True, "record": True, "record file": True}   # its disk and record are there
EXPORTED_HERE = dict(EXPORTED, **HELD)        # left_of a node provisioned and exported here
WITHDRAWN_HERE = dict(WITHDRAWN, **HELD)      # left_of a node provisioned, not exported here
GONE = {what: False for what in EXPORTED_HERE}


def withdrawn(left):
    return {what: left[what] for what in WITHDRAWN}


def discovered(tgtd):
    """The target names a real initiator (iscsi-ls, a SendTargets discovery) finds at tgtd's portal."""
    require_command("iscsi-ls", "libiscsi-bin")
    listing = subprocess.run(["iscsi-ls", "iscsi://" + tgtd.portal], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    return sorted(word[len("Target:"):] for word in listing.stdout.split() if word.startswith("Target:"))


def delete_behind_its_back(tgtd, iqn, node, account=True):
    """Remove node's target with tgtadm, and its CHAP account (as a tgtd restart loses both) unless not account."""
    assert tgtd.admin("--op", "delete", "--mode", "target", "--tid", str(tgtd.tid(iqn)), "--force").returncode == 0
    if account:
        assert tgtd.admin("--op", "delete", "--mode", "account", "--user", node).returncode == 0


@pytest.fixture
def undeletable_disks(parts):
    """A function that makes the disks directory immutable (chattr +i: no disk in it can be removed)
    until it is called with False, or the test ends."""
    disks = os.path.join(parts.settings.BMI_STATE_DIR, "disks")

    def undeletable(on=True):
        subprocess.run(["chattr", "+i" if on else "-i", disks], check=True)

    yield undeletable
    undeletable(False)


# --- Exports ---------------------------------------------------------------------------------------

def test_export_serves_the_disk_and_writes_the_boot_script_and_withdraw_removes_both(parts, settings, tgtd,
                                                                                      tmp_path):
    other = parts.provisioned("node-b")   # a target more: tgtd ends a discovery that would find none
    record = parts.provisioned("node-a", until=EXPORTING, exported=False)
    assert parts.exports.exported_nodes() == ["node-b"]

    parts.exports.export(record)
    assert parts.exports.exported_nodes() == ["node-a", "node-b"]
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE
    assert discovered(tgtd) == [record.iqn, other.iqn]
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "read.raw") == parts.golden   # CHAP login, LUN 1
    with open(parts.boot_scripts.path("node-a")) as f:
        script = f.read()
    assert script == "#!ipxe\nisset ${ip} || dhcp\nset username node-a\nset password %s\nsanboot iscsi:%s::%s:1:%s\n" % (
        record.chap_secret, *settings.BMI_BOOT_PORTAL.rsplit(":", 1), record.iqn)
    assert parts.exports.logged_in("node-a") == []   # the initiator logged out again

    parts.exports.withdraw("node-a")
    assert parts.exports.exported_nodes() == ["node-b"]
    assert left_of(parts, tgtd, "node-a") == WITHDRAWN_HERE
    assert left_of(parts, tgtd, "node-b") == EXPORTED_HERE   # only the node withdrawn
    assert discovered(tgtd) == [other.iqn]
    with pytest.raises(subprocess.CalledProcessError):
        read_lun(lun_url(settings, "node-a"), tmp_path / "gone.raw")

    parts.exports.withdraw("node-a")   # what is gone already is fine
    Parts(settings).exports.withdraw("node-a")   # also for a server that never knew the target's tid
    assert withdrawn(left_of(parts, tgtd, "node-a")) == WITHDRAWN


def test_ensure_remakes_a_target_deleted_behind_its_back_and_leaves_an_exported_one(parts, settings, tgtd,
                                                                                    tmp_path, caplog):
    record = parts.provisioned("node-a")
    made = MADE % ("node-a", record.iqn)
    caplog.set_level(logging.INFO, logger="bmi.exports")

    targets = tgtd.targets()
    os.unlink(parts.boot_scripts.path("node-a"))
    parts.exports.ensure(record)   # exported: only the boot script is missing
    assert made not in caplog.messages
    assert tgtd.targets() == targets and tgtd.accounts() == ["node-a"]
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE

    delete_behind_its_back(tgtd, record.iqn, "node-a")
    assert parts.exports.exported_nodes() == []
    parts.exports.ensure(record)
    assert caplog.messages.count(made) == 1
    assert tgtd.targets() == targets   # made again, with its tid
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "read.raw") == parts.golden

    parts.exports.ensure(record)   # once more: it is there now
    assert caplog.messages.count(made) == 1
    assert tgtd.targets() == targets


def test_ensure_remakes_a_target_deleted_by_hand_that_left_its_chap_account(parts, settings, tgtd, tmp_path):
    record = parts.provisioned("node-a")
    delete_behind_its_back(tgtd, record.iqn, "node-a", account=False)   # tgtadm --op delete --mode target
    parts.exports.ensure(record)
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "read.raw") == parts.golden


def test_sync_exports_a_ready_node_and_withdraws_a_detaching_or_gone_one(parts, settings, tgtd):
    ready = parts.provisioned("node-a", exported=False)
    with parts.locks.hold("node:node-a"):   # as its callers do
        assert parts.exports.sync("node-a") is True
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE
    assert parts.exports.sync("node-a") is True   # in line already: stays
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE

    parts.records.move(ready, DETACHING, gateway=parts.gateways.name)
    assert parts.exports.sync("node-a") is False
    assert left_of(parts, tgtd, "node-a") == WITHDRAWN_HERE

    parts.provisioned("node-b")
    parts.forget("node-b")
    assert left_of(parts, tgtd, "node-b")["target"]
    assert parts.exports.sync("node-b") is False
    assert left_of(parts, tgtd, "node-b") == dict(WITHDRAWN, disk=True, record=False, **{"record file": False})
    assert parts.exports.sync("node-c") is False   # never there: nothing to do
    assert parts.exports.exported_nodes() == []

    parts.provisioned("node-p", until=PROVISIONING)   # its gateway's to finish: neither made nor removed
    assert parts.exports.sync("node-p") is False
    assert withdrawn(left_of(parts, tgtd, "node-p")) == WITHDRAWN


def test_bring_in_line_withdraws_targets_without_records_and_exports_ready_ones(parts, settings, tgtd, tmp_path):
    parts.provisioned("node-a")
    parts.provisioned("node-b")
    parts.forget("node-b")                                   # a target without a record
    parts.provisioned("node-c", exported=False)              # a ready node without a target
    provisioning = parts.provisioned("node-p", until=PROVISIONING)
    parts.exports.export(provisioning.changed(backing=parts.storage.clone("golden", "node-p")))   # half way
    parts.provisioned("node-q", until=PROVISIONING)          # not exported yet
    parts.provisioned("node-d", until=DETACHING)             # a detach under way

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with parts.locks.hold("node:node-p", "node:node-q"):   # as their provisions do, while they run
            pool.submit(parts.exports.bring_in_line).result(timeout=20)   # waits for neither
    assert parts.exports.exported_nodes() == ["node-a", "node-c", "node-p"]
    assert left_of(parts, tgtd, "node-a") == EXPORTED_HERE
    assert withdrawn(left_of(parts, tgtd, "node-b")) == WITHDRAWN
    assert left_of(parts, tgtd, "node-c") == EXPORTED_HERE
    assert read_lun(lun_url(settings, "node-c"), tmp_path / "c.raw") == parts.golden
    assert left_of(parts, tgtd, "node-p") == EXPORTED_HERE   # left alone, as it was
    assert withdrawn(left_of(parts, tgtd, "node-q")) == WITHDRAWN
    assert withdrawn(left_of(parts, tgtd, "node-d")) == WITHDRAWN

    targets = tgtd.targets()
    parts.exports.bring_in_line()   # in line: nothing changes
    assert tgtd.targets() == targets
    assert parts.exports.exported_nodes() == ["node-a", "node-c", "node-p"]


# --- Recovery --------------------------------------------------------------------------------------

def test_take_away_removes_target_boot_script_disk_and_record(parts, settings, tgtd):
    record = parts.provisioned("node-a")
    parts.provisioned("node-b")
    parts.recovery.take_away(record)
    assert left_of(parts, tgtd, "node-a") == GONE
    assert left_of(parts, tgtd, "node-b") == EXPORTED_HERE   # only the node taken away
    assert parts.recovery._unfinished == set()

    # from any state a node can be left in; here a provision undone half way
    parts.recovery.take_away(parts.provisioned("node-c", until=EXPORTING))
    parts.recovery.take_away(parts.provisioned("node-d", until=PROVISIONING))
    assert left_of(parts, tgtd, "node-c") == GONE and left_of(parts, tgtd, "node-d") == GONE
    assert parts.exports.exported_nodes() == ["node-b"]


def test_take_away_later_leaves_a_failure_to_finish(parts, settings, tgtd, undeletable_disks):
    record = parts.provisioned("node-a")
    parts.provisioned("node-b")
    undeletable_disks()
    with pytest.raises(CommandFailed, match="cannot remove the disk of node node-a: .*Operation not permitted"):
        parts.recovery.take_away(record)   # without later, the failure is raised
    assert parts.recovery._unfinished == set()
    record = parts.records.get("node-a")
    assert (record.state, record.gateway) == (DETACHING, parts.gateways.name)

    parts.recovery.take_away(parts.records.get("node-b"), later=True)   # not raised
    assert parts.recovery._unfinished == {"node-b"}
    assert left_of(parts, tgtd, "node-b") == WITHDRAWN_HERE
    assert parts.records.get("node-b").state == DETACHING

    with pytest.raises(CommandFailed):   # the cause is still there: still unfinished
        parts.recovery.finish()
    assert parts.recovery._unfinished == {"node-b"}

    undeletable_disks(False)
    parts.recovery.finish()
    assert parts.recovery._unfinished == set()
    assert left_of(parts, tgtd, "node-b") == GONE
    assert parts.records.get("node-a").state == DETACHING   # raised, not noted: left to the caller
    parts.recovery.finish()   # nothing more to do
    assert parts.recovery._unfinished == set()


def test_a_node_that_cannot_be_taken_away_keeps_no_other_unfinished(parts, tgtd, undeletable_disks):
    records = [parts.provisioned(node) for node in ("node-a", "node-b")]
    undeletable_disks()
    for record in records:
        parts.recovery.take_away(record, later=True)
    assert parts.recovery._unfinished == {"node-a", "node-b"}
    undeletable_disks(False)
    stuck_disk = os.path.join(parts.settings.BMI_STATE_DIR, "disks", "node-a.img")
    subprocess.run(["chattr", "+i", stuck_disk], check=True)   # node-a, first in finish's order, still fails
    try:
        with pytest.raises(CommandFailed, match="node-a"):
            parts.recovery.finish()
        assert left_of(parts, tgtd, "node-b") == GONE
        assert parts.recovery._unfinished == {"node-a"}
    finally:
        subprocess.run(["chattr", "-i", stuck_disk], check=True)
    parts.recovery.finish()
    assert left_of(parts, tgtd, "node-a") == GONE and parts.recovery._unfinished == set()


def test_load_and_finish_take_away_what_this_gateway_left_half_done(parts, settings, tgtd):
    parts.provisioned("node-p", until=PROVISIONING)
    parts.provisioned("node-e", until=EXPORTING)
    parts.provisioned("node-d", until=DETACHING)
    parts.provisioned("node-r")
    parts.provisioned("node-o", until=EXPORTING, gateway="gw-b")
    parts.provisioned("node-x", until=DETACHING, gateway="gw-b")

    restarted = Parts(settings)   # after a crash: records read back from their files
    restarted.recovery.load()
    assert restarted.recovery._unfinished == {"node-p", "node-e", "node-d"}
    restarted.recovery.finish()
    assert restarted.recovery._unfinished == set()
    for node in ("node-p", "node-e", "node-d"):
        assert left_of(restarted, tgtd, node) == GONE, node
    assert left_of(restarted, tgtd, "node-r") == EXPORTED_HERE   # ready: left alone
    assert left_of(restarted, tgtd, "node-o") == EXPORTED_HERE   # another gateway's: left alone
    assert restarted.records.get("node-x").state == DETACHING

    restarted.recovery.finish_for("gw-b")
    for node in ("node-o", "node-x"):
        assert left_of(restarted, tgtd, node) == GONE, node
    assert left_of(restarted, tgtd, "node-r") == EXPORTED_HERE
    assert sorted(r.node for r in restarted.records.all()) == ["node-r"]
    assert restarted.exports.exported_nodes() == ["node-r"]

    restarted.recovery.load()   # nothing left half done
    assert restarted.recovery._unfinished == set()
