"""Golden images held across gateways. NamedLocks ("image:NAME") order the operations on an image
at one gateway; these holds order them across gateways, through the shared records (RADOS with
the rbd backend: the state the gateways share lives in the cluster).

An operation that deletes an image ("delete") or makes one ("snapshot") holds it exclusively: a
second such operation of another gateway is refused as in use. A provision holds the image by its
node record, which names the image: it adds the record first and then waits while another gateway
deletes the image (wait_for_delete); the delete takes its hold first and then reads the node
records, and is refused if one names the image. Of a delete and a provision that race, one sees the
other: the provision goes on once the refused delete let go, or, the image gone, its clone finds no
image (NotFound); never a clone of an image half deleted.
"""
import contextlib
import logging
import time

from bmi.errors import InUse, Unavailable

DELETE, SNAPSHOT = "delete", "snapshot"
DOING = {DELETE: "deleting it", SNAPSHOT: "making it (create_snapshot)"}
POLL_SECONDS = 0.2
log = logging.getLogger("bmi.imageholds")


class ImageHolds:
    def __init__(self, records, gateway, patience):
        """patience: seconds a provision waits for another gateway's delete of its image."""
        self._records = records
        self._gateway = gateway
        self._patience = patience

    @contextlib.contextmanager
    def hold(self, image, operation):
        """Hold image for operation, for the with block; InUse if another gateway holds it. Only
        under the image's NamedLock, held exclusively: a hold of this gateway then is one that a
        killed operation left, and is taken over."""
        mine = {"gateway": self._gateway, "operation": operation}
        while True:
            holder = self._records.take_image(image, mine)
            if holder is None:
                break
            if holder.get("gateway") != self._gateway:
                raise InUse("image %s is in use: gateway %s is %s" % (
                    image, holder.get("gateway"), DOING.get(holder.get("operation"), "using it")))
            self._records.let_go_image(image, self._gateway)
        try:
            yield
        finally:
            self._records.let_go_image(image, self._gateway)

    def wait_for_delete(self, image):
        """Wait while another gateway deletes image (its node record added already); Unavailable if
        that takes longer than patience."""
        deadline = time.monotonic() + self._patience
        waited_for = None   # the gateway whose delete this provision waited for
        while True:
            holder = self._records.image_hold(image)
            if holder is None or holder.get("operation") != DELETE or holder.get("gateway") == self._gateway:
                if waited_for:
                    log.info("image %s: gateway %s's delete is over, the provision goes on", image, waited_for)
                return
            if not waited_for:
                waited_for = holder.get("gateway")
                log.info("image %s: a provision waits for gateway %s's delete of it", image, waited_for)
            if time.monotonic() >= deadline:
                raise Unavailable("image %s is being deleted by gateway %s, which has not finished in %g s"
                                  % (image, holder.get("gateway"), self._patience))
            time.sleep(POLL_SECONDS)
