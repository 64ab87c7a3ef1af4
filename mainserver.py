"""bmi-rpc main server: the MainServer object, served through Pyro4 and registered with the name server."""
import argparse
import functools
import logging
import os
import secrets
import sys
import threading
import time

import Pyro4

import config
from bmi import names, pyrosetup
from bmi.audit import AuditLog
from bmi.bootscripts import BootScripts
from bmi.locks import NamedLocks
from bmi.logs import RecurringProblem
from bmi.nodes import DETACHING, PROVISIONING, READY, NodeRecord, NodeRecords
from bmi.storage import Storage
from bmi.target import Target

log = logging.getLogger("bmi.mainserver")


def audited(operation):
    """Write every call of operation to the audit log: time, caller, arguments, outcome, duration.
    Errors leave as the built-in types Pyro4 rebuilds at the client."""
    @functools.wraps(operation)
    def call(self, /, *args, **kwargs):   # "/": a keyword named self is refused, and audited, too
        started = time.monotonic()
        try:
            result = operation(self, *args, **kwargs)
        except Exception as err:
            plain = _plain(err)
            self._audit(operation.__name__, args, kwargs, "%s: %s" % (type(plain).__name__, plain), started)
            raise plain from None
        self._audit(operation.__name__, args, kwargs, "ok", started)
        return result
    return call


def _plain(err):
    for kind in (ValueError, TypeError, RuntimeError):
        if type(err) is kind:
            return err
    for kind in (ValueError, TypeError):
        if isinstance(err, kind):
            return kind(str(err))
    return RuntimeError(err.strerror if isinstance(err, OSError) and err.strerror else str(err))


class MainServer:
    """The operations of bmi-rpc. Only the methods marked @Pyro4.expose can be called remotely.

    Bad input raises ValueError; a refusal or a failed operation raises RuntimeError with a message
    for the user. Either way nothing is left half done. start() before the first call, close() after
    the last; or use it as a context manager.
    """

    def __init__(self, settings=None):
        self.settings = settings or config.Settings()
        state = self.settings.BMI_STATE_DIR
        self._storage = Storage(self.settings)
        self._target = Target(self.settings)
        self._records = NodeRecords(os.path.join(state, "nodes"))
        self._boot_scripts = BootScripts(os.path.join(state, "boot"), self.settings.BMI_BOOT_PORTAL)
        self._audit_log = AuditLog(self.settings.BMI_AUDIT_LOG)
        self._locks = NamedLocks()
        self._unfinished = set()   # nodes a crash left half done: no operation of this process works on them

    def start(self):
        """Open the audit log, read the node records, finish what a crash left half done and export
        every ready node (or leave that to keep_targets_exported, if tgtd does not answer yet)."""
        os.makedirs(self.settings.BMI_STATE_DIR, mode=0o700, exist_ok=True)
        self._audit_log.open()
        self._boot_scripts.open()
        self._records.load()
        self._unfinished = {r.node for r in self._records.all() if r.state != READY}
        try:
            self._reconcile()
        except Exception as err:
            log.warning("cannot export the provisioned nodes yet: %s", err)
        return self

    def close(self):
        self._audit_log.close()

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
        with self._locks.hold("node:" + node):
            record = NodeRecord(node=node, image=image, iqn="%s:%s" % (self.settings.BMI_IQN_PREFIX, node),
                                chap_user=node, chap_secret=secrets.token_urlsafe(12))
            self._records.add(record)   # from here on, a crash is undone at the next start
            try:
                record = record.changed(backing=self._storage.clone(image, node))
                self._target.create(record.iqn, record.backing, record.chap_user, record.chap_secret)
                self._boot_scripts.write(record)
                self._records.save(record.changed(state=READY))   # the record stays unready if this fails
            except Exception:
                self._undo(record)
                raise
        return self._describe(record)

    @Pyro4.expose
    @audited
    def detach_node(self, node, force=False):
        names.check_node(node)
        if not isinstance(force, bool):
            raise ValueError("force must be true or false, not %r" % (force,))
        with self._locks.hold("node:" + node):
            record = self._ready_record(node)
            if not force:
                initiators = self._target.connections(record.iqn)
                if initiators:
                    raise RuntimeError("node %s is in use: %s is logged in to its target; "
                                       "detach_node --force cuts it off" % (node, ", ".join(initiators)))
            self._teardown(record, force)
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
    def list_all_images(self):
        nodes = [{"node": r.node, "image": r.image, "iqn": r.iqn} for r in self._records.all() if r.state == READY]
        return {"images": self._storage.list_images(), "nodes": sorted(nodes, key=lambda n: n["node"])}

    @Pyro4.expose
    def ping(self):
        """A no-op round trip: is the server there?"""
        return "pong"

    def keep_targets_exported(self, stop):
        """Until stop is set, give back any target tgtd lost (it restarted, say)."""
        problem = RecurringProblem(log, "cannot check the targets")
        while not stop.wait(self.settings.BMI_TGT_CHECK_SECONDS):
            try:
                self._reconcile()
                problem.clear()
            except Exception as err:
                problem.report(err)

    def _audit(self, operation, args, kwargs, outcome, started):
        self._audit_log.write(operation, args, kwargs, outcome, time.monotonic() - started,
                              getattr(Pyro4.current_context, "client_sock_addr", None))

    def _ready_record(self, node):
        record = self._records.get(node)
        if record is None or record.state != READY:
            raise RuntimeError("node %s is not provisioned" % node)
        return record

    def _describe(self, record):
        return {"node": record.node, "image": record.image, "iqn": record.iqn,
                "portal": self.settings.BMI_ISCSI_PORTAL, "lun": 1,
                "boot_script": self._boot_scripts.path(record.node)}

    def _teardown(self, record, force):
        """Take a node's target, boot script, disk and record away; what is already gone is fine."""
        try:
            self._target.delete(record.iqn, record.chap_user, force)
            record = record.changed(state=DETACHING)   # past the only step that may refuse
            self._records.save(record)
            self._boot_scripts.remove(record.node)
            self._storage.remove(record.node)
            self._records.delete(record.node)
        except Exception:
            if record.state != READY:   # half taken away: reconciling finishes it
                self._unfinished.add(record.node)
            raise

    def _undo(self, record):
        try:
            self._teardown(record, force=True)
        except Exception as err:   # the caller reports the first failure; reconciling retries this
            log.error("cannot undo the provisioning of %s yet: %s", record.node, err)

    def _reconcile(self):
        """Finish taking away what a crash left half done, and export every ready node tgtd lacks."""
        for node in sorted(self._unfinished):
            with self._locks.hold("node:" + node):
                record = self._records.get(node)
                if record is not None:
                    log.info("%s was left %s: taking it away", node, record.state)
                    self._teardown(record, force=True)
                self._unfinished.discard(node)
        # Ready before the listing, so a target missing from it is really missing; a node that
        # becomes ready meanwhile is not looked at.
        ready = [record for record in self._records.all() if record.state == READY]
        exported = self._target.exported()
        for record in ready:
            if record.iqn not in exported:
                with self._locks.hold("node:" + record.node):
                    if self._records.get(record.node) == record:   # not detached meanwhile
                        log.info("exporting %s again as %s", record.node, record.iqn)
                        self._target.create(record.iqn, record.backing, record.chap_user, record.chap_secret)


def register_with_name_server(uri, settings, stop):
    """Keep uri registered under the object name: wait for the name server, register again after it restarts."""
    name = settings.BMI_OBJECT_NAME
    problem = RecurringProblem(log, "cannot register with the name server at %s:%s"
                               % (settings.BMI_NS_HOST, settings.BMI_NS_PORT))
    while not stop.is_set():
        try:
            with pyrosetup.locate_ns(settings) as ns:
                if ns.list(prefix=name).get(name) != str(uri):
                    ns.register(name, uri)
                    log.info("registered %s as %s", uri, name)
            problem.clear()
        except Pyro4.errors.PyroError as err:
            problem.report(err)
        stop.wait(1.0)


def main(argv=None):
    settings = config.from_command_line("mainserver", "the bmi-rpc main server", config.MAIN_SERVER, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mainserver %(levelname)s %(message)s")
    os.umask(0o077)   # node disks, records, boot scripts and logs are for root alone
    try:
        pyrosetup.configure(settings, create_key=True)
    except (OSError, ValueError) as err:
        sys.exit("mainserver: %s" % err)

    with MainServer(settings) as server:
        daemon = pyrosetup.daemon(settings)
        uri = daemon.register(server, objectId=settings.BMI_OBJECT_NAME)
        stop = threading.Event()
        for job in (lambda: register_with_name_server(uri, settings, stop),
                    lambda: server.keep_targets_exported(stop)):
            threading.Thread(target=job, daemon=True).start()
        try:
            pyrosetup.serve(daemon, uri, log)
        finally:
            stop.set()


if __name__ == "__main__":
    main()
