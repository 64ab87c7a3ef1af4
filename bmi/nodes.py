"""What the service knows of each provisioned node (a NodeRecord) and of each gateway (a
GatewayRecord). bmi/records.py keeps them.

A node's record is written before its operation changes anything, and its state says how far the
operation got, so that a restarted gateway can undo what a crash left half done:
  provisioning  being made; undone when the gateway that made it starts again
  ready         complete: disk, targets and boot scripts exist
  detaching     being taken away; finished when the gateway that took it starts again
Records hold the node's CHAP secret: they are readable by root (files) or the service's Ceph user
(RADOS) alone.
"""
import dataclasses
import json

PROVISIONING, READY, DETACHING = "provisioning", "ready", "detaching"


@dataclasses.dataclass(frozen=True)
class Backing:
    """How tgtd reaches a node's disk: its backing-store type, path and options (tgtadm's --bstype,
    --backing-store, --bsopts)."""
    bstype: str
    path: str
    bsopts: str = ""


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    SCHEMA = 1   # the "schema" field of a stored record: what this code reads and writes

    node: str
    image: str
    iqn: str
    chap_user: str
    chap_secret: str
    state: str = PROVISIONING
    backing: Backing = None   # once the disk exists
    gateway: str = None       # the gateway whose operation is under way, while it is
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
        if schema != cls.SCHEMA:
            raise ValueError("%s: node record of schema %r; this server reads schema %d" % (where, schema, cls.SCHEMA))
        if fields["backing"] is not None:
            fields["backing"] = Backing(**fields["backing"])
        return cls(version=version, **fields)


@dataclasses.dataclass(frozen=True)
class GatewayRecord:
    """A gateway: a main server with its own tgtd. Every gateway exports every ready node."""
    name: str
    iscsi_portal: str   # where its tgtd listens
    boot_portal: str    # where nodes reach that tgtd: boot scripts name every gateway's
    uri: str = None     # its main server, for the other gateways (None: not serving, an in-process one)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


class NodeExists(RuntimeError):
    def __init__(self, record):
        if record.state == READY:
            super().__init__("node %s is already provisioned (from image %s)" % (record.node, record.image))
        else:
            super().__init__("node %s is being %s by gateway %s" % (
                record.node, "provisioned" if record.state == PROVISIONING else "detached", record.gateway))


class Changed(RuntimeError):
    """A record changed, or went, since it was read: another gateway's operation came first."""
