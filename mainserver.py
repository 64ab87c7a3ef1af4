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
from bmi.bootservice import boot_service_for
from bmi.changes import CHECK, FULL, Pushed, watch_for
from bmi.errors import AlreadyExists, BadInput, InUse, NotFound, Refused, ServiceError
from bmi.exports import Exports
from bmi.gateways import Gateways
from bmi.imageholds import DELETE, SNAPSHOT, ImageHolds
from bmi.locks import Busy, HeldElsewhere, NamedLocks, hold_lock_file
from bmi.logs import RecurringProblem
from bmi.metrics import Metrics
from bmi.nodes import DETACHING, EXPORTING, READY, GatewayRecord, ImageOwner, NodeRecord
from bmi.placement import placed
from bmi.power import ACTIONS, Power, bmc_from
from bmi.records import records_for
from bmi.recovery import Recovery
from bmi.rights import Rights, acting, guarded
from bmi.storage import Storage
from bmi.target import LUN, Target

log = logging.getLogger("bmi.mainserver")
OPERATIONS = ("import_image", "provision", "detach_node", "create_snapshot", "delete_image", "list_all_images",
              "remove_gateway", "power")
TGT_LOCK = "bmi-rpc-tgtd-%d.lock"   # in BMI_LOCK_DIR: one main server drives a tgtd (its control port)


def warn_of_a_boot_portal_nodes_cannot_reach(portal):
    host = portal.rpartition(":")[0].strip("[]")
    if host in ("localhost", "0.0.0.0", "::", "::1") or host.startswith("127."):
        log.warning("boot scripts send nodes to %s, which no node can reach: set BMI_BOOT_PORTAL to the "
                    "address:port at which nodes reach this host's tgtd", portal)


class MainServer:
    """The operations of bmi-rpc, at one gateway (bmi/gateways.py). Only the methods marked
    @Pyro4.expose can be called remotely: the operations, and the peer methods other gateways call.

    Refusals and failures raise the kinds of bmi/errors.py, with a message for the user; either way
    nothing is left half done. start() before the first call, close() after the last; or use it as
    a context manager.
    """

    def __init__(self, settings=None):
        self.settings = settings or config.Settings()
        self.uri = None   # where the other gateways reach this one, once it is served
        self._storage = Storage(self.settings)
        self._target = Target(self.settings)
        self._records = records_for(self.settings)
        self._watch = watch_for(self.settings, self._changed, self._watching_again)
        self._gateways = Gateways(self._records, self.settings.BMI_GATEWAY, self.settings.BMI_PEER_TIMEOUT,
                                  pushed=self._watch is not None)
        self._boot_scripts = BootScripts(os.path.join(self.settings.BMI_STATE_DIR, "boot"))
        self._locks = NamedLocks()
        # across gateways: a provision waits out another's delete of its image for as long as the
        # delete's own commands may take
        self._image_holds = ImageHolds(self._records, self.settings.BMI_GATEWAY, 2 * self.settings.BMI_SCRIPT_TIMEOUT)
        self._boot_service = boot_service_for(self.settings)
        self._power = Power(self.settings)
        self._exports = Exports(self.settings, self._target, self._boot_scripts, self._gateways, self._records,
                                self._locks, self._boot_service)
        self._recovery = Recovery(self._records, self._storage, self._exports, self._gateways, self._locks)
        # what the watch brings in (bmi/changes.py); without one (files), every round reads every record
        check = self.settings.BMI_TGT_CHECK_SECONDS
        self._pushed = Pushed(check, check if self._watch is None else self.settings.BMI_RESCAN_SECONDS)
        self.rights = Rights(self.settings)                      # checked by @audited and @guarded
        self.audit_log = AuditLog(self.settings.BMI_AUDIT_LOG)   # written by @audited
        self.metrics = Metrics(self.settings, self._records, self._target, self._gateways, OPERATIONS)   # and counted
        self._lock_files = []      # held while the server runs: its state directory and its tgtd are its own

    def claim(self):
        """Make the state directory and tgtd this server's own, before it reads or changes anything;
        HeldElsewhere if another server holds either."""
        state, control_port = self.settings.BMI_STATE_DIR, self.settings.BMI_TGT_CONTROL_PORT
        os.makedirs(state, mode=0o700, exist_ok=True)
        self._lock_files.append(hold_lock_file(os.path.join(state, "lock"), "the state directory %s" % state))
        try:
            self._lock_files.append(hold_lock_file(os.path.join(self.settings.BMI_LOCK_DIR, TGT_LOCK % control_port),
                                                   "tgtd at control port %d" % control_port))
        except HeldElsewhere:
            self.close()
            raise

    def start(self):
        """Claim the state directory and tgtd (unless done), open the audit log and the records,
        export every node placed here (or leave that to keep_targets_exported, if tgtd does not
        answer yet), then join the gateways; what a crash left half done is finished in the background."""
        if not self._lock_files:
            self.claim()
        warn_of_a_boot_portal_nodes_cannot_reach(self.settings.BMI_BOOT_PORTAL)
        self.rights.load()
        self.audit_log.open()
        self._boot_scripts.open()
        if self._boot_service is not None:
            self._boot_service.open()
        self._records.load()
        self._records.let_go_images(self._gateways.name)   # what a killed delete or snapshot of this gateway held
        self._recovery.load()
        leftovers = []
        try:
            leftovers = self._storage.clean()   # before any operation: no copy of this gateway runs yet
            self._exports.bring_in_line()       # first: this gateway serves its nodes at once
        except Exception as err:
            log.warning("cannot export the provisioned nodes yet: %s", err)
        # Only now alive to the others, which call a live gateway and place nodes on it: until its
        # caller serves (main), a call would wait out BMI_PEER_TIMEOUT
        if self._watch is not None:
            self._watch.open()   # before the gateway's record names it
        self._put_gateway()
        threading.Thread(target=self._tidy_up, args=(leftovers,), daemon=True).start()
        return self

    def close(self):
        self.audit_log.close()
        if self._watch is not None:
            self._watch.close()
        self._records.close()
        while self._lock_files:
            os.close(self._lock_files.pop())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @Pyro4.expose
    @audited
    def import_image(self, image, path, *, project=None, public=False):
        names.check_image(image)
        names.check_path(path)
        check_flag("public", public)
        owner = ImageOwner(acting().project_for(project), public)
        with self._locks.hold("image:" + image):
            self._storage.import_image(image, path)
            self._give_image(image, owner)
        return {"image": image, "path": path, "project": owner.project, "public": public}

    @Pyro4.expose
    @audited
    def provision(self, image, node, macs=(), bmc=None, reboot=False, *, project=None):
        names.check_image(image)
        names.check_node(node)
        macs = names.check_macs(macs)
        bmc = bmc_from(bmc) if bmc is not None else None
        check_flag("reboot", reboot)
        if reboot and bmc is None:
            raise BadInput("provision --reboot needs the node's BMC")
        project = acting().project_for(project)
        with self._locks.hold("node:" + node, shared=["image:" + image]):
            if not acting().uses(self._records.image_owner(image)):
                raise NotFound("no such image: %s" % image)   # the words of the storage backend's clone
            record = self._add_node(NodeRecord(
                node=node, image=image, iqn=self._target.iqn(node), chap_user=node, macs=macs, bmc=bmc,
                chap_secret=secrets.token_urlsafe(12), gateway=self._gateways.name, project=project))
            try:
                self._image_holds.wait_for_delete(image)   # the record first: a delete from now on sees it
                backing = self._storage.clone(image, node)
                paths = placed(node, self._gateways.live(fresh=False), self.settings.BMI_PATHS)
                # not announced: every other gateway is asked to sync the node next (those placed export it meanwhile)
                record = self._records.move(record, EXPORTING, announce=False, backing=backing, paths=paths)
                others = self._gateways.sync_node_meanwhile(node)
                try:
                    self._exports.export(record)
                finally:
                    answers = others()
                record = self._records.move(record, READY, gateway=None)
            except Exception:
                self._recovery.take_away(record, later=True)
                raise
            result = self._describe(record, answers)
            if reboot:   # only now: the node boots into a disk that is whole, exported and named by its boot script
                result["power"] = self._power_for(record, "cycle", "is provisioned, but not rebooted")
        return result

    @Pyro4.expose
    @audited
    def detach_node(self, node, force=False, power_off=False):
        names.check_node(node)
        check_flag("force", force)
        check_flag("power_off", power_off)
        with self._locks.hold("node:" + node):
            record = self._ready_record(node)
            if power_off:   # first: a node that is off has let go of its disk
                self._power_for(record, "off", "is not detached")
                # what sessions are left are the dead ones of a machine that is off (its OS never
                # logged out; tgtd drops them only after its pings go unanswered): cut, as --force
                force = True
            if not force:
                logged_in = self._logged_in_anywhere(record)
                if logged_in:
                    raise InUse("node %s is in use: %s %s logged in to its target; detach_node --force cuts it off"
                                % (node, ", ".join(logged_in), "is" if len(logged_in) == 1 else "are"))
            # not announced: take_away asks every other gateway to sync the node
            detaching = self._records.move(record, DETACHING, announce=False, gateway=self._gateways.name)
            try:
                self._recovery.take_away(detaching, force)
            except Exception as err:
                self._give_back(detaching, err)
        return {"node": node, "image": record.image, "iqn": record.iqn}

    @Pyro4.expose
    @audited
    def create_snapshot(self, node, snapshot):
        names.check_node(node)
        names.check_image(snapshot)
        with self._locks.hold("node:" + node, "image:" + snapshot), self._image_holds.hold(snapshot, SNAPSHOT):
            record = self._ready_record(node)
            self._storage.snapshot(node, snapshot)
            self._give_image(snapshot, ImageOwner(record.project))   # the node's project's
        return {"node": node, "image": snapshot}

    @Pyro4.expose
    @audited
    def delete_image(self, image):
        names.check_image(image)
        # provisions of the image hold it shared here, and by their node records at every gateway:
        # the hold first, then the records (bmi/imageholds.py)
        with self._locks.hold("image:" + image), self._image_holds.hold(image, DELETE):
            nodes = sorted(r.node for r in self._records.all() if r.image == image)
            if nodes:
                raise InUse("image %s is in use: node%s %s provisioned from it; detach %s first"
                            % (image, "s" if len(nodes) > 1 else "", ", ".join(nodes), "them" if len(nodes) > 1 else "it"))
            self._storage.delete_image(image)
            self._records.remove_image_owner(image)
        return {"image": image}

    @Pyro4.expose
    @audited
    def list_all_images(self, *, node=None, image=None):
        """What the caller may see: its projects' images and nodes, and the public images. With node,
        that node alone (if provisioned) and its image; with image, that image alone and its nodes.
        A node alone is read alone: its listing costs the same however many nodes there are."""
        caller = acting()
        if node is not None:
            record = self._records.get(names.check_node(node))
            records = [record] if record is not None else []
        else:
            records = self._records.all()
        if image is not None:
            names.check_image(image)
        records = [r for r in records if r.state == READY and caller.sees(r.project) and image in (None, r.image)]
        wanted = {image} if image is not None else {r.image for r in records} if node is not None else None
        owners = self._records.image_owners() if wanted is None else {
            name: owner for name in wanted for owner in [self._records.image_owner(name)] if owner is not None}
        exported = self._gateways.exported_nodes()
        try:
            exported[self._gateways.name] = self.exported_nodes()
        except runner.CommandFailed as err:   # this gateway's tgtd is down: the listing still answers
            log.warning("cannot list this gateway's targets: %s", err)
            exported[self._gateways.name] = None
        exporting = {}   # node: the gateways that export it
        for gateway, nodes in exported.items():
            for exported_node in nodes or ():
                exporting.setdefault(exported_node, []).append(gateway)
        nodes = [owned({"node": r.node, "image": r.image, "iqn": r.iqn, "macs": list(r.macs), "paths": list(r.paths),
                        "bmc": r.bmc.public() if r.bmc else None, "gateways": sorted(exporting.get(r.node, ()))},
                       ImageOwner(r.project))
                 for r in records]
        gateways = [{"name": g.name, "portal": g.boot_portal, "up": exported.get(g.name) is not None}
                    for g in self._gateways.all()]
        images = [owned(i, owners.get(i["name"], ImageOwner())) for i in self._storage.list_images()
                  if (wanted is None or i["name"] in wanted) and caller.uses(owners.get(i["name"]))]
        return {"images": images, "nodes": sorted(nodes, key=lambda n: n["node"]),
                "gateways": gateways}

    @Pyro4.expose
    @audited
    def remove_gateway(self, gateway):
        """Forget a gateway that is gone for good: boot scripts stop naming it, and what its crash
        left half done is taken away. Refused while it answers."""
        names.check_gateway(gateway)
        if gateway == self._gateways.name:
            raise Refused("gateway %s is this one: stop it, then remove it through another" % gateway)
        if gateway not in {g.name for g in self._gateways.all()}:
            raise NotFound("no such gateway: %s" % gateway)
        if self._gateways.ping().get(gateway) is not None:
            raise Refused("gateway %s answers: stop it first" % gateway)
        self._records.remove_gateway(gateway)
        self._gateways.forget()
        self._pushed.rescan()   # its own change is not pushed to this gateway: the boot scripts, at the next round
        self._recovery.finish_for(gateway)
        return {"gateway": gateway}

    @Pyro4.expose
    @audited
    def power(self, node, action):
        """Turn a provisioned node on, off, or off and on again through its BMC, or read its state."""
        names.check_node(node)
        if action not in ACTIONS:
            raise BadInput("unknown power action %r: one of %s" % (action, ", ".join(ACTIONS)))
        with self._locks.hold("node:" + node):
            return {"node": node, "power": self._power_for(self._ready_record(node), action, "power " + action)}

    @Pyro4.expose
    @guarded
    def ping(self):
        """A no-op round trip: is the server there?"""
        return "pong"

    @Pyro4.expose
    @guarded
    def health(self):
        """Whether what this gateway needs answers: {"gateway": name, "parts": {part: {"up": bool,
        "detail": words}}}, its tgtd, its storage (and so Ceph, with rbd), its boot service."""
        def check(look):
            try:
                return {"up": True, "detail": look()}
            except Exception as err:   # whatever it is, the part is down: say why
                return {"up": False, "detail": str(err)}
        parts = {"tgtd": check(lambda: "%d targets" % len(self._target.exported_nodes())),
                 "storage": check(lambda: "%s, %d golden images" % (self.settings.BMI_BACKEND,
                                                                   len(self._storage.list_images())))}
        if self._boot_service is not None:
            pid = self._boot_service.dnsmasq_pid()
            parts["boot service"] = {"up": pid is not None, "detail": "dnsmasq, process %d" % pid if pid else
                                     "no dnsmasq runs on %s (bmi-dnsmasq.service)" % self.settings.BMI_BOOT_DIR}
        return {"gateway": self._gateways.name, "parts": parts}

    # --- for the other gateways (bmi/gateways.py) ------------------------------------------------

    @Pyro4.expose
    @guarded
    def sync_node(self, node):
        """Bring this gateway's export of node in line with its record now: {"exported": bool}; or,
        while an operation of this gateway holds the node (which may be the caller's peer call that
        waits for this one), {"exported": None, "busy": True}: reconciling brings it in line once that
        ends. A peer call never waits out its caller."""
        names.check_node(node)
        try:
            with self._locks.hold("node:" + node, timeout=self.settings.BMI_PEER_TIMEOUT / 4):
                return {"exported": self._exports.sync(node)}
        except Busy:
            self._pushed.add(["node." + node])   # synced at the next round, as a change pushed
            return {"exported": None, "busy": True}

    @Pyro4.expose
    @guarded
    def logged_in(self, node):
        """The initiators logged in to node's target at this gateway."""
        return self._exports.logged_in(names.check_node(node))

    @Pyro4.expose
    @guarded
    def exported_nodes(self, fresh=True):
        """The nodes this gateway's tgtd exports: now (fresh), or as known from its last listing and
        the changes made here since."""
        check_flag("fresh", fresh)
        return self._exports.exported_nodes(fresh)

    @Pyro4.expose
    def follow(self, operation, arguments, options):
        """Run one operation, yielding {"progress": {"done": BYTES, "total": BYTES}} every second or
        so while it runs, then {"result": its result}, or raising its error. Pyro4 streams what a
        generator yields (ITER_STREAMING), so a client's time limit (BMI_CLIENT_TIMEOUT) bounds each
        step, not a long operation as a whole. An operation whose client goes away runs to its end."""
        if operation not in OPERATIONS:
            raise BadInput("unknown operation %r: one of %s" % (operation, ", ".join(OPERATIONS)))
        if not isinstance(arguments, (list, tuple)) or not isinstance(options, dict):
            raise BadInput("arguments must be a list and options a dict")
        caller = getattr(Pyro4.current_context, "client_sock_addr", None)
        client = getattr(Pyro4.current_context, "client", None)

        def call():
            Pyro4.current_context.client_sock_addr = caller   # the audit log names the real caller
            Pyro4.current_context.client = client             # and bmi/rights.py its certificate
            return getattr(self, operation)(*arguments, **options)

        yield from progress.follow(call, "follow " + operation)

    def keep_targets_exported(self, stop):
        """Until stop is set, finish what is unfinished and keep this gateway's exports in line with
        the records: give back any target tgtd lost (it restarted, say), take on nodes other gateways
        provisioned or placed here, drop those they detached or placed elsewhere, place nodes anew
        when a gateway came or went (bmi/placement.py), and keep every boot script naming its node's
        placed gateways. A node another gateway changed is looked at as soon as that is pushed
        (bmi/changes.py); tgtd's targets and the live gateways every BMI_TGT_CHECK_SECONDS; every
        node at least every BMI_RESCAN_SECONDS (with changes pushed; else every check)."""
        problem = RecurringProblem(log, "cannot check the targets")
        while not stop.is_set():
            step = self._pushed.next_round()
            try:
                if step == FULL:
                    with self.metrics.reconcile_round():
                        self.reconcile()
                elif step == CHECK:
                    with self.metrics.reconcile_round():
                        self.check()
                else:
                    self._exports.sync_each(step)
                problem.clear()
            except Exception as err:
                problem.report(err)

    def reconcile(self, live=None):
        """A full round of keep_targets_exported: a node that cannot be taken away yet keeps no other
        from being exported."""
        self._gateways.forget()   # read every record: the gateways' too
        try:
            self._recovery.finish()
        finally:
            self._exports.bring_in_line(live or self._gateways.live())

    def check(self):
        """A round of keep_targets_exported that reads no record: a full one if the live gateways
        changed (nodes are placed anew); else what is unfinished, and each node whose target tgtd
        has or lacks against what the records said (tgtd restarted, say)."""
        live = self._gateways.live()
        if not self._exports.placed_over(live):
            return self.reconcile(live)
        try:
            self._recovery.finish()
        finally:
            self._exports.sync_astray()

    def _changed(self, keys):
        """Another gateway changed the records of keys (pushed): looked at in the next round."""
        if any(key.startswith("gateway.") for key in keys):
            self._gateways.forget()
        self._pushed.add(keys)

    def _watching_again(self, watcher):
        """A new watch (the helper ended): the gateway's record names it, and what the old one
        missed is read in full."""
        self._put_gateway()
        self._pushed.rescan()

    def _put_gateway(self):
        """Save this gateway's record: where it is, and the Ceph client of its watch, if any."""
        self._records.put_gateway(GatewayRecord(self._gateways.name, self.settings.BMI_ISCSI_PORTAL,
                                                self.settings.BMI_BOOT_PORTAL, str(self.uri) if self.uri else None,
                                                self._watch.watcher if self._watch is not None else None))
        self._gateways.forget()

    def _tidy_up(self, images):
        """In the background, what a crash left: its half-done nodes (which may wait for a killed
        command's hold on a disk to expire; reconciling retries what fails), and the partial images
        that a killed writer held open, once it no longer does."""
        try:
            self._recovery.finish()
        except Exception as err:
            log.warning("cannot take away what a crash left half done yet: %s", err)
        for image in images:
            with self._locks.hold("image:" + image):
                try:
                    self._storage.clean_image(image)
                except Exception as err:
                    log.error("cannot remove what a killed copy left of image %s: %s", image, err)

    def _ready_record(self, node):
        """The record of a provisioned node the caller may see; another project's is not there to it."""
        record = self._records.get(node)
        if record is None or record.state != READY or not acting().sees(record.project):
            raise NotFound("node %s is not provisioned" % node)
        return record

    def _add_node(self, record):
        """Add a node's record; a crash is undone from here on. A node of a project the caller may
        not see is named as taken, and no more."""
        try:
            return self._records.add(record)
        except (AlreadyExists, InUse):
            other = self._records.get(record.node)
            if other is not None and not acting().sees(other.project):
                raise AlreadyExists("node %s is taken" % record.node) from None
            raise

    def _give_image(self, image, owner):
        """Record whose the golden image just made is; failing that, take the image away again: no
        image is left without its owner."""
        try:
            self._records.put_image_owner(image, owner)
        except Exception:
            self._storage.delete_image(image)
            raise

    def _power_for(self, record, action, otherwise):
        """action (bmi/power.py) on record's node; a failure says what became of the operation
        ("node NODE OTHERWISE: why"), as the failure's own kind."""
        if record.bmc is None:
            raise Refused("node %s has no BMC: provision it with --bmc-driver, --bmc-address, --bmc-user and "
                          "--bmc-password-file" % record.node)
        try:
            return self._power.act(record, action)
        except ServiceError as err:
            raise type(err)("node %s %s: %s" % (record.node, otherwise, err)) from None

    def _logged_in_anywhere(self, record):
        """'INITIATOR (at gateway GATEWAY)' of every initiator logged in to the node's target, at
        every gateway that answers."""
        found = {self._gateways.name: self._exports.logged_in(record.node)}
        found.update(self._gateways.logged_in(record.node))
        return ["%s (at gateway %s)" % (initiator, gateway)
                for gateway, initiators in sorted(found.items()) for initiator in initiators or []]

    def _give_back(self, detaching, err):
        """A step of detaching failed with err: raise err once the node is provisioned and exported
        again, or say that it is half taken away, which reconciling then finishes."""
        try:
            self._exports.ensure(detaching)
            self._records.move(detaching, READY, gateway=None)
        except Exception as again:
            self._recovery.finish_later(detaching.node, again)
            raise ServiceError("%s; node %s is half taken away, and could not be given back (%s): the server "
                               "finishes taking it away" % (err, detaching.node, again)) from None
        self._gateways.sync_node(detaching.node)
        raise err

    def _describe(self, record, answers):
        """The result of a provision: where the node is exported, and which gateways did not answer
        (answers: the other gateways' to sync_node; one that was busy with the node exports it soon)."""
        portals = {g.name: g.boot_portal for g in self._gateways.all()}
        exporting = {self._gateways.name: self.settings.BMI_BOOT_PORTAL} if self._exports.placed_here(record) else {}
        exporting.update({name: portals[name] for name, answer in answers.items() if answer and answer["exported"]})
        return {"node": record.node, "image": record.image, "iqn": record.iqn, "macs": list(record.macs),
                "portal": self.settings.BMI_ISCSI_PORTAL, "portals": exporting, "lun": LUN,
                "down": sorted(name for name, answer in answers.items() if answer is None),
                "boot_script": self._boot_scripts.path(record.node)}


def owned(listed, owner):
    """A listed node or image with its project, and "public": true if it is; one of no project (the
    admins' alone) and not public, as it was listed before projects."""
    return dict(listed, **({"project": owner.project} if owner.project else {}),
                **({"public": True} if owner.public else {}))


def check_flag(name, value):
    if not isinstance(value, bool):
        raise BadInput("%s must be true or false, not %r" % (name, value))


def register_with_name_servers(uri, settings, stop):
    """Keep uri registered with every name server of BMI_NS_HOST, each in a thread of its own (one
    that hangs holds up no other)."""
    for where in pyrosetup.name_servers(settings):
        threading.Thread(target=register_with_name_server, args=(uri, settings, where, stop), daemon=True).start()


def register_with_name_server(uri, settings, where, stop):
    """Keep uri registered as this gateway, SERVICE.GATEWAY, with the service's name as metadata,
    by which clients find every gateway, at the name server at where (host, port): wait for it,
    register again after it restarts."""
    name = "%s.%s" % (settings.BMI_OBJECT_NAME, settings.BMI_GATEWAY)
    problem = RecurringProblem(log, "cannot register with the name server at %s:%s" % where)
    while not stop.is_set():
        try:
            with pyrosetup.locate_ns(settings, where) as ns:
                if ns.list(prefix=name).get(name) != str(uri):
                    ns.register(name, uri, metadata={settings.BMI_OBJECT_NAME})
                    log.info("registered %s as %s with the name server at %s:%s", uri, name, *where)
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
        server.metrics.serve()
    except (OSError, ValueError, HeldElsewhere, runner.CommandFailed) as err:
        server.close()
        sys.exit("mainserver: %s" % (err.strerror if isinstance(err, OSError) and err.strerror else err))
    stop = threading.Event()
    for job in (lambda: register_with_name_servers(uri, settings, stop),
                lambda: server.keep_targets_exported(stop)):
        threading.Thread(target=job, daemon=True).start()
    try:
        pyrosetup.serve(daemon, uri, log)
    finally:
        stop.set()
        server.close()


if __name__ == "__main__":
    main()
