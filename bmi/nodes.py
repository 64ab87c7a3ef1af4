"""What the service knows of each provisioned node (a NodeRecord) and of each gateway (a
GatewayRecord). bmi/records.py keeps them.

A node's record is written before its operation changes anything, and its state says how far the
operation got, so that a restarted gateway can undo what a crash left half done:
  provisioning  its disk is being made; nothing exports it yet
  exporting     its disk exists, and every gateway exports it now; the provision is not done
  ready         provisioned: its disk, its targets at every gateway that answers, its boot scripts
  detaching     being taken away: gateways drop its targets and boot scripts, then its disk goes
While a node is provisioning, exporting or detaching, its record names the gateway whose operation
it is; when that gateway starts again it takes the node away (recovery.py). The moves between
states are TRANSITIONS, and the record stores (records.py) refuse any other.

Records hold the node's CHAP secret: they are readable by root (files) or the service's Ceph user
(RADOS) alone.
"""
import dataclasses
import json

from bmi.errors import AlreadyExists, InUse

PROVISIONING, EXPORTING, READY, DETACHING = "provisioning", "exporting", "ready", "detaching"
GONE = None   # no record
# state: the states a record may move to from it (GONE: added, or deleted)
TRANSITIONS = {
    GONE: {PROVISIONING},
    PROVISIONING: {EXPORTING, GONE},     # the disk is made; or the provision is undone
    EXPORTING: {READY, DETACHING},       # exported here; or taken back at every gateway
    READY: {DETACHING},
    DETACHING: {READY, GONE},            # given back after a failed detach; or gone
}
EXPORTED = (EXPORTING, READY)   # the states in which gateways export a node


class IllegalTransition(RuntimeError):
    """A move between states that TRANSITIONS does not allow: a bug, never the user's doing."""


def check_transition(node, old, new):
    if new not in TRANSITIONS[old]:
        raise IllegalTransition("node %s: no move from %s to %s" % (node, old or "no record", new or "no record"))


@dataclasses.dataclass(frozen=True)
class Backing:
    """How tgtd reaches a node's disk: its backing-store type, path and options (tgtadm's --bstype,
    --backing-store, --bsopts)."""
    bstype: str
    path: str
    bsopts: str = ""


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    SCHEMA = 2   # the "schema" field of a stored record: what this code writes; it reads 1 (no MACs) too

    node: str
    image: str
    iqn: str
    chap_user: str
    chap_secret: str
    state: str = PROVISIONING
    backing: Backing = None   # once the disk exists
    gateway: str = None       # the gateway whose operation is under way, while it is
    macs: tuple = ()          # the node's network cards, by which the boot service knows it
    version: int = dataclasses.field(default=0, compare=False)   # the store's, not stored: what a change expects

    def changed(self, **fields):
        return dataclasses.replace(self, **fields)

    def to_json(self):
        fields = dataclasses.asdict(self)
        del fields["version"]
        return json.dumps(dict(fields, schema=self.SCHEMA))

    @classmethod
    def from_json(cls, text, where, version=0):
        fields = json.loads(text)
        schema = fields.pop("schema", None)
        if schema not in (1, cls.SCHEMA):
            raise ValueError("%s: node record of schema %r; this server reads schemas 1 to %d" % (where, schema, cls.SCHEMA))
        if fields["backing"] is not None:
            fields["backing"] = Backing(**fields["backing"])
        fields["macs"] = tuple(fields.get("macs", ()))
        return cls(version=version, **fields)


@dataclasses.dataclass(frozen=True)
class GatewayRecord:
    """A gateway: a main server with its own tgtd. Every gateway exports every node in EXPORTED."""
    name: str
    iscsi_portal: str   # where its tgtd listens
    boot_portal: str    # where nodes reach that tgtd: boot scripts name every gateway's
    uri: str = None     # its main server, for the other gateways (None: not serving, an in-process one)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


def node_exists(record):
    """The error for a second provision of record's node: AlreadyExists, or InUse while an operation runs."""
    if record.state == READY:
        return AlreadyExists("node %s is already provisioned (from image %s)" % (record.node, record.image))
    return InUse("node %s is being %s by gateway %s" % (
        record.node, "detached" if record.state == DETACHING else "provisioned", record.gateway))


class Changed(InUse):
    """A record changed, or went, since it was read: another gateway's operation came first."""
