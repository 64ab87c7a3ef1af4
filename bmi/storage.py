"""Storage backend: golden images and node disks, kept by the script scripts/storage/<BMI_BACKEND>.

A backend is one executable script taking the commands of scripts/README; adding a backend is
adding a script. Copies (import, snapshot, a clone) are bounded by their progress, the other
commands by the clock (bmi/runner.py).
"""
import logging
import os
import threading
import time

from bmi import runner
from bmi.errors import Refused
from bmi.nodes import Backing

log = logging.getLogger("bmi.storage")

# The files the service keeps for itself besides its state directory: settings, and what each is.
# scripts/lib.sh (refuse_own_file) refuses the same, of the file it actually opens.
OWN_FILES = [("BMI_KEY_FILE", "its key file"), ("BMI_TLS_CERT", "its TLS certificate"), ("BMI_TLS_KEY", "its TLS key"),
             ("BMI_TLS_CA", "its TLS CA certificate"), ("BMI_AUDIT_LOG", "its audit log"),
             ("BMI_ROLES_FILE", "its roles file")]
# A killed writer (qemu-img, rbd cp) keeps its hold on the partial image it wrote until the cluster
# times its watch out (osd_client_watch_timeout, 30 s): clean_image tries again every RETRY seconds
# for up to PATIENCE, each try one quick command.
CLEAN_RETRY_SECONDS = 2
CLEAN_PATIENCE_SECONDS = 90


class Storage:
    def __init__(self, settings):
        self._run = runner.Script("storage", settings.BMI_BACKEND, settings)
        self._state_dir = settings.BMI_STATE_DIR
        self._own_files = [(getattr(settings, name), "%s, %s" % (what, name)) for name, what in OWN_FILES
                           if getattr(settings, name)]
        # A clone is a short, CPU-bound command. Started all at once, a burst of them shares the
        # cores, ends together and then queues at tgtd, which opens LUNs one at a time; a few at a
        # time, each disk goes on to tgtd as soon as it exists, while the next ones are cloned.
        self._clone_slots = threading.BoundedSemaphore(settings.BMI_CLONE_CONCURRENCY)

    def import_image(self, image, path):
        self.refuse_own_file(path)
        self._copy_or_clean(image, None, "import", image, path)

    def refuse_own_file(self, path):
        """Refused if path, its symlinks resolved, is a file the service keeps for itself: anything in
        its state directory (node disks, records, boot scripts with CHAP secrets; or a hard link to
        one), its key, TLS files or audit log. What cannot be resolved is left to the script, which
        checks the file it opens again (a name may change in between)."""
        try:
            real = os.path.realpath(path, strict=True)
            status = os.stat(real)
        except (OSError, ValueError):
            return
        why = None
        try:
            state = os.path.realpath(self._state_dir, strict=True)
        except OSError:
            state = None
        if state is not None and (real == state or real.startswith(state.rstrip("/") + "/")
                                  or (status.st_nlink > 1 and _holds(state, status))):
            why = "in its state directory %s" % state
        for own, what in self._own_files if why is None else ():
            try:
                if os.path.samestat(status, os.stat(own)):
                    why = what
                    break
            except OSError:
                pass
        if why:
            raise Refused("%s is a file the service keeps for itself (%s): import_image does not copy it" % (path, why))

    def clone(self, image, node):
        """Make NODE's disk from IMAGE; return how tgtd reaches it, a Backing."""
        with self._clone_slots:
            out = self._run.copy("clone", image, node)
        return Backing(*out.rstrip("\n").split("\t"))

    def snapshot(self, node, image):
        self._copy_or_clean(image, node, "snapshot", node, image)

    def delete_image(self, image):
        self._run("delete", image)

    def remove(self, node):
        try:
            self._run("remove", node)
        except runner.CommandFailed as err:
            raise runner.CommandFailed("cannot remove the disk of node %s: %s" % (node, err)) from None

    def clean(self):
        """Remove what killed commands left: partial images, temporary snapshots. Returns the
        images whose partial a killed writer still holds open (rbd keeps its watch for 30 s), for
        clean_image later. Only while no copy runs: it takes every partial for a leftover."""
        return self._run("clean").split()

    def clean_image(self, image, node=None):
        """Remove what a killed copy that made IMAGE (a snapshot of NODE) left, once no one holds it.
        Each try is one quick command (BMI_SCRIPT_TIMEOUT), which says whether a killed writer still
        holds the partial image; tries again every few seconds while it does (or a try ran out of
        time), for up to CLEAN_PATIENCE_SECONDS in all: the wait is this clock's, not one command's."""
        started = time.monotonic()
        waiting = False
        while True:
            try:
                held = image in self._run("clean", image, *([node] if node else [])).split()
                problem = "a killed writer still holds it"
            except runner.NoAnswer as err:
                held, problem = True, str(err)
            if not held:
                if waiting:
                    log.info("removed the partial image %s after %.0f s", image, time.monotonic() - started)
                return
            if time.monotonic() - started + CLEAN_RETRY_SECONDS > CLEAN_PATIENCE_SECONDS:
                raise runner.CommandFailed("the partial image %s is still there after %d s: %s"
                                           % (image, CLEAN_PATIENCE_SECONDS, problem))
            if not waiting:
                log.info("the partial image %s is still held (%s): removing it once it is let go, trying every "
                         "%d s for up to %d s", image, problem, CLEAN_RETRY_SECONDS, CLEAN_PATIENCE_SECONDS)
                waiting = True
            time.sleep(CLEAN_RETRY_SECONDS)

    def list_images(self):
        images = []
        for line in self._run("list").splitlines():
            name, size = line.split()
            images.append({"name": name, "size_bytes": int(size)})
        return images

    def _copy_or_clean(self, image, node, *command):
        """Run a copy that makes IMAGE. A copy stopped for want of progress cannot take back what it
        made, so it is taken back here."""
        try:
            self._run.copy(*command)
        except runner.CommandFailed:
            try:
                self.clean_image(image, node)
            except runner.CommandFailed as err:   # the next start cleans up; the copy's failure is the news
                log.error("cannot take back the partial image %s yet: %s", image, err)
            raise


def _holds(directory, status):
    """Whether a file below directory (on its file system) is the file of status: a hard link."""
    for where, _, files in os.walk(directory):
        for name in files:
            try:
                if os.path.samestat(status, os.lstat(os.path.join(where, name))):
                    return True
            except OSError:
                pass
    return False
