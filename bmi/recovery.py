"""Taking nodes away, and finishing what a crash or a failure left half done.

take_away removes a node wherever it is: its record says detaching first (so the other gateways
drop their targets, and a crash is finished later), then its targets and boot scripts go at every
gateway, then its disk, then its record. A take-away that fails part way, and every node that this
gateway left provisioning, exporting or detaching when it died, is unfinished: finish() takes it
away, at start and on every round of reconciling, until it is gone.
"""
import logging
import threading

from bmi.errors import Unavailable
from bmi.nodes import DETACHING, EXPORTED, READY

log = logging.getLogger("bmi.recovery")


class Recovery:
    def __init__(self, records, storage, exports, gateways, locks):
        self._records = records
        self._storage = storage
        self._exports = exports
        self._gateways = gateways
        self._locks = locks
        self._unfinished = set()
        self._finishing = threading.Lock()   # one round at a time: start's and reconciling's

    def load(self):
        """Note the nodes a crash of this gateway left half done."""
        self._unfinished = {r.node for r in self._records.all() if self._left_here(r)}

    def take_away(self, record, force=True, later=False):
        """Remove the node of record (as read, under the node's lock) everywhere. Without force,
        refused while an initiator is logged in here. A failure is raised; with later, it is left
        to finish() instead, logged, and not raised (the caller reports a failure of its own)."""
        try:
            if record.state in EXPORTED:   # not announced: each other gateway is asked below
                record = self._records.move(record, DETACHING, announce=False, gateway=self._gateways.name)
            self._exports.withdraw(record.node, force)
            behind = []   # the gateways that may export it still: down, or busy with the node
            if record.state == DETACHING:   # the other gateways export it, or may
                behind = sorted(name for name, answer in self._gateways.sync_node(record.node).items()
                                if answer is None or answer.get("busy"))
            try:
                self._storage.remove(record.node)
            except Exception as err:
                if behind:   # their tgtd may hold the disk open still
                    raise Unavailable("%s (gateway%s %s did not withdraw it yet)" % (
                        err, "s" if len(behind) > 1 else "", ", ".join(behind))) from None
                raise
            self._records.delete(record)
        except Exception as err:
            if not later:
                raise
            self.finish_later(record.node, err)

    def finish_later(self, node, err):
        self._unfinished.add(node)
        log.error("cannot take %s away yet (reconciling goes on trying): %s", node, err)

    def finish(self):
        """Take away every unfinished node that is still this gateway's to finish. One that fails is
        left for the next round, and the others are tried; then the first failure is raised."""
        failures = []
        with self._finishing:
            for node in sorted(self._unfinished):
                with self._locks.hold("node:" + node):
                    record = self._records.get(node)
                    try:
                        if record is not None and self._left_here(record):
                            log.info("%s was left %s: taking it away", node, record.state)
                            self.take_away(record)
                    except Exception as err:
                        log.error("cannot take %s away yet: %s", node, err)
                        failures.append(err)
                        continue
                    self._unfinished.discard(node)
        if failures:
            raise failures[0]

    def finish_for(self, gateway):
        """Take away what a gateway that is gone for good left half done."""
        for record in self._records.all():
            if record.state != READY and record.gateway == gateway:
                with self._locks.hold("node:" + record.node):
                    log.info("%s was left %s by gateway %s: taking it away", record.node, record.state, gateway)
                    self.take_away(record)

    def _left_here(self, record):
        return record.state != READY and record.gateway == self._gateways.name
