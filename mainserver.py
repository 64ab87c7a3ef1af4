"""bmi-rpc main server: the MainServer object, served through Pyro4 and registered with the name server."""
import argparse
import functools
import json
import logging
import os
import secrets
import sys
import threading
import time

import Pyro4

import config
from bmi import names, pyrosetup
from bmi.locks import NamedLocks
from bmi.nodes import NodeRecords
from bmi.storage import Storage
from bmi.target import Target

log = logging.getLogger("bmi.mainserver")


def audited(operation):
    """Write every call of operation to the audit log: time, caller, arguments, outcome, duration."""
    @functools.wraps(operation)
    def call(self, /, *args, **kwargs):   # "/": a keyword named self is refused, and audited, too
        started = time.monotonic()
        try:
            result = operation(self, *args, **kwargs)
        except Exception as err:
            self._audit(operation.__name__, args, kwargs, "%s: %s" % (type(err).__name__, err), started)
            raise
        self._audit(operation.__name__, args, kwargs, "ok", started)
        return result
    return call


class MainServer:
    """The operations of bmi-rpc. Only the methods marked @Pyro4.expose can be called remotely.

    Bad input raises ValueError; a refusal or a failed operation raises RuntimeError with a message
    for the user. Either way nothing is left half done.
    """

    def __init__(self, settings=None):
        self.settings = settings or config.Settings()
        state = self.settings.BMI_STATE_DIR
        self._storage = Storage(self.settings)
        self._target = Target(self.settings)
        self._records = NodeRecords(os.path.join(state, "nodes"))
        self._boot_dir = os.path.join(state, "boot")
        os.makedirs(self._boot_dir, exist_ok=True)
        self._locks = NamedLocks()
        self._audit_lock = threading.Lock()
        self._audit_log = open(self.settings.BMI_AUDIT_LOG, "a", buffering=1)
        # nodes a crash left provisioning or detaching: no operation of this process works on them
        self._unfinished = {r["node"] for r in self._records.all() if r["state"] != "ready"}
        try:
            self._reconcile()
        except Exception as err:   # tgtd may be down now: keep_targets_exported tries again
            log.warning("cannot export the provisioned nodes yet: %s", err)

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
            record = {"node": node, "image": image, "state": "provisioning",
                      "iqn": "%s:%s" % (self.settings.BMI_IQN_PREFIX, node),
                      "chap_user": node, "chap_secret": secrets.token_urlsafe(12)}
            self._records.add(record)   # from here on, a crash is undone at the next start
            try:
                record["backing"] = self._storage.clone(image, node)
                self._target.create(record["tid"], record["iqn"], record["backing"],
                                    record["chap_user"], record["chap_secret"])
                self._write_boot_script(record)
                self._records.save(dict(record, state="ready"))   # record stays unready if this fails
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
                initiators = self._target.connections(record["tid"])
                if initiators:
                    raise RuntimeError("node %s is in use: %s is logged in to its target; "
                                       "detach_node --force cuts it off" % (node, ", ".join(initiators)))
            self._teardown(record, force)
        return {"node": node, "image": record["image"], "iqn": record["iqn"]}

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
        nodes = [{"node": r["node"], "image": r["image"], "iqn": r["iqn"]}
                 for r in self._records.all() if r["state"] == "ready"]
        return {"images": self._storage.list_images(), "nodes": sorted(nodes, key=lambda n: n["node"])}

    @Pyro4.expose
    def ping(self):
        """A no-op round trip: is the server there?"""
        return "pong"

    def keep_targets_exported(self, stop):
        """Until stop is set, give back any target tgtd lost (it restarted, say)."""
        problem = None
        while not stop.wait(self.settings.BMI_TGT_CHECK_SECONDS):
            try:
                self._reconcile()
                problem = None
            except Exception as err:
                if str(err) != problem:   # say it once, not every few seconds
                    log.warning("cannot check the targets: %s", err)
                    problem = str(err)

    def _audit(self, operation, args, kwargs, outcome, started):
        caller = getattr(Pyro4.current_context, "client_sock_addr", None)
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "caller": "%s:%s" % caller[:2] if caller else "in-process",
                           "operation": operation, "arguments": [_shorten(a) for a in args],
                           "options": {k: _shorten(v) for k, v in kwargs.items()}, "outcome": _shorten(outcome),
                           "seconds": round(time.monotonic() - started, 6)})
        try:
            with self._audit_lock:
                self._audit_log.write(line + "\n")
        except OSError as err:   # a full disk, say: the operation itself is done and stays done
            log.error("cannot write the audit log: %s; the line was %s", err, line)

    def _ready_record(self, node):
        record = self._records.get(node)
        if record is None or record["state"] != "ready":
            raise RuntimeError("node %s is not provisioned" % node)
        return record

    def _describe(self, record):
        return {"node": record["node"], "image": record["image"], "iqn": record["iqn"],
                "portal": self.settings.BMI_ISCSI_PORTAL, "lun": 1,
                "boot_script": self._boot_script_path(record["node"])}

    def _boot_script_path(self, node):
        return os.path.join(self._boot_dir, node + ".ipxe")

    def _write_boot_script(self, record):
        host, port = self.settings.BMI_BOOT_PORTAL.rsplit(":", 1)
        text = ("#!ipxe\ndhcp\nset username %s\nset password %s\nsanboot iscsi:%s::%s:1:%s\n"
                % (record["chap_user"], record["chap_secret"], host, port, record["iqn"]))
        path = self._boot_script_path(record["node"])
        partial = path + ".partial"
        # it holds the node's CHAP secret
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(partial, path)

    def _teardown(self, record, force):
        """Take a node's target, boot script, disk and record away; what is already gone is fine.

        Any target at the node's tid is the node's: tids come from the node records, and the
        tgtd instance (BMI_TGT_CONTROL_PORT) belongs to this service alone.
        """
        try:
            self._target.delete(record["tid"], record["chap_user"], force)
            record["state"] = "detaching"   # past the only step that may refuse
            self._records.save(record)
            boot_script = self._boot_script_path(record["node"])
            for path in (boot_script, boot_script + ".partial"):
                if os.path.exists(path):
                    os.unlink(path)
            self._storage.remove(record["node"])
            self._records.delete(record["node"])
        except Exception:
            if record["state"] != "ready":   # half taken away: reconciling finishes it
                self._unfinished.add(record["node"])
            raise

    def _undo(self, record):
        try:
            self._teardown(record, force=True)
        except Exception as err:   # the caller reports the first failure; reconciling retries this
            log.error("cannot undo the provisioning of %s yet: %s", record["node"], err)

    def _reconcile(self):
        """Finish taking away what a crash left half done, and export every ready node tgtd lacks."""
        for node in sorted(self._unfinished):
            with self._locks.hold("node:" + node):
                record = self._records.get(node)
                if record is not None:
                    log.info("%s was left %s: taking it away", node, record["state"])
                    self._teardown(record, force=True)
                self._unfinished.discard(node)
        # Ready before the listing, so a target missing from it is really missing; a node that
        # becomes ready meanwhile is not looked at.
        ready = [record for record in self._records.all() if record["state"] == "ready"]
        exported = self._target.exported()
        for record in ready:
            if exported.get(record["tid"]) != record["iqn"]:
                with self._locks.hold("node:" + record["node"]):
                    if self._records.get(record["node"]) is record:   # not detached meanwhile
                        log.info("exporting %s again as %s", record["node"], record["iqn"])
                        self._target.create(record["tid"], record["iqn"], record["backing"],
                                            record["chap_user"], record["chap_secret"])


def _shorten(value):
    """An argument as the audit log keeps it: hostile ones may be huge."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def register_with_name_server(uri, settings, stop):
    """Keep uri registered under the object name: wait for the name server, register again after it restarts."""
    name = settings.BMI_OBJECT_NAME
    problem = None
    while not stop.is_set():
        try:
            with pyrosetup.locate_ns(settings) as ns:
                if ns.list(prefix=name).get(name) != str(uri):
                    ns.register(name, uri)
                    log.info("registered %s as %s", uri, name)
            problem = None
        except Pyro4.errors.PyroError as err:
            if str(err) != problem:   # say it once, not every second
                log.warning("cannot register with the name server at %s:%s: %s",
                            settings.BMI_NS_HOST, settings.BMI_NS_PORT, err)
                problem = str(err)
        stop.wait(1.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description="bmi-rpc main server")
    for flag, name in pyrosetup.COMMON_FLAGS + [("--state-dir", "BMI_STATE_DIR"), ("--backend", "BMI_BACKEND")]:
        parser.add_argument(flag, dest=name, help="overrides %s" % name)
    args = parser.parse_args(argv)
    settings = config.Settings(**vars(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mainserver %(levelname)s %(message)s")
    os.umask(0o077)   # node disks, records, boot scripts and logs are for root alone
    try:
        pyrosetup.configure(settings, create_key=True)
    except (OSError, ValueError) as err:
        sys.exit("mainserver: %s" % err)

    server = MainServer(settings)
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
