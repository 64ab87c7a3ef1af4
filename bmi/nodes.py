"""Provisioned nodes: one JSON record a node in STATE/nodes, kept in memory too.

A record is written before its operation changes anything, and its "state" says how far the
operation got, so that a restarted server can undo what a crash left half done:
  provisioning  being made; undone at the next start
  ready         complete: disk, target and boot script exist
  detaching     being taken away; finished at the next start
Records hold the node's CHAP secret, so they are readable by their owner only.
"""
import json
import os
import threading


class NodeRecords:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._records = {}
        for name in os.listdir(directory):
            if name.endswith(".json") and not name.startswith("."):
                with open(os.path.join(directory, name)) as f:
                    record = json.load(f)
                self._records[record["node"]] = record

    def get(self, node):
        with self._lock:
            return self._records.get(node)

    def all(self):
        with self._lock:
            return list(self._records.values())

    def add(self, record):
        """Save a new node's record with the smallest target id no other node has."""
        with self._lock:
            if record["node"] in self._records:
                old = self._records[record["node"]]
                raise RuntimeError("node %s is already provisioned (from image %s)" % (old["node"], old["image"]))
            used = {r["tid"] for r in self._records.values()}
            record["tid"] = next(tid for tid in range(1, len(used) + 2) if tid not in used)
            self._records[record["node"]] = record   # holds the tid while the record is written
        try:
            self.save(record)
        except BaseException:   # a full disk, say: the node was never there
            with self._lock:
                if self._records.get(record["node"]) is record:
                    del self._records[record["node"]]
            raise

    def save(self, record):
        """Write the record whole or not at all, then keep it in memory."""
        path = os.path.join(self.directory, record["node"] + ".json")
        partial = os.path.join(self.directory, "." + record["node"] + ".json.partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        with self._lock:
            self._records[record["node"]] = record

    def delete(self, node):
        try:
            os.unlink(os.path.join(self.directory, node + ".json"))
        except FileNotFoundError:
            pass
        with self._lock:
            self._records.pop(node, None)
