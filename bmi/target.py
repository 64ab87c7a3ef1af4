"""Target backend: iSCSI targets in tgtd, made and removed by the script scripts/target/tgt.

Targets are known by their IQN, BMI_IQN_PREFIX:NODE; the target id tgtd needs (tid) is this side's
own business. The tgtd instance belongs to the service, so a target with one of our IQNs is ours.
Each target has one LUN, the node's disk: LUN. Its SCSI identity is the same at every gateway
(serial()), so that an initiator's dm-multipath sees the paths through several gateways as one disk.
"""
import hashlib
import os
import threading

from bmi import runner

LUN = 1   # the node's disk in its target (LUN 0 is tgt's controller)
TGTD_LOCK = "/var/run/tgtd/socket.%d.lock"   # tgtd holds it (lockf) while it runs with that control port


def serial(iqn):
    """The LUN's SCSI serial number and identifier: 32 hex digits, of which tgtd makes the NAA
    designator (type 6) that Linux and multipath-tools prefer to name the disk by."""
    return hashlib.sha256(iqn.encode()).hexdigest()[:32]


class Target:
    def __init__(self, settings):
        self._run = runner.Script("target", "tgt", settings)
        self._control_port = settings.BMI_TGT_CONTROL_PORT
        self._prefix = settings.BMI_IQN_PREFIX + ":"
        self._lock = threading.Lock()
        self._tids = {}         # iqn -> tid, of the targets made here or found in tgtd
        self._partial = set()   # iqns of targets a killed create left half made, as tgtd last listed them
        # iqns of the whole targets, as tgtd last listed them and as made and removed here since, so
        # that a look at one node needs no listing of every target (a tgtd that lost some meanwhile,
        # restarted, say, is found out by the next fresh look); None before the first listing
        self._whole = None
        self._listing = threading.Lock()   # one listing at a time: what changes during it is in _during
        self._during = {}   # iqn: made (True) or removed (False) here while tgtd is being listed

    def iqn(self, node):
        return self._prefix + node

    def create(self, iqn, backing, chap_user, chap_secret):
        """Export backing (a nodes.Backing) as LUN LUN of target iqn, behind the CHAP account."""
        with self._lock:
            tid = self._tids.get(iqn) or min(set(range(1, len(self._tids) + 2)) - set(self._tids.values()))
            self._tids[iqn] = tid   # a target that tgtd lost gets its old tid back
            partial = iqn in self._partial
        try:
            if partial:   # made again from the start
                self._run("delete", str(tid), chap_user, "--force")
            self._run("create", str(tid), iqn, str(LUN), serial(iqn), backing.bstype, backing.path, backing.bsopts,
                      chap_user, chap_secret)
        except runner.CommandFailed as err:
            raise runner.CommandFailed("cannot export %s: %s" % (iqn, err)) from None
        self._known(iqn, True)

    def delete(self, iqn, chap_user, force=False):
        """Remove the target and its CHAP account; what is already gone is fine."""
        tid = self._tid(iqn)
        try:
            self._run("delete", str(tid or "-"), chap_user, *(["--force"] if force else []))
        except runner.CommandFailed as err:
            raise runner.CommandFailed("cannot remove the target %s: %s" % (iqn, err)) from None
        with self._lock:
            self._tids.pop(iqn, None)
        self._known(iqn, False)

    def _known(self, iqn, whole):
        with self._lock:
            self._during[iqn] = whole
            if self._whole is not None:
                (self._whole.add if whole else self._whole.discard)(iqn)
            if whole:
                self._partial.discard(iqn)

    def connections(self, iqn):
        """Initiators logged in to the target."""
        tid = self._tid(iqn)
        return self._ask("connections", str(tid)).split() if tid else []

    def sessions(self):
        """{node: the initiators logged in to its target} of every node whose target has one, in one
        look at tgtd."""
        logged_in = {}
        for line in self._ask("sessions").splitlines():
            iqn, initiator = line.split(" ")
            if iqn.startswith(self._prefix):
                logged_in.setdefault(iqn[len(self._prefix):], []).append(initiator)
        return logged_in

    def tgtd_pid(self):
        """The process id of the tgtd this drives, or None if none runs: the holder of the lock
        that tgtd takes on its control socket (tgt's TGT_IPC_NAMESPACE), as /proc/locks says."""
        try:
            lock = os.stat(TGTD_LOCK % self._control_port)
            with open("/proc/locks") as f:
                locks = f.read().splitlines()
        except FileNotFoundError:
            return None
        held = "%02x:%02x:%d" % (os.major(lock.st_dev), os.minor(lock.st_dev), lock.st_ino)
        for line in locks:   # "1: POSIX  ADVISORY  WRITE PID MAJ:MIN:INODE START END"; "1: -> ..." waits
            fields = line.split()
            if fields[1:2] == ["POSIX"] and fields[5] == held:
                return int(fields[4])
        return None

    def exported(self, fresh=True):
        """The IQNs of every whole target tgtd has: now (fresh), or as last listed and changed here since."""
        with self._lock:
            if not fresh and self._whole is not None:
                return set(self._whole)
        with self._listing:
            with self._lock:
                self._during = {}
            found, partial = {}, set()
            for line in self._ask("list", str(LUN)).splitlines():
                tid, iqn, state = line.split(" ")
                found[iqn] = int(tid)
                if state == "partial":
                    partial.add(iqn)
            with self._lock:
                self._tids.update(found)
                whole = set(found) - partial
                for iqn, made in self._during.items():   # made or removed after tgtd answered, maybe
                    (whole.add if made else whole.discard)(iqn)
                    partial.discard(iqn)
                self._partial, self._whole = partial, whole
                return set(whole)

    def exported_nodes(self, fresh=True):
        """The nodes whose targets tgtd has, whole: now (fresh), or as last listed and changed here since."""
        return {iqn[len(self._prefix):] for iqn in self.exported(fresh) if iqn.startswith(self._prefix)}

    def _tid(self, iqn):
        """The target's tid in tgtd, or None if it has none: as known here, once tgtd was listed
        (every target of tgtd then, and those made here since)."""
        with self._lock:
            tid, listed = self._tids.get(iqn), self._whole is not None
        if tid is None and not listed:
            self.exported()   # made by a server before this one
            with self._lock:
                tid = self._tids.get(iqn)
        return tid

    def _ask(self, *args):
        try:
            return self._run(*args)
        except runner.CommandFailed as err:
            raise runner.CommandFailed("cannot ask tgtd (control port %d) for its targets: %s"
                                       % (self._control_port, err)) from None
