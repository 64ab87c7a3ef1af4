"""Storage backend: golden images and node disks, kept by the script scripts/storage/<BMI_BACKEND>.

A backend is one executable script taking the commands of scripts/README; adding a backend is
adding a script.
"""
import threading

from bmi import runner
from bmi.nodes import Backing


class Storage:
    def __init__(self, settings):
        self._run = runner.Script("storage", settings.BMI_BACKEND, settings)
        # A clone is a short, CPU-bound command. Started all at once, a burst of them shares the
        # cores, ends together and then queues at tgtd, which opens LUNs one at a time; a few at a
        # time, each disk goes on to tgtd as soon as it exists, while the next ones are cloned.
        self._clone_slots = threading.BoundedSemaphore(settings.BMI_CLONE_CONCURRENCY)

    def import_image(self, image, path):
        self._run("import", image, path)

    def clone(self, image, node):
        """Make NODE's disk from IMAGE; return how tgtd reaches it, a Backing."""
        with self._clone_slots:
            out = self._run("clone", image, node)
        return Backing(*out.rstrip("\n").split("\t"))

    def snapshot(self, node, image):
        self._run("snapshot", node, image)

    def remove(self, node):
        self._run("remove", node)

    def list_images(self):
        images = []
        for line in self._run("list").splitlines():
            name, size = line.split()
            images.append({"name": name, "size_bytes": int(size)})
        return images
