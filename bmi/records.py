"""Where node and gateway records are kept: in files of one server's state directory (FileRecords),
or in RADOS, shared by every gateway (RadosRecords). records_for picks one by the storage backend.

Both honour Records: adding is exclusive (one of two gateways adding a node wins), a change holds
only if the record is still the version read (else Changed), moves between states are only those
nodes.TRANSITIONS allows, and every read is fresh.

Shared records announce the changes the other gateways act on (bmi/changes.py): those of node and
gateway records, but for a node's add (provisioning, it is its gateway's alone: bmi/exports.py leaves
it be) and a move whose caller asks every other gateway itself at once (sync_node).

They keep the holds on golden images too (bmi/imageholds.py): which gateway deletes or makes an
image, taken exclusively (of two gateways, one wins).
"""
import abc
import json
import os
import threading

from bmi import runner
from bmi.errors import AlreadyExists
from bmi.files import remove_partials, write_private
from bmi.nodes import GONE, Changed, GatewayRecord, ImageOwner, NodeRecord, check_transition, node_exists

SHARED = {"rbd": "rados"}   # storage backend: the helper (scripts/records/) of its shared records


def records_for(settings):
    """The records of the storage backend: shared by every gateway in the cluster, or this server's files."""
    if settings.BMI_BACKEND in SHARED:
        return RadosRecords(runner.Helper("records", SHARED[settings.BMI_BACKEND], settings))
    return FileRecords(os.path.join(settings.BMI_STATE_DIR, "nodes"))


class Records(abc.ABC):
    """The records of nodes and gateways. A node's record changes only by add, move and delete,
    each of which checks the move between states, and by place, which changes no state."""

    def add(self, record):
        """Save a new node's record, provisioning (not announced); AlreadyExists or InUse if the node has one."""
        check_transition(record.node, GONE, record.state)
        return self._create(record)

    def move(self, record, state, announce=True, **fields):
        """Save record, as read, in state with fields changed; Changed if it is not the version read.
        Not announced without announce: the caller asks each other gateway to sync the node at once."""
        check_transition(record.node, record.state, state)
        return self._replace(record.changed(state=state, **fields), announce)

    def place(self, record, paths):
        """Save record, as read, naming paths as the gateways that export it (in no other state than
        the one it has); Changed if it is not the version read."""
        return self._replace(record.changed(paths=tuple(paths)))

    def delete(self, record):
        check_transition(record.node, record.state, GONE)
        self._remove(record)

    def close(self):
        """Let go of what the store holds open (a connection to the cluster); files hold nothing."""

    def watchers(self):
        """The Ceph clients that watch the records' changes (bmi/changes.py), by which gateways are
        alive; None where the store cannot tell (files: one gateway)."""
        return None

    @abc.abstractmethod
    def load(self):
        """Open the store (read what a restarted server needs); fail if it cannot be reached."""

    @abc.abstractmethod
    def get(self, node):
        """The node's record, or None."""

    @abc.abstractmethod
    def all(self):
        """Every node's record."""

    @abc.abstractmethod
    def gateways(self):
        """Every gateway's record."""

    @abc.abstractmethod
    def put_gateway(self, gateway):
        """Save a gateway's record, replacing what it had."""

    @abc.abstractmethod
    def remove_gateway(self, name):
        """Forget a gateway; one that is gone already is fine."""

    @abc.abstractmethod
    def image_owners(self):
        """{image: ImageOwner} of the golden images that have one (bmi/rights.py); one made before
        projects, or whose import a crash cut short of it, has none: the administrators' alone."""

    @abc.abstractmethod
    def image_owner(self, image):
        """The ImageOwner of one golden image, or None (as image_owners)."""

    @abc.abstractmethod
    def put_image_owner(self, image, owner):
        """Save whose image is, replacing what it had."""

    @abc.abstractmethod
    def remove_image_owner(self, image):
        """Forget whose image was; one that has none is fine."""

    @abc.abstractmethod
    def take_image(self, image, hold):
        """Hold image exclusively: hold is {"gateway": NAME, "operation": WHAT}. None if taken,
        or the hold that another has on it."""

    @abc.abstractmethod
    def image_hold(self, image):
        """The hold on image, or None."""

    @abc.abstractmethod
    def let_go_image(self, image, gateway):
        """End gateway's hold on image; one it does not hold is fine."""

    def let_go_images(self, gateway):
        """End every hold of gateway: what its killed operations held."""
        for image in self._held_images():
            self.let_go_image(image, gateway)

    @abc.abstractmethod
    def _held_images(self):
        """The images held."""

    @abc.abstractmethod
    def _create(self, record):
        """Save a new record exclusively: the saved one, with its version."""

    @abc.abstractmethod
    def _replace(self, record, announce=True):
        """Save record at the version it carries: the saved one; Changed if the stored one differs."""

    @abc.abstractmethod
    def _remove(self, record):
        """Delete the record at the version it carries; Changed if the stored one differs."""


class FileRecords(Records):
    """One JSON file a node in a directory, and one an image's owner in the directory "owners" beside
    it (made with the first), kept in memory too; the one gateway, in memory only."""

    def __init__(self, directory):
        self.directory = directory
        self._owners_directory = os.path.join(os.path.dirname(directory), "owners")   # IMAGE.json: its ImageOwner
        self._lock = threading.Lock()
        self._records = {}
        self._owners = {}
        self._gateways = {}
        self._holds = {}   # image -> hold: one gateway, in memory

    def load(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        remove_partials(self.directory)
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json") and not name.startswith("."):
                path = os.path.join(self.directory, name)
                with open(path) as f:
                    record = NodeRecord.from_json(f.read(), path, version=1)
                self._records[record.node] = record
        if not os.path.isdir(self._owners_directory):
            return
        remove_partials(self._owners_directory)
        for name in os.listdir(self._owners_directory):
            if name.endswith(".json") and not name.startswith("."):
                with open(os.path.join(self._owners_directory, name)) as f:
                    self._owners[name[:-len(".json")]] = ImageOwner.from_json(f.read())

    def get(self, node):
        with self._lock:
            return self._records.get(node)

    def all(self):
        with self._lock:
            return list(self._records.values())

    def _create(self, record):
        record = record.changed(version=1)
        with self._lock:
            if record.node in self._records:
                raise node_exists(self._records[record.node])
            for other in self._records.values():
                taken(other, record.macs)
            self._records[record.node] = record   # holds the name while the record is written
        try:
            self._write(record)
        except BaseException:   # a full disk, say: the node was never there
            with self._lock:
                del self._records[record.node]
            raise
        return record

    def _replace(self, record, announce=True):
        """On disk whole or not at all, then in memory."""
        self._expect(record)
        saved = record.changed(version=record.version + 1)
        self._write(saved)
        with self._lock:
            self._records[record.node] = saved
        return saved

    def _remove(self, record):
        self._expect(record)
        try:
            os.unlink(self._path(record.node))
        except FileNotFoundError:
            pass
        with self._lock:
            self._records.pop(record.node, None)

    def gateways(self):
        with self._lock:
            return list(self._gateways.values())

    def put_gateway(self, gateway):
        with self._lock:
            self._gateways[gateway.name] = gateway

    def remove_gateway(self, name):
        with self._lock:
            self._gateways.pop(name, None)

    def image_owners(self):
        with self._lock:
            return dict(self._owners)

    def image_owner(self, image):
        with self._lock:
            return self._owners.get(image)

    def put_image_owner(self, image, owner):
        os.makedirs(self._owners_directory, mode=0o700, exist_ok=True)
        write_private(os.path.join(self._owners_directory, image + ".json"), owner.to_json())
        with self._lock:
            self._owners[image] = owner

    def remove_image_owner(self, image):
        try:
            os.unlink(os.path.join(self._owners_directory, image + ".json"))
        except FileNotFoundError:
            pass
        with self._lock:
            self._owners.pop(image, None)

    def take_image(self, image, hold):
        with self._lock:
            if image in self._holds:
                return self._holds[image]
            self._holds[image] = dict(hold)
            return None

    def image_hold(self, image):
        with self._lock:
            return self._holds.get(image)

    def let_go_image(self, image, gateway):
        with self._lock:
            if self._holds.get(image, {}).get("gateway") == gateway:
                del self._holds[image]

    def _held_images(self):
        with self._lock:
            return list(self._holds)

    def _expect(self, record):
        current = self.get(record.node)
        if current is None or current.version != record.version:
            raise Changed("the record of node %s changed meanwhile" % record.node)

    def _path(self, node):
        return os.path.join(self.directory, node + ".json")

    def _write(self, record):
        write_private(self._path(record.node), record.to_json())


def taken(owner, macs):
    """AlreadyExists if the record owner holds one of macs."""
    for mac in macs:
        if mac in owner.macs:
            raise AlreadyExists("MAC address %s belongs to node %s" % (mac, owner.node))


class RadosRecords(Records):
    """Records in RADOS objects, "node.NODE", "gateway.NAME", "owner.IMAGE" (whose a golden image
    is) and "image.IMAGE" (a hold on a golden image, while it lasts), by way of a helper that keeps one
    connection to the cluster open (scripts/records/rados). A node's MAC addresses are claimed by
    objects "mac.MAC" naming it, made exclusively once its record exists: of two gateways giving one
    MAC to two nodes, one wins. A claim whose node's record does not hold the MAC (a crash between
    the two) is stale, and taken over."""

    def __init__(self, helper):
        self._helper = helper

    def load(self):
        self._helper.request(op="list", prefix="gateway.")   # the cluster answers: or fail at start

    def close(self):
        self._helper.close()

    def watchers(self):
        return set(self._helper.request(op="watchers")["watchers"])

    def get(self, node):
        item = self._helper.request(op="get", key="node." + node)["item"]
        return NodeRecord.from_json(item[1], "node." + node, version=item[0]) if item else None

    def all(self):
        return [NodeRecord.from_json(text, key, version=version)
                for key, version, text in self._helper.request(op="list", prefix="node.")["items"]]

    def _create(self, record):
        answer = self._helper.request(op="create", key="node." + record.node, text=record.to_json(), announce=False)
        if "conflict" in answer:
            existing = self.get(record.node)
            raise node_exists(existing or record)
        record = record.changed(version=answer["version"])
        try:
            for mac in record.macs:
                self._claim(mac, record.node)
        except BaseException:
            self._remove(record, announce=False)
            raise
        return record

    def _claim(self, mac, node):
        while "conflict" in self._unfollowed(op="create", key="mac." + mac, text=node):
            item = self._helper.request(op="get", key="mac." + mac)["item"]
            if item is None:
                continue   # let go of meanwhile
            owner = self.get(item[1]) if item[1] != node else None
            if owner is not None:
                taken(owner, [mac])
            if "conflict" not in self._unfollowed(op="replace", key="mac." + mac, version=item[0], text=node):
                return

    def _release(self, mac, node):
        item = self._helper.request(op="get", key="mac." + mac)["item"]
        if item is not None and item[1] == node:
            self._unfollowed(op="remove", key="mac." + mac, version=item[0])   # a conflict: not ours now

    def _replace(self, record, announce=True):
        answer = self._helper.request(op="replace", key="node." + record.node, version=record.version,
                                      text=record.to_json(), announce=announce)
        self._check(answer, record.node)
        return record.changed(version=answer["version"])

    def _remove(self, record, announce=True):
        self._check(self._helper.request(op="remove", key="node." + record.node, version=record.version,
                                         announce=announce), record.node)
        for mac in record.macs:
            self._release(mac, record.node)

    def gateways(self):
        return [GatewayRecord.from_json(text) for _, _, text in
                self._helper.request(op="list", prefix="gateway.")["items"]]

    def put_gateway(self, gateway):
        self._helper.request(op="put", key="gateway." + gateway.name, text=gateway.to_json())

    def remove_gateway(self, name):
        self._helper.request(op="remove", key="gateway." + name, version=0)
        self.let_go_images(name)   # gone for good: its holds with it

    def image_owners(self):
        return {key[len("owner."):]: ImageOwner.from_json(text)
                for key, _, text in self._helper.request(op="list", prefix="owner.")["items"]}

    def image_owner(self, image):
        item = self._helper.request(op="get", key="owner." + image)["item"]
        return ImageOwner.from_json(item[1]) if item else None

    def put_image_owner(self, image, owner):
        self._unfollowed(op="put", key="owner." + image, text=owner.to_json())

    def remove_image_owner(self, image):
        self._unfollowed(op="remove", key="owner." + image, version=0)

    def take_image(self, image, hold):
        while "conflict" in self._unfollowed(op="create", key="image." + image, text=json.dumps(hold)):
            holder = self.image_hold(image)
            if holder is not None:
                return holder
            # let go of meanwhile: try again
        return None

    def image_hold(self, image):
        item = self._helper.request(op="get", key="image." + image)["item"]
        return json.loads(item[1]) if item else None

    def let_go_image(self, image, gateway):
        item = self._helper.request(op="get", key="image." + image)["item"]
        if item is not None and json.loads(item[1]).get("gateway") == gateway:
            self._unfollowed(op="remove", key="image." + image, version=item[0])   # a conflict: not ours now

    def _held_images(self):
        return [key[len("image."):] for key, _, _ in self._helper.request(op="list", prefix="image.")["items"]]

    def _unfollowed(self, **request):
        """A change of a record the gateways do not follow (a MAC's claim, an image's owner or hold):
        not announced."""
        return self._helper.request(announce=False, **request)

    @staticmethod
    def _check(answer, node):
        if answer.get("conflict") == "gone":
            raise Changed("node %s was taken away meanwhile, by another gateway" % node)
        if "conflict" in answer:
            raise Changed("the record of node %s changed meanwhile, by another gateway" % node)
