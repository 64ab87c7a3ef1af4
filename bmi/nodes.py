"""Provisioned nodes: what the service knows of each (a NodeRecord), and where that is kept.

A record is written before its operation changes anything, and its state says how far the
operation got, so that a restarted server can undo what a crash left half done:
  provisioning  being made; undone at the next start
  ready         complete: disk, target and boot script exist
  detaching     being taken away; finished at the next start
Records hold the node's CHAP secret, so they are readable by root alone.
"""
import dataclasses
import json
import os
import threading

from bmi.files import remove_partials, write_private

PROVISIONING, READY, DETACHING = "provisioning", "ready", "detaching"


@dataclasses.dataclass(frozen=True)
class Backing:
    """How tgtd reaches a node's disk: its backing-store type, path and options (tgtadm's --bstype,
    --backing-store, --bsopts)."""
    bstype: str
    path: str
    bsopts: str = ""


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    SCHEMA = 1   # the "schema" field of a stored record: what this code reads and writes

    node: str
    image: str
    iqn: str
    chap_user: str
    chap_secret: str
    state: str = PROVISIONING
    backing: Backing = None   # once the disk exists

    def changed(self, **fields):
        return dataclasses.replace(self, **fields)

    def to_json(self):
        return json.dumps(dict(dataclasses.asdict(self), schema=self.SCHEMA))

    @classmethod
    def from_json(cls, text, where):
        fields = json.loads(text)
        schema = fields.pop("schema", None)
        if schema != cls.SCHEMA:
            raise ValueError("%s: node record of schema %r; this server reads schema %d" % (where, schema, cls.SCHEMA))
        if fields["backing"] is not None:
            fields["backing"] = Backing(**fields["backing"])
        return cls(**fields)


class NodeExists(RuntimeError):
    def __init__(self, record):
        super().__init__("node %s is already provisioned (from image %s)" % (record.node, record.image))


class NodeRecords:
    """The records of one server, one JSON file a node in a directory, kept in memory too."""

    def __init__(self, directory):
        self.directory = directory
        self._lock = threading.Lock()
        self._records = {}

    def load(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        remove_partials(self.directory)
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json") and not name.startswith("."):
                path = os.path.join(self.directory, name)
                with open(path) as f:
                    record = NodeRecord.from_json(f.read(), path)
                self._records[record.node] = record

    def get(self, node):
        with self._lock:
            return self._records.get(node)

    def all(self):
        with self._lock:
            return list(self._records.values())

    def add(self, record):
        """Save a new node's record; NodeExists if the node has one."""
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

    def save(self, record):
        """Replace the node's record, on disk whole or not at all, then in memory."""
        self._write(record)
        with self._lock:
            self._records[record.node] = record

    def delete(self, node):
        try:
            os.unlink(self._path(node))
        except FileNotFoundError:
            pass
        with self._lock:
            self._records.pop(node, None)

    def _path(self, node):
        return os.path.join(self.directory, node + ".json")

    def _write(self, record):
        write_private(self._path(record.node), record.to_json())
