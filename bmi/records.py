"""Where node and gateway records are kept: in files of one server's state directory (FileRecords),
or in RADOS, shared by every gateway (RadosRecords). The storage backend says which: its script's
line "# records: NAME" names a helper in scripts/records/ (scripts/README); none, files.

Both keep records the same way: adding is exclusive (one of two gateways adding a node wins),
saving and deleting hold only if the record is still the version read (else Changed), and every
read is fresh.
"""
import os
import threading

from bmi import runner
from bmi.files import remove_partials, write_private
from bmi.nodes import Changed, GatewayRecord, NodeExists, NodeRecord


def records_for(settings):
    helper = runner.declared(os.path.join(runner.SCRIPTS, "storage", settings.BMI_BACKEND), "records")[:1]
    if helper:
        return RadosRecords(runner.Helper("records", helper[0], settings))
    return FileRecords(os.path.join(settings.BMI_STATE_DIR, "nodes"))


class FileRecords:
    """One JSON file a node in a directory, kept in memory too; the one gateway, in memory only."""

    def __init__(self, directory):
        self.directory = directory
        self._lock = threading.Lock()
        self._records = {}
        self._gateways = {}

    def load(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        remove_partials(self.directory)
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json") and not name.startswith("."):
                path = os.path.join(self.directory, name)
                with open(path) as f:
                    record = NodeRecord.from_json(f.read(), path, version=1)
                self._records[record.node] = record

    def close(self):
        pass

    def get(self, node):
        with self._lock:
            return self._records.get(node)

    def all(self):
        with self._lock:
            return list(self._records.values())

    def add(self, record):
        """Save a new node's record; NodeExists if the node has one."""
        record = record.changed(version=1)
        with self._lock:
            if record.node in self._records:
                raise NodeExists(self._records[record.node])
            self._records[record.node] = record   # holds the name while the record is written
        try:
            self._write(record)
        except BaseException:   # a full disk, say: the node was never there
            with self._lock:
                del self._records[record.node]
            raise
        return record

    def save(self, record):
        """Replace the node's record, on disk whole or not at all, then in memory; the saved one."""
        self._expect(record)
        saved = record.changed(version=record.version + 1)
        self._write(saved)
        with self._lock:
            self._records[record.node] = saved
        return saved

    def delete(self, record):
        self._expect(record)
        try:
            os.unlink(self._path(record.node))
        except FileNotFoundError:
            pass
        with self._lock:
            self._records.pop(record.node, None)

    def gateways(self):
        return list(self._gateways.values())

    def put_gateway(self, gateway):
        self._gateways[gateway.name] = gateway

    def remove_gateway(self, name):
        self._gateways.pop(name, None)

    def _expect(self, record):
        current = self.get(record.node)
        if current is None or current.version != record.version:
            raise Changed("the record of node %s changed meanwhile" % record.node)

    def _path(self, node):
        return os.path.join(self.directory, node + ".json")

    def _write(self, record):
        write_private(self._path(record.node), record.to_json())


class RadosRecords:
    """Records in RADOS objects, "node.NODE" and "gateway.NAME", by way of a helper that keeps one
    connection to the cluster open (scripts/records/rados)."""

    def __init__(self, helper):
        self._helper = helper

    def load(self):
        self._helper.request(op="list", prefix="gateway.")   # the cluster answers: or fail at start

    def close(self):
        self._helper.close()

    def get(self, node):
        item = self._helper.request(op="get", key="node." + node)["item"]
        return NodeRecord.from_json(item[1], "node." + node, version=item[0]) if item else None

    def all(self):
        return [NodeRecord.from_json(text, key, version=version)
                for key, version, text in self._helper.request(op="list", prefix="node.")["items"]]

    def add(self, record):
        answer = self._helper.request(op="create", key="node." + record.node, text=record.to_json())
        if "conflict" in answer:
            existing = self.get(record.node)
            raise NodeExists(existing or record)
        return record.changed(version=answer["version"])

    def save(self, record):
        answer = self._helper.request(op="replace", key="node." + record.node, version=record.version,
                                      text=record.to_json())
        self._check(answer, record.node)
        return record.changed(version=answer["version"])

    def delete(self, record):
        self._check(self._helper.request(op="remove", key="node." + record.node, version=record.version),
                    record.node)

    def gateways(self):
        return [GatewayRecord.from_json(text) for _, _, text in
                self._helper.request(op="list", prefix="gateway.")["items"]]

    def put_gateway(self, gateway):
        self._helper.request(op="put", key="gateway." + gateway.name, text=gateway.to_json())

    def remove_gateway(self, name):
        self._helper.request(op="remove", key="gateway." + name, version=0)

    @staticmethod
    def _check(answer, node):
        if answer.get("conflict") == "gone":
            raise Changed("node %s was taken away meanwhile, by another gateway" % node)
        if "conflict" in answer:
            raise Changed("the record of node %s changed meanwhile, by another gateway" % node)
