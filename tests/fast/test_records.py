"""Node records: a named type, kept whole or not at all, read back by a restarted server; changes
that expect a version the record no longer has are refused."""
import json
import os
import stat

import pytest

from bmi.files import write_private
from bmi.errors import AlreadyExists, InUse
from bmi.nodes import (DETACHING, EXPORTING, GONE, READY, TRANSITIONS, Backing, Changed, IllegalTransition,
                       NodeRecord)
from bmi.records import FileRecords


def a_record(node="node-a", **fields):
    return NodeRecord(node=node, image="golden", iqn="iqn.2026-11.io.bmi-rpc:" + node, chap_user=node,
                      chap_secret="s3cret-s3cret", gateway="gw-a", **fields)


@pytest.fixture
def records(tmp_path):
    store = FileRecords(str(tmp_path / "nodes"))
    store.load()
    return store


def test_a_record_survives_a_restart_with_its_backing_store(records, tmp_path):
    added = records.add(a_record())
    exporting = records.move(added, EXPORTING, backing=Backing("rbd", "pool/node.node-a", "conf=/c;id=bmi"))
    ready = records.move(exporting, READY, gateway=None)
    again = FileRecords(str(tmp_path / "nodes"))
    again.load()
    assert again.all() == [ready] and again.get("node-a").backing.bstype == "rbd"
    path = tmp_path / "nodes" / "node-a.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600   # it holds the CHAP secret
    stored = json.loads(path.read_text())
    assert stored["schema"] == NodeRecord.SCHEMA and "version" not in stored


def test_a_second_record_of_a_node_is_refused(records):
    records.add(a_record())
    with pytest.raises(InUse, match="node node-a is being provisioned by gateway gw-a"):
        records.add(a_record())
    records.move(records.move(records.get("node-a"), EXPORTING), READY)
    with pytest.raises(AlreadyExists, match="node node-a is already provisioned"):
        records.add(a_record())


def test_a_change_from_an_old_version_is_refused(records):
    added = records.add(a_record())
    records.move(added, EXPORTING)
    with pytest.raises(Changed):
        records.move(added, EXPORTING)
    with pytest.raises(Changed):
        records.delete(added)
    records.delete(records.move(records.get("node-a"), DETACHING))
    assert records.all() == []


def test_a_record_that_cannot_be_written_leaves_nothing(records, tmp_path):
    os.rmdir(tmp_path / "nodes")   # the record cannot be written there now
    with pytest.raises(OSError, match="cannot write .*node-a.json"):
        records.add(a_record())
    assert records.get("node-a") is None


def test_a_record_of_another_schema_is_refused_by_name(tmp_path):
    (tmp_path / "node-a.json").write_text(json.dumps({"node": "node-a", "schema": 99}))
    with pytest.raises(ValueError, match="node-a.json: node record of schema 99; this server reads schemas 1 to 5"):
        FileRecords(str(tmp_path)).load()


def test_partial_files_a_crash_left_are_removed(tmp_path):
    (tmp_path / ".node-b.json.x1y2.partial").write_text("{")
    FileRecords(str(tmp_path)).load()
    assert os.listdir(tmp_path) == []


def test_write_private_replaces_whole_or_links_only_a_new_file(tmp_path):
    path = str(tmp_path / "key")
    write_private(path, "one\n", replace=False)
    with pytest.raises(FileExistsError):
        write_private(path, "two\n", replace=False)
    write_private(path, "three\n")
    assert open(path).read() == "three\n" and os.listdir(tmp_path) == ["key"]


def test_a_node_moves_only_between_the_states_its_transitions_allow(tmp_path):
    """Walk every pair of states: the moves of nodes.TRANSITIONS hold, every other is refused and
    changes nothing."""
    states = [GONE] + [state for state in TRANSITIONS if state is not GONE]
    for old in states:
        for new in states:
            if old is GONE and new is GONE:
                continue
            records = FileRecords(str(tmp_path / ("%s-%s" % (old, new))))
            records.load()
            record = records._create(a_record(state=old)) if old is not GONE else None   # a store in state old
            allowed = new in TRANSITIONS[old]
            try:
                if old is GONE:
                    records.add(a_record(state=new))
                elif new is GONE:
                    records.delete(record)
                else:
                    records.move(record, new)
                moved = True
            except IllegalTransition:
                moved = False
            assert moved == allowed, "%s -> %s" % (old, new)
            current = records.get("node-a")
            assert (current.state if current else GONE) == (new if allowed else old), "%s -> %s" % (old, new)
