"""This gateway's exports: each node's iSCSI target in this gateway's tgtd, its boot script and, with
a boot service, its entry there (its MACs get the script), made and removed together, and kept in line
with the records.

While a node's record is in nodes.EXPORTED, its target is at the gateways the record places it on
(bmi/placement.py; a record that names none: at every gateway), and its boot script and boot entry
at every gateway, naming those gateways' portals. All of it is withdrawn once the node is detaching
or gone; while it is provisioning it is its gateway's to finish, and left alone.

When the gateways that answer change, each ready node is placed anew over them, in its record, by
the first gateway of its new placement (one gateway writes each record; a record changed meanwhile
is left to the next round). A gateway no longer placed for a node keeps its target until every
placed gateway exports it: a path goes only once its replacement is in place, for a node whose
initiator is logged in through it as for one that boots or is about to log in.
"""
import concurrent.futures
import logging
import threading

from bmi.locks import Busy
from bmi.nodes import DETACHING, EXPORTED, PROVISIONING, READY, Changed
from bmi.placement import placed

log = logging.getLogger("bmi.exports")
MADE = "exporting %s as %s"   # the log's line when a node's target is made here (tests look for it)
BUSY_SECONDS = 1.0   # how long sync_each waits for a node an operation holds
# nodes synced at once: while tgtd opens one's disk (a Ceph client of its own, with rbd), the next one's
# record is read and its boot script written (README, A fleet of gateways)
SYNC_WORKERS = 2


class Exports:
    def __init__(self, settings, target, boot_scripts, gateways, records, locks, boot_service=None):
        self._boot_portal = settings.BMI_BOOT_PORTAL
        self._target = target
        self._boot_scripts = boot_scripts
        self._boot_service = boot_service   # bmi/bootservice.py's BootService, or None (BMI_DHCP_MODE=off)
        self._gateways = gateways
        self._records = records
        self._locks = locks
        self._paths = settings.BMI_PATHS
        self._written = {}   # node: (the portals its boot script here names, its text, its MACs), as this server wrote it
        self._placing = ((), {})   # the last round's live gateways, and each ready node's placement over them
        self._here = set()   # the nodes whose records, as last read, place their targets here
        self._here_lock = threading.Lock()

    def placed_here(self, record):
        """Whether the node's record places it on this gateway (one that names none: every gateway)."""
        return not record.paths or self._gateways.name in record.paths

    def _note(self, node, record):
        """Remember whether the node's record (None: gone) places its target here (sync_astray)."""
        with self._here_lock:
            if record is not None and record.state in EXPORTED and self.placed_here(record):
                self._here.add(node)
            else:
                self._here.discard(node)

    def export(self, record):
        """Make the node's boot script and boot entry here, and its target if it is placed here."""
        self._note(record.node, record)
        if self.placed_here(record):
            self._target.create(record.iqn, record.backing, record.chap_user, record.chap_secret)
        self._write_boot(record)

    def _write_boot(self, record):
        portals = self.portals(record)
        written = (portals, self._boot_scripts.text(record, portals), record.macs)
        if self._written.get(record.node) == written and self._boot_scripts.exists(record.node):
            return   # a change that names the same portals (of the node's state, say) rewrites nothing
        self._boot_scripts.write(record, portals)
        if self._boot_service is not None and record.macs:
            self._boot_service.publish(record.node, record.macs, written[1])
        self._written[record.node] = written

    def _named(self, node):
        """The portals the node's boot script here names, as this server wrote it; None if it did not."""
        written = self._written.get(node)
        return written[0] if written else None

    def ensure(self, record):
        """Make whatever of the node's target (if placed here) and boot script is missing here."""
        if self.placed_here(record) and record.node not in self._target.exported_nodes(fresh=False):
            log.info(MADE, record.node, record.iqn)
            self.export(record)
        else:
            self._write_boot(record)

    def withdraw(self, node, force=True):
        """Remove the node's target, boot script and boot entry here; what is gone already is fine.
        Without force, tgtd refuses while an initiator is logged in."""
        self._note(node, None)
        self._target.delete(self._target.iqn(node), node, force)
        self._boot_scripts.remove(node)
        if self._boot_service is not None:
            self._boot_service.withdraw(node)
        self._written.pop(node, None)

    def exported_nodes(self, fresh=True):
        """The nodes whose targets this gateway's tgtd has, whole: now (fresh), or as last listed and
        changed here since."""
        return sorted(self._target.exported_nodes(fresh))

    def logged_in(self, node):
        """The initiators logged in to the node's target here."""
        return self._target.connections(self._target.iqn(node))

    def sync(self, node, live=None):
        """Bring the node's export here in line with its record (the caller holds the node's lock):
        while in EXPORTED, its boot script, and its target if placed here or handed over still;
        everything withdrawn once detaching or gone. With live (the names of the gateways that
        answer), a ready node is first placed anew over them, if this gateway places it first.
        Whether its target is here now."""
        record = self._records.get(node)
        if record is not None and live is not None and record.state == READY:
            record = self._place(record, live)
        self._note(node, record)
        if record is not None and record.state in EXPORTED:
            if self.placed_here(record):
                self.ensure(record)
                return True
            if node in self._target.exported_nodes(fresh=False):
                if self._handing_over(record):
                    self._write_boot(record)
                    return True
                log.info("%s is placed on %s now: taking its target away", node, ", ".join(record.paths))
                self._target.delete(record.iqn, node, force=True)
            self._write_boot(record)
            return False
        if record is None or record.state == DETACHING:
            if node in self._target.exported_nodes(fresh=False):
                log.info("%s is %s: taking its target away", node, "gone" if record is None else "being detached")
            self.withdraw(node)
        return False

    def sync_each(self, nodes):
        """Sync each of nodes (another gateway changed its record) under its lock; one that an
        operation holds is left to the next full round (bring_in_line), which looks at every node."""
        def sync_unless_busy(node):
            try:
                with self._locks.hold("node:" + node, timeout=BUSY_SECONDS):
                    self.sync(node)
            except Busy:
                log.info("%s is busy here: the next round brings its export in line", node)

        each(sync_unless_busy, nodes)

    def sync_astray(self):
        """Sync each node whose target here is there or missing against what its record said at
        the last look: a target tgtd lost (it restarted, say), one handed over still, one left over."""
        exported = set(self._target.exported_nodes())
        with self._here_lock:
            astray = exported ^ self._here
        self.sync_each(sorted(astray))

    def placed_over(self, live):
        """Whether the last full round placed the nodes over these live gateways."""
        return self._placing[0] == tuple(live)

    def bring_in_line(self, live=None):
        """Sync every node whose export here is not what its record says (its target here or not,
        its boot script naming its placed gateways' portals); with live (the names of the gateways
        that answer), also every ready node to be placed anew over them by this gateway."""
        gateways = self._gateways.all()
        # The records before the listings, so a target missing from them is really missing; a node
        # that changes meanwhile is looked at again under its lock, by sync.
        records = {record.node: record for record in self._records.all()}
        exported = set(self._target.exported_nodes())
        published = set(self._boot_service.published().values()) if self._boot_service else set()
        scripted = set(self._boot_scripts.nodes())
        placing = self._placed_first_here(records, live) if live is not None else {}
        astray = []
        for node in sorted(set(records) | exported | published | scripted):
            record = records.get(node)
            if record is not None and record.state == PROVISIONING:
                continue   # its gateway's to finish
            self._note(node, record)
            if record is not None and record.state in EXPORTED:
                in_line = ((node in exported) == self.placed_here(record) and node in scripted
                           and self._named(node) == self.portals(record, gateways)
                           and placing.get(node, record.paths) == record.paths)
            else:
                in_line = node not in exported | published | scripted
            if not in_line:
                astray.append(node)

        def sync_held(node):
            with self._locks.hold("node:" + node):
                self.sync(node, live)

        each(sync_held, astray)

    def _placed_first_here(self, records, live):
        """{node: its placement over live} of the ready nodes whose placement this gateway is the
        first of; kept from round to round while live stays the same (hashing is the cost)."""
        live = tuple(live)
        known = self._placing[1] if self._placing[0] == live else {}
        placements = {node: known.get(node) or placed(node, live, self._paths)
                      for node, record in records.items() if record.state == READY}
        self._placing = (live, placements)
        return {node: paths for node, paths in placements.items() if paths[0] == self._gateways.name}

    def _place(self, record, live):
        """The record, placed anew over live if this gateway is the first of its placement there and
        the placement changed."""
        paths = placed(record.node, live, self._paths)
        if paths == record.paths or paths[0] != self._gateways.name:
            return record
        log.info("placing %s on %s (it was on %s)", record.node, ", ".join(paths),
                 ", ".join(record.paths) or "every gateway")
        try:
            return self._records.place(record, paths)
        except Changed:   # another gateway's change came first: it stands, for this round
            return self._records.get(record.node)

    def _handing_over(self, record):
        """Whether this gateway, no longer placed for the node but exporting it, keeps its target
        still: a gateway placed for it does not export it yet (or does not answer)."""
        exported = self._gateways.exported_nodes(only=record.paths, fresh=False)
        waiting = [gateway for gateway in record.paths if record.node not in (exported.get(gateway) or ())]
        if waiting:
            log.info("%s keeps its target here until %s export%s it", record.node, ", ".join(waiting),
                     "s" if len(waiting) == 1 else "")
        return bool(waiting)

    def portals(self, record, gateways=None):
        """The boot portals of the gateways the node is placed on, in its placement's order (a record
        that names none: every gateway's, this one's first), which its boot script tries in turn."""
        gateways = self._gateways.all() if gateways is None else gateways
        by_name = {g.name: g.boot_portal for g in gateways}
        by_name[self._gateways.name] = self._boot_portal
        if not record.paths:
            others = [portal for name, portal in by_name.items() if name != self._gateways.name]
            return [self._boot_portal] + [portal for portal in others if portal != self._boot_portal]
        return [by_name[name] for name in record.paths if name in by_name]


def each(function, nodes):
    """function(node) for each of nodes, SYNC_WORKERS at once; the first exception, if any, raised
    once every node was tried (one that fails keeps no other from being done)."""
    if not nodes:
        return
    with concurrent.futures.ThreadPoolExecutor(min(SYNC_WORKERS, len(nodes))) as pool:
        done = [pool.submit(function, node) for node in nodes]
    for future in done:
        future.result()
