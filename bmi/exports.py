"""This gateway's exports: each node's iSCSI target in this gateway's tgtd, its boot script and, with
a boot service, its entry there (its MACs get the script), made and removed together, and kept in line
with the records.

A node is exported at every gateway while its record is in nodes.EXPORTED, and withdrawn once it is
detaching or gone; while it is provisioning it is its gateway's to finish, and left alone.
"""
import logging

from bmi.nodes import DETACHING, EXPORTED, PROVISIONING

log = logging.getLogger("bmi.exports")
MADE = "exporting %s as %s"   # the log's line when a node's target is made here (tests look for it)


class Exports:
    def __init__(self, settings, target, boot_scripts, gateways, records, locks, boot_service=None):
        self._boot_portal = settings.BMI_BOOT_PORTAL
        self._target = target
        self._boot_scripts = boot_scripts
        self._boot_service = boot_service   # bmi/bootservice.py's BootService, or None (BMI_DHCP_MODE=off)
        self._gateways = gateways
        self._records = records
        self._locks = locks
        self._portals_named = None   # every gateway's portal, as the boot scripts name them

    def export(self, record):
        """Make the node's target, boot script and boot entry here."""
        self._target.create(record.iqn, record.backing, record.chap_user, record.chap_secret)
        self._write_boot(record)

    def _write_boot(self, record):
        portals = self.portals()
        self._boot_scripts.write(record, portals)
        if self._boot_service is not None and record.macs:
            self._boot_service.publish(record.node, record.macs, self._boot_scripts.text(record, portals))

    def ensure(self, record):
        """Make whatever of the node's target and boot script is missing here."""
        if record.node not in self._target.exported_nodes():
            log.info(MADE, record.node, record.iqn)
            self.export(record)
        else:
            self._write_boot(record)

    def withdraw(self, node, force=True):
        """Remove the node's target, boot script and boot entry here; what is gone already is fine.
        Without force, tgtd refuses while an initiator is logged in."""
        self._target.delete(self._target.iqn(node), node, force)
        self._boot_scripts.remove(node)
        if self._boot_service is not None:
            self._boot_service.withdraw(node)

    def exported_nodes(self):
        """The nodes whose targets this gateway's tgtd has, whole."""
        return sorted(self._target.exported_nodes())

    def logged_in(self, node):
        """The initiators logged in to the node's target here."""
        return self._target.connections(self._target.iqn(node))

    def sync(self, node):
        """Bring the node's export here in line with its record (the caller holds the node's lock):
        exported while in EXPORTED, withdrawn once detaching or gone. Whether it is exported now."""
        record = self._records.get(node)
        if record is not None and record.state in EXPORTED:
            self.ensure(record)
            return True
        if record is None or record.state == DETACHING:
            if node in self._target.exported_nodes():
                log.info("%s is %s: taking its target away", node, "gone" if record is None else "being detached")
            self.withdraw(node)
        return False

    def bring_in_line(self):
        """Sync every node whose export here is not what its record says, and rewrite every boot
        script when a gateway came or went (each names every gateway's portal)."""
        portals = self.portals()
        rewrite = portals != self._portals_named
        # The records before the listing, so a target missing from it is really missing; a node that
        # changes meanwhile is looked at again under its lock, by sync.
        records = {record.node: record for record in self._records.all()}
        exported = set(self._target.exported_nodes())
        published = set(self._boot_service.published().values()) if self._boot_service else set()
        for node in sorted(set(records) | exported | published):
            record = records.get(node)
            if record is not None and record.state == PROVISIONING:
                continue   # its gateway's to finish
            wanted = record is not None and record.state in EXPORTED
            in_line = (node in exported) == wanted and (wanted or node not in published)
            if not in_line or (rewrite and node in exported):
                with self._locks.hold("node:" + node):
                    self.sync(node)
        self._portals_named = portals

    def portals(self):
        """The boot portals of every gateway, this one's first: a node's boot script tries them all."""
        others = [g.boot_portal for g in self._gateways.all() if g.name != self._gateways.name]
        return [self._boot_portal] + [portal for portal in others if portal != self._boot_portal]
