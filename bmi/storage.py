"""Storage backend: golden images and node disks, kept by the script scripts/storage/<BMI_BACKEND>.

A backend is one executable script taking the commands below (see scripts/storage/file); it reads
its settings from the BMI_* environment. Adding a backend is adding a script.
"""
from bmi import runner


class Storage:
    def __init__(self, settings):
        self._run = runner.Script("storage", settings.BMI_BACKEND, settings)

    def import_image(self, image, path):
        self._run("import", image, path)

    def clone(self, image, node):
        """Make NODE's disk from IMAGE; return how tgtd reaches it: [bstype, backing store, bsopts].

        The script prints them on one line separated by tabs; bsopts may be missing.
        """
        bstype, backing, *bsopts = self._run("clone", image, node).rstrip("\n").split("\t")
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
