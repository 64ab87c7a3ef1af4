"""Storage backend: golden images and node disks, kept by the script scripts/storage/<BMI_BACKEND>.

A backend is one executable script taking the commands below (see scripts/storage/file); it reads
its settings from the BMI_* environment. Adding a backend is adding a script.
"""
import threading

from bmi import runner


class Storage:
    def __init__(self, settings):
        self._run = runner.Script("storage", settings.BMI_BACKEND, settings)
        # A clone is a short, CPU-bound command. Started all at once, a burst of them shares the
        # cores, ends together and then queues at tgtd, which opens LUNs one at a time; a few at a
        # time, each disk goes on to tgtd as soon as it exists, while the next ones are cloned.
        if settings.BMI_CLONE_CONCURRENCY < 1:
            raise ValueError("BMI_CLONE_CONCURRENCY must be at least 1")
        self._clone_slots = threading.BoundedSemaphore(settings.BMI_CLONE_CONCURRENCY)

    def import_image(self, image, path):
        self._run("import", image, path)

    def clone(self, image, node):
        """Make NODE's disk from IMAGE; return how tgtd reaches it: [bstype, backing store, bsopts].

        The script prints them on one line separated by tabs; bsopts may be missing.
        """
        with self._clone_slots:
            out = self._run("clone", image, node)
        bstype, backing, *bsopts = out.rstrip("\n").split("\t")
        return [bstype, backing, bsopts[0] if bsopts else ""]

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
