"""bmi-rpc main server: the MainServer object, served through Pyro4 and registered with the name server."""
import logging
import os
import secrets
import sys
import threading

import Pyro4

import config
from bmi import logs, names, progress, pyrosetup, runner
from bmi.audit import AuditLog, audited
from bmi.bootscripts import BootScripts
from bmi.locks import HeldElsewhere, NamedLocks, hold_lock_file
from bmi.logs import RecurringProblem
from bmi.gateways import Gateways
from bmi.nodes import DETACHING, PROVISIONING, READY, GatewayRecord, NodeRecord
from bmi.records import records_for
from bmi.storage import Storage
from bmi.target import Target

log = logging.getLogger("bmi.mainserver")
OPERATIONS = ("import_image", "provision", "detach_node", "create_snapshot", "delete_image", "list_all_images",
              "remove_gateway")
TGT_LOCK = "/run/lock/bmi-rpc-tgtd-%d.lock"   # one main server drives a tgtd (its control port)


def warn_of_a_boot_portal_nodes_cannot_reach(portal):
    host = portal.rpartition(":")[0].strip("[]")
    if host in ("localhost", "0.0.0.0", "::", "::1") or host.startswith("127."):
        log.warning("boot scripts send nodes to %s, which no node can reach: set BMI_BOOT_PORTAL to the "
                    "address:port at which nodes reach this host's tgtd", portal)


class MainServer:
    """The operations of bmi-rpc, at one gateway (bmi/gateways.py). Only the methods marked
    @Pyro4.expose can be called remotely.

    Bad input raises ValueError; a refusal or a failed operation raises RuntimeError with a message
    for the user. Either way nothing is left half done. start() before the first call, close() after
    the last; or use it as a context manager.
    """

    def __init__(self, settings=None):
        self.settings = settings or config.Settings()
        self.uri = None   # where the other gateways reach this one, once it is served
        state = self.settings.BMI_STATE_DIR
        self._storage = Storage(self.settings)
        self._target = Target(self.settings)
        self._records = records_for(self.settings)
        self._gateways = Gateways(self._records, self.settings.BMI_GATEWAY)
        self._boot_scripts = BootScripts(os.path.join(state, "boot"))
        self.audit_log = AuditLog(self.settings.BMI_AUDIT_LOG)   # written by @audited
        self._locks = NamedLocks()
        self._lock_files = []      # held while the server runs: its state directory and its tgtd are its own
        # Nodes a crash or a failure of this gateway left half done, for reconciling to finish: each with
        # the ready record of a provision that was reported failed (take it away while it is that), or None.
        self._unfinished = {}
        self._boot_portals = None  # every gateway's, as this gateway's boot scripts name them

    def claim(self):
        """Make the state directory and tgtd this server's own, before it reads or changes anything;
        HeldElsewhere if another server holds either."""
        state, control_port = self.settings.BMI_STATE_DIR, self.settings.BMI_TGT_CONTROL_PORT
        os.makedirs(state, mode=0o700, exist_ok=True)
        self._lock_files.append(hold_lock_file(os.path.join(state, "lock"), "the state directory %s" % state))
        try:
            self._lock_files.append(hold_lock_file(TGT_LOCK % control_port, "tgtd at control port %d" % control_port))
        except HeldElsewhere:
            self.close()
            raise

    def start(self):
        """Claim the state directory and tgtd (unless done), open the audit log and the records, join
        the gateways, finish what a crash left half done and export every ready node (or leave that
        to keep_targets_exported, if tgtd does not answer yet)."""
        if not self._lock_files:
            self.claim()
        warn_of_a_boot_portal_nodes_cannot_reach(self.settings.BMI_BOOT_PORTAL)
        self.audit_log.open()
        self._boot_scripts.open()
        self._records.load()
        self._records.put_gateway(GatewayRecord(self._gateways.name, self.settings.BMI_ISCSI_PORTAL,
                                                self.settings.BMI_BOOT_PORTAL, str(self.uri) if self.uri else None))
        self._unfinished = {r.node: None for r in self._records.all()
                            if r.state != READY and r.gateway == self._gateways.name}
        leftovers = []
        try:
            leftovers = self._storage.clean()   # before any operation: no copy of this gateway runs yet
            self._bring_exports_in_line()       # first: this gateway serves its nodes at once
        except Exception as err:
            log.warning("cannot export the provisioned nodes yet: %s", err)
        threading.Thread(target=self._tidy_up, args=(leftovers,), daemon=True).start()
        return self

    def close(self):
        self.audit_log.close()
        self._records.close()
        while self._lock_files:
            os.close(self._lock_files.pop())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @Pyro4.expose
    @audited
    def import_image(self, image, path):
        names.check_image(image)
        names.check_path(path)
        with self._locks.hold("image:" + image):
            self._storage.import_image(image, path)
        return {"image": image, "path": path}

    @Pyro4.expose
    @audited
    def provision(self, image, node):
        names.check_image(image)
        names.check_node(node)
        with self._locks.hold("node:" + node, shared=["image:" + image]):
            record = self._records.add(NodeRecord(
                node=node, image=image, iqn="%s:%s" % (self.settings.BMI_IQN_PREFIX, node), chap_user=node,
                chap_secret=secrets.token_urlsafe(12), gateway=self._gateways.name))   # a crash is undone from here on
            try:
                record = record.changed(backing=self._storage.clone(image, node))
                record = self._records.save(record.changed(state=READY, gateway=None))   # any gateway may export it
            except Exception:
                self._undo(record)
                raise
            others = self._gateways.ask_the_others_meanwhile("sync_node", node)   # they export it meanwhile
            try:
                self._target.create(record.iqn, record.backing, record.chap_user, record.chap_secret)
                self._boot_scripts.write(record, self._portals())
            except Exception:
                others()   # then take it back there too
                self._unprovision(record)
                raise
            answers = others()
        return self._describe(record, {name: answer and answer["exported"] for name, answer in answers.items()})

    @Pyro4.expose
    @audited
    def detach_node(self, node, force=False):
        names.check_node(node)
        if not isinstance(force, bool):
            raise ValueError("force must be true or false, not %r" % (force,))
        with self._locks.hold("node:" + node):
            record = self._ready_record(node)
            if not force:
                logged_in = ["%s (at gateway %s)" % (initiator, gateway)
                             for gateway, initiators in self._initiators(record).items() for initiator in initiators]
                if logged_in:
                    raise RuntimeError("node %s is in use: %s %s logged in to its target; detach_node --force cuts "
                                       "it off" % (node, ", ".join(logged_in), "is" if len(logged_in) == 1 else "are"))
            self._detach(record, force)
        return {"node": node, "image": record.image, "iqn": record.iqn}

    @Pyro4.expose
    @audited
    def create_snapshot(self, node, snapshot):
        names.check_node(node)
        names.check_image(snapshot)
        with self._locks.hold("node:" + node, "image:" + snapshot):
            self._ready_record(node)
            self._storage.snapshot(node, snapshot)
        return {"node": node, "image": snapshot}

    @Pyro4.expose
    @audited
    def delete_image(self, image):
        names.check_image(image)
        with self._locks.hold("image:" + image):   # provisions of the image hold it shared
            nodes = sorted(r.node for r in self._records.all() if r.image == image)
            if nodes:
                raise RuntimeError("image %s is in use: node%s %s provisioned from it; detach %s first"
                                   % (image, "s" if len(nodes) > 1 else "", ", ".join(nodes),
                                      "them" if len(nodes) > 1 else "it"))
            self._storage.delete_image(image)
        return {"image": image}

    @Pyro4.expose
    @audited
    def list_all_images(self):
        exported = self._gateways.ask_the_others("exported_nodes")
        try:
            exported[self._gateways.name] = self.exported_nodes()
        except runner.CommandFailed as err:   # this gateway's tgtd is down: the listing still answers
            log.warning("cannot list this gateway's targets: %s", err)
            exported[self._gateways.name] = None
        nodes = [{"node": r.node, "image": r.image, "iqn": r.iqn,
                  "gateways": sorted(gateway for gateway, nodes in exported.items() if nodes and r.node in nodes)}
                 for r in self._records.all() if r.state == READY]
        gateways = [{"name": g.name, "portal": g.boot_portal, "up": exported.get(g.name) is not None}
                    for g in self._gateways.all()]
        return {"images": self._storage.list_images(), "nodes": sorted(nodes, key=lambda n: n["node"]),
                "gateways": gateways}

    @Pyro4.expose
    @audited
    def remove_gateway(self, gateway):
        """Forget a gateway that is gone for good: boot scripts stop naming it, and what its crash
        left half done is taken away. Refused while it answers."""
        names.check_gateway(gateway)
        if gateway == self._gateways.name:
            raise RuntimeError("gateway %s is this one: stop it, then remove it through another" % gateway)
        known = {g.name: g for g in self._gateways.all()}
        if gateway not in known:
            raise RuntimeError("no such gateway: %s" % gateway)
        if self._gateways.ask_the_others("ping").get(gateway) is not None:
            raise RuntimeError("gateway %s answers: stop it first" % gateway)
        self._records.remove_gateway(gateway)
        for record in self._records.all():
            if record.state != READY and record.gateway == gateway:
                with self._locks.hold("node:" + record.node):
                    log.info("%s was left %s by gateway %s: taking it away", record.node, record.state, gateway)
                    self._take_away(record)
        return {"gateway": gateway}

    @Pyro4.expose
    def ping(self):
        """A no-op round trip: is the server there?"""
        return "pong"

    @Pyro4.expose
    def sync_node(self, node):
        """For the other gateways: bring this gateway's export of node in line with its record now
        (exported while ready, gone otherwise). {"exported": bool, "initiators": [...]}."""
        names.check_node(node)
        with self._locks.hold("node:" + node):
            record = self._records.get(node)
            exported = self._sync(record, node)
            return {"exported": exported, "initiators": self._target.connections(record.iqn) if exported else []}

    @Pyro4.expose
    def exported_nodes(self):
        """For the other gateways: the nodes this gateway's tgtd exports."""
        prefix = self.settings.BMI_IQN_PREFIX + ":"
        return sorted(iqn[len(prefix):] for iqn in self._target.exported() if iqn.startswith(prefix))

    @Pyro4.expose
    def follow(self, operation, arguments, options):
        """Run one operation, yielding {"progress": {"done": BYTES, "total": BYTES}} every second or
        so while it runs, then {"result": its result}, or raising its error. Pyro4 streams what a
        generator yields (ITER_STREAMING), so a client's time limit (BMI_CLIENT_TIMEOUT) bounds each
        step, not a long operation as a whole. An operation whose client goes away runs to its end."""
        if operation not in OPERATIONS:
            raise ValueError("unknown operation %r: one of %s" % (operation, ", ".join(OPERATIONS)))
        if not isinstance(arguments, (list, tuple)) or not isinstance(options, dict):
            raise TypeError("arguments must be a list and options a dict")
        caller = getattr(Pyro4.current_context, "client_sock_addr", None)

        def call():
            Pyro4.current_context.client_sock_addr = caller   # the audit log names the real caller
            return getattr(self, operation)(*arguments, **options)

        yield from progress.follow(call, "follow " + operation)

    def keep_targets_exported(self, stop):
        """Until stop is set, keep this gateway's exports in line with the records: give back any
        target tgtd lost (it restarted, say), take on nodes other gateways provisioned, drop those
        they detached, and name every gateway in the boot scripts."""
        problem = RecurringProblem(log, "cannot check the targets")
        while not stop.wait(self.settings.BMI_TGT_CHECK_SECONDS):
            try:
                self._reconcile()
                problem.clear()
            except Exception as err:
                problem.report(err)

    def _tidy_up(self, images):
        """In the background, what a crash left: take away its half-done nodes (which may wait for a
        killed command's hold on a disk to expire; reconciling retries what fails), and remove the
        partial images that a killed writer held open, once it no longer does."""
        try:
            self._finish_unfinished()
        except Exception as err:
            log.warning("cannot take away what a crash left half done yet: %s", err)
        for image in images:
            with self._locks.hold("image:" + image):
                try:
                    self._storage.clean_image(image)
                except Exception as err:
                    log.error("cannot remove what a killed copy left of image %s: %s", image, err)

    def _ready_record(self, node):
        record = self._records.get(node)
        if record is None or record.state != READY:
            raise RuntimeError("node %s is not provisioned" % node)
        return record

    def _portals(self):
        """The boot portals of every gateway, this one's first: a node's boot script tries them all."""
        portals = [g.boot_portal for g in self._gateways.all() if g.name != self._gateways.name]
        return [self.settings.BMI_BOOT_PORTAL] + [portal for portal in portals if portal != self.settings.BMI_BOOT_PORTAL]

    def _describe(self, record, others):
        """The result of a provision: where the node is exported, and which gateways did not answer."""
        portals = {g.name: g.boot_portal for g in self._gateways.all()}
        exporting = {self._gateways.name: self.settings.BMI_BOOT_PORTAL}
        exporting.update({name: portals[name] for name, exported in others.items() if exported})
        return {"node": record.node, "image": record.image, "iqn": record.iqn,
                "portal": self.settings.BMI_ISCSI_PORTAL, "portals": exporting, "lun": 1,
                "down": sorted(name for name, exported in others.items() if not exported),
                "boot_script": self._boot_scripts.path(record.node)}

    def _initiators(self, record):
        """{gateway: initiators logged in to the node's target there}, of every gateway that answers."""
        found = {self._gateways.name: self._target.connections(record.iqn)}
        for gateway, answer in self._gateways.ask_the_others("sync_node", record.node).items():
            if answer:
                found[gateway] = answer["initiators"]
        return {gateway: initiators for gateway, initiators in found.items() if initiators}

    def _sync(self, record, node):
        """Make this gateway's target and boot script of node what record (None: no record) says:
        there while ready, gone otherwise, or left alone while another gateway provisions it.
        Whether it is exported now."""
        iqn = "%s:%s" % (self.settings.BMI_IQN_PREFIX, node)
        exported = iqn in self._target.exported()
        if record is not None and record.state == READY:
            if not exported:
                log.info("exporting %s as %s", node, iqn)
                self._target.create(record.iqn, record.backing, record.chap_user, record.chap_secret)
            self._boot_scripts.write(record, self._portals())
            return True
        if record is None or record.state == DETACHING:
            if exported:
                log.info("%s is %s: taking its target away", node, "gone" if record is None else "being detached")
                self._target.delete(iqn, node, force=True)
            self._boot_scripts.remove(node)
        return False

    def _detach(self, record, force):
        """Take a ready node away, at every gateway. Its record says detaching first, so that a crash
        is finished at the next start and the other gateways drop their targets; if a later step
        fails, the node is given back, provisioned and exported, as the reply will say it is."""
        detaching = self._records.save(record.changed(state=DETACHING, gateway=self._gateways.name))
        exported = True
        try:
            self._target.delete(record.iqn, record.chap_user, force)
            exported = False
            down = [name for name, answer in self._gateways.ask_the_others("sync_node", record.node).items()
                    if answer is None]
            try:
                self._storage.remove(record.node)
            except Exception as err:
                if down:   # their tgtd may hold the disk open still
                    raise RuntimeError("%s (gateway%s %s did not answer)" % (err, "s" if len(down) > 1 else "",
                                                                              ", ".join(down))) from None
                raise
        except Exception as err:
            self._give_back(detaching, exported, err)
        self._boot_scripts.remove(record.node)
        self._records.delete(detaching)

    def _give_back(self, detaching, exported, err):
        """A step of detaching failed with err: raise err once the node is provisioned and exported
        again, or say that it is half taken away, which reconciling then finishes."""
        try:
            if not exported:
                self._target.create(detaching.iqn, detaching.backing, detaching.chap_user, detaching.chap_secret)
            self._records.save(detaching.changed(state=READY, gateway=None))
        except Exception as again:
            self._unfinished[detaching.node] = None
            raise RuntimeError("%s; node %s is half taken away, and could not be given back (%s): the server "
                               "finishes taking it away" % (err, detaching.node, again)) from None
        self._gateways.ask_the_others("sync_node", detaching.node)
        raise err

    def _take_away(self, record):
        """Remove whatever of a node exists here and in the store: target, boot script, disk, record."""
        self._target.delete(record.iqn, record.chap_user, force=True)
        self._boot_scripts.remove(record.node)
        self._storage.remove(record.node)
        self._records.delete(record)

    def _take_back(self, record):
        """Take away a node whose record is ready: as a detach does, at every gateway."""
        detaching = self._records.save(record.changed(state=DETACHING, gateway=self._gateways.name))
        self._gateways.ask_the_others("sync_node", record.node)
        self._take_away(detaching)

    def _unprovision(self, record):
        """Take back a provision whose record is ready already, which the reply will say failed."""
        try:
            self._take_back(record)
        except Exception as err:
            self._finish_later(record.node, err, failed=record)

    def _undo(self, record):
        try:
            self._take_away(record)
        except Exception as err:
            self._finish_later(record.node, err)

    def _finish_later(self, node, err, failed=None):
        """Leave undoing a failed provision to reconciling; the caller reports its first failure."""
        self._unfinished[node] = failed
        log.error("cannot undo the provisioning of %s yet: %s", node, err)

    def _reconcile(self):
        """Finish taking away what a crash of this gateway left half done, and bring every export and
        boot script of this gateway in line with the records."""
        self._finish_unfinished()
        self._bring_exports_in_line()

    def _finish_unfinished(self):
        for node, failed in sorted(self._unfinished.items()):
            with self._locks.hold("node:" + node):
                record = self._records.get(node)
                if record is not None and record == failed:   # even the record could not be changed then
                    log.info("%s's provisioning failed: taking it away", node)
                    self._take_back(record)
                elif record is not None and record.state != READY and record.gateway == self._gateways.name:
                    log.info("%s was left %s: taking it away", node, record.state)
                    self._take_away(record)
                del self._unfinished[node]

    def _bring_exports_in_line(self):
        portals = self._portals()
        rewrite = portals != self._boot_portals   # a gateway came or went: every boot script names them
        # The records before the listing, so a target missing from it is really missing; a node that
        # changes meanwhile is looked at again under its lock, by _sync.
        records = {record.node: record for record in self._records.all()}
        exported = set(self.exported_nodes())
        for node in sorted(set(records) | exported):
            record = records.get(node)
            in_line = (node in exported) == (record is not None and record.state == READY)
            if record is not None and record.state == PROVISIONING:
                continue   # its gateway's to finish
            if not in_line or (rewrite and node in exported):
                with self._locks.hold("node:" + node):
                    self._sync(self._records.get(node), node)
        self._boot_portals = portals


def register_with_name_server(uri, settings, stop):
    """Keep uri registered as this gateway, SERVICE.GATEWAY, with the service's name as metadata,
    by which clients find every gateway: wait for the name server, register again after it restarts."""
    name = "%s.%s" % (settings.BMI_OBJECT_NAME, settings.BMI_GATEWAY)
    problem = RecurringProblem(log, "cannot register with the name server at %s:%s"
                               % (settings.BMI_NS_HOST, settings.BMI_NS_PORT))
    while not stop.is_set():
        try:
            with pyrosetup.locate_ns(settings) as ns:
                if ns.list(prefix=name).get(name) != str(uri):
                    ns.register(name, uri, metadata={settings.BMI_OBJECT_NAME})
                    log.info("registered %s as %s", uri, name)
            problem.clear()
        except Pyro4.errors.PyroError as err:
            problem.report(err)
        stop.wait(1.0)


def main(argv=None):
    settings = config.from_command_line("mainserver", "the bmi-rpc main server", config.MAIN_SERVER, argv)
    logs.configure("mainserver", settings)
    os.umask(0o077)   # node disks, records, boot scripts and logs are for root alone
    server = MainServer(settings)
    try:
        pyrosetup.configure(settings, create_key=True)
        server.claim()   # first of all: its state directory and its tgtd are its own
        daemon = pyrosetup.daemon(settings)
        server.uri = uri = daemon.register(server, objectId=settings.BMI_OBJECT_NAME)
        server.start()
    except (OSError, ValueError, HeldElsewhere, runner.CommandFailed) as err:
        server.close()
        sys.exit("mainserver: %s" % (err.strerror if isinstance(err, OSError) and err.strerror else err))
    stop = threading.Event()
    for job in (lambda: register_with_name_server(uri, settings, stop),
                lambda: server.keep_targets_exported(stop)):
        threading.Thread(target=job, daemon=True).start()
    try:
        pyrosetup.serve(daemon, uri, log)
    finally:
        stop.set()
        server.close()


if __name__ == "__main__":
    main()
