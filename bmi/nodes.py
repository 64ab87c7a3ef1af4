"""What the service knows of each provisioned node (a NodeRecord) and of each gateway (a
GatewayRecord). bmi/records.py keeps them.

A node's record is written before its operation changes anything, and its state says how far the
operation got, so that a restarted gateway can undo what a crash left half done:
  provisioning  its disk is being made; nothing exports it yet
  exporting     its disk exists, and the gateways placed for it export it now; the provision is not done
  ready         provisioned: its disk, its targets at its placed gateways, its boot scripts
  detaching     being taken away: gateways drop its targets and boot scripts, then its disk goes
While a node is provisioning, exporting or detaching, its record names the gateway whose operation
it is; when that gateway starts again it takes the node away (recovery.py). The moves between
states are TRANSITIONS, and the record stores (records.py) refuse any other.

Records hold the node's CHAP secret and its BMC's password: they are readable by root (files) or the service's Ceph user
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
class Bmc:
    """A node's baseboard management controller, through which bmi/power.py powers it: its driver
    (a script in scripts/power/), its address (HOST or HOST:PORT) and its user's name and password.
    The password is kept like the CHAP secret, and no listing, log or repr shows it."""
    driver: str
    address: str
    user: str
    password: str = dataclasses.field(repr=False)

    def public(self):
        """What a listing shows of it."""
        return {"driver": self.driver, "address": self.address, "user": self.user}


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    SCHEMA = 5   # the "schema" field of a stored record: what this code writes; it reads 1 (no MACs), 2 (no paths), 3 (no BMC), 4 (no project) too

    node: str
    image: str
    iqn: str
    chap_user: str
    chap_secret: str
    state: str = PROVISIONING
    backing: Backing = None   # once the disk exists
    gateway: str = None       # the gateway whose operation is under way, while it is
    macs: tuple = ()          # the node's network cards, by which the boot service knows it
    paths: tuple = ()         # the gateways placed to export it (bmi/placement.py); none: every gateway
    bmc: Bmc = None           # its BMC, if bmi-rpc powers it
    project: str = None       # whose it is (bmi/rights.py); none: the administrators' alone
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
        if schema not in range(1, cls.SCHEMA + 1):
            raise ValueError("%s: node record of schema %r; this server reads schemas 1 to %d" % (where, schema, cls.SCHEMA))
        if fields["backing"] is not None:
            fields["backing"] = Backing(**fields["backing"])
        fields["macs"] = tuple(fields.get("macs", ()))
        fields["paths"] = tuple(fields.get("paths", ()))
        fields["bmc"] = Bmc(**fields["bmc"]) if fields.get("bmc") else None
        return cls(version=version, **fields)


@dataclasses.dataclass(frozen=True)
class ImageOwner:
    """Whose a golden image is (bmi/rights.py): its project (None: the administrators' alone), and
    whether every project may provision from it."""
    project: str = None
    public: bool = False

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class GatewayRecord:
    """A gateway: a main server with its own tgtd. It exports the nodes in EXPORTED placed on it."""
    name: str
    iscsi_portal: str   # where its tgtd listens
    boot_portal: str    # where nodes reach that tgtd: boot scripts name every gateway's
    uri: str = None     # its main server, for the other gateways (None: not serving, an in-process one)
    watcher: str = None   # its Ceph client watching the changes (bmi/changes.py): alive while Ceph has that watch

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
