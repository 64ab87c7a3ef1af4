"""Storage backend: golden images and node disks, kept by the script scripts/storage/<BMI_BACKEND>.

A backend is one executable script taking the commands of scripts/README; adding a backend is
adding a script. Copies (import, snapshot, a clone) are bounded by their progress, the other
commands by the clock (bmi/runner.py).
"""
import logging
import threading

from bmi import runner
from bmi.nodes import Backing

log = logging.getLogger("bmi.storage")


class Storage:
    def __init__(self, settings):
        self._run = runner.Script("storage", settings.BMI_BACKEND, settings)
        # A clone is a short, CPU-bound command. Started all at once, a burst of them shares the
        # cores, ends together and then queues at tgtd, which opens LUNs one at a time; a few at a
        # time, each disk goes on to tgtd as soon as it exists, while the next ones are cloned.
        self._clone_slots = threading.BoundedSemaphore(settings.BMI_CLONE_CONCURRENCY)

    def import_image(self, image, path):
        self._copy_or_clean(image, None, "import", image, path)

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
        """Remove what a killed copy that made IMAGE (a snapshot of NODE) left, once no one holds it."""
        self._run("clean", image, *([node] if node else []))

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
