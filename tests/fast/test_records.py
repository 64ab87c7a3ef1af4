"""Node records: a named type, stored whole or not at all, read back by a restarted server."""
import json
import os
import stat

import pytest

from bmi.files import write_private
from bmi.nodes import READY, Backing, NodeExists, NodeRecord, NodeRecords


def a_record(node="node-a", **fields):
    return NodeRecord(node=node, image="golden", iqn="iqn.2026-11.io.bmi-rpc:" + node, chap_user=node,
                      chap_secret="s3cret-s3cret", **fields)


def test_a_record_survives_a_restart_with_its_backing_store(tmp_path):
    records = NodeRecords(str(tmp_path / "nodes"))
    records.load()
    record = a_record()
    records.add(record)
    ready = record.changed(state=READY, backing=Backing("rbd", "pool/node.node-a", "conf=/c;id=bmi"))
    records.save(ready)
    again = NodeRecords(str(tmp_path / "nodes"))
    again.load()
    assert again.all() == [ready] and again.get("node-a").backing.bstype == "rbd"
    path = tmp_path / "nodes" / "node-a.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600   # it holds the CHAP secret
    assert json.loads(path.read_text())["schema"] == NodeRecord.SCHEMA


def test_a_second_record_of_a_node_is_refused(tmp_path):
    records = NodeRecords(str(tmp_path))
    records.load()
    records.add(a_record())
    with pytest.raises(NodeExists, match="node node-a is already provisioned"):
        records.add(a_record())


def test_a_record_that_cannot_be_written_leaves_nothing(tmp_path):
    records = NodeRecords(str(tmp_path / "nodes"))
    records.load()
    os.rmdir(tmp_path / "nodes")   # the record cannot be written there now
    with pytest.raises(OSError, match="cannot write .*node-a.json"):
        records.add(a_record())
    assert records.get("node-a") is None


def test_a_record_of_another_schema_is_refused_by_name(tmp_path):
    (tmp_path / "node-a.json").write_text(json.dumps({"node": "node-a", "schema": 99}))
    with pytest.raises(ValueError, match="node-a.json: node record of schema 99; this server reads schema 1"):
        NodeRecords(str(tmp_path)).load()


def test_delete_and_partial_files_a_crash_left(tmp_path):
    records = NodeRecords(str(tmp_path))
    (tmp_path / ".node-b.json.x1y2.partial").write_text("{")
    records.load()
    assert os.listdir(tmp_path) == []
    records.add(a_record())
    records.delete("node-a")
    records.delete("node-a")   # gone already is fine
    assert records.all() == [] and os.listdir(tmp_path) == []


def test_write_private_replaces_whole_or_links_only_a_new_file(tmp_path):
    path = str(tmp_path / "key")
    write_private(path, "one\n", replace=False)
    with pytest.raises(FileExistsError):
        write_private(path, "two\n", replace=False)
    write_private(path, "three\n")
    assert open(path).read() == "three\n" and os.listdir(tmp_path) == ["key"]
