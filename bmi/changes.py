"""Changes pushed by Ceph (the rbd backend), as ceph-iscsi's gateways have them: each gateway
watches one RADOS object, "changes", on which every change of a record is announced (a RADOS
notify: scripts/records/rados), so each learns of another's change at once; a full re-read of
the records every BMI_RESCAN_SECONDS stays, as a safety net.

The watch is also the gateway's liveness: the helper that holds it (`scripts/records/rados watch`)
keeps it only while this server writes it a line every HEARTBEAT_SECONDS, so a server that hangs
loses its watch within seconds, and the others, which list the watchers (bmi/gateways.py), count it
dead without calling it.
"""
import json
import logging
import subprocess
import threading
import time

from bmi import runner
from bmi.logs import RecurringProblem
from bmi.records import SHARED

log = logging.getLogger("bmi.changes")
HEARTBEAT_SECONDS = 1   # the helper ends the watch after 3 s without a line
CLOSE_SECONDS = 5   # how long the helper may take to end its watch (its Ceph client's timeouts are longer)


def watch_for(settings, on_change, on_watching):
    """The Watch of the storage backend's shared records, or None (files: one gateway)."""
    if settings.BMI_BACKEND not in SHARED:
        return None
    return Watch(runner.Script("records", SHARED[settings.BMI_BACKEND], settings), on_change, on_watching)


class Watch:
    """This gateway's watch: on_change(keys) is called with the records another gateway changed,
    on_watching(watcher) each time a watch begins again (after the helper ended: a server that hung,
    a lost connection), with its Ceph client's name, which the gateway's record carries."""

    def __init__(self, script, on_change, on_watching):
        self._script = script
        self._on_change = on_change
        self._on_watching = on_watching
        self._stop = threading.Event()
        self._proc = None
        self.watcher = None

    def open(self):
        """Begin watching (the first watch, before the gateway's record names it), and keep watching
        in the background until close."""
        self._begin()
        threading.Thread(target=self._keep, daemon=True).start()
        return self.watcher

    def close(self):
        """End the watch: the helper, at the end of its stdin, ends it and tells the others."""
        self._stop.set()
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(CLOSE_SECONDS)
            except (OSError, subprocess.TimeoutExpired):   # ended already; or hangs, as Ceph may
                pass
            runner._stop(self._proc)

    def _begin(self):
        proc = runner._start([self._script.path, "watch"], self._script.env, stdin=subprocess.PIPE)
        ready = json.loads(proc.stdout.readline() or "{}")   # its first line: the watch is there
        if "watcher" not in ready:
            runner._stop(proc)
            raise runner.CommandFailed("cannot watch the changes: %s" % (ready.get("error") or proc.stderr.read()
                                                                          .decode(errors="replace").strip()))
        self._proc, self.watcher = proc, ready["watcher"]
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stdout:
            answer = json.loads(line)
            if "changed" in answer:
                self._on_change(answer["changed"])
            elif "error" in answer:
                log.warning("%s", answer["error"])

    def _keep(self):
        """The heartbeat, and a new watch whenever the helper ended."""
        problem = RecurringProblem(log, "cannot watch the changes of the records")
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                if self._proc.poll() is None:
                    self._proc.stdin.write(b"\n")
                    self._proc.stdin.flush()
                    continue
            except (OSError, ValueError):   # it ended meanwhile, or close() closed its stdin
                if self._stop.is_set():
                    return
            try:
                runner._stop(self._proc)
                self._begin()
                log.info("watching the changes again, as %s", self.watcher)
                self._on_watching(self.watcher)
                problem.clear()
            except Exception as err:
                problem.report(err)


FULL, CHECK = "full", "check"   # the rounds of reconciling that Pushed.next_round names


class Pushed:
    """What the watch brought in, for the rounds of reconciling: the nodes another gateway changed,
    at once; a CHECK every `check` seconds (tgtd's targets and the live gateways: cheap); a FULL
    round, which reads every record, when a gateway's record changed (one came or went) and at
    least every `rescan` seconds (the safety net), the first at once."""

    def __init__(self, check, rescan):
        self._check = check
        self._rescan = rescan
        self._lock = threading.Lock()
        self._keys = set()
        self._came = threading.Event()
        self._full_at = self._check_at = 0.0

    def add(self, keys):
        with self._lock:
            self._keys.update(keys)
        self._came.set()

    def rescan(self):
        """Make the next round FULL: a watch begun again may have missed announcements."""
        with self._lock:
            self._full_at = 0.0
        self._came.set()

    def next_round(self):
        """Wait for the next round: FULL, CHECK, or the nodes to sync (a list, maybe empty)."""
        self._came.wait(max(0.0, min(self._full_at, self._check_at) - time.monotonic()))
        with self._lock:
            keys, self._keys = self._keys, set()
            self._came.clear()
        now = time.monotonic()
        if now >= self._full_at or any(key.startswith("gateway.") for key in keys):
            self._full_at, self._check_at = now + self._rescan, now + self._check
            return FULL
        nodes = sorted(key[len("node."):] for key in keys if key.startswith("node."))
        if not nodes and now >= self._check_at:
            self._check_at = now + self._check
            return CHECK
        return nodes

