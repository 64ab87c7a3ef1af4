"""Which gateways export a node: rendezvous (highest-random-weight) hashing over the live gateways.

Each gateway gets a weight for each node, a hash of the two names; a node's paths are the BMI_PATHS
gateways of highest weight among those alive (all of them while fewer are). Every gateway computes
it alike from the same names, so they agree without talking; a gateway that joins takes only the
paths it now wins, and one that leaves gives up only its own, each to the next in its nodes' order.
"""
import hashlib


def weight(gateway, node):
    """A stable pseudo-random weight of gateway for node (the same in every process: not hash())."""
    digest = hashlib.blake2b(("%s\0%s" % (gateway, node)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(node, gateways):
    """The gateways in node's rendezvous order, highest weight first (the name breaks a tie)."""
    return sorted(gateways, key=lambda gateway: (weight(gateway, node), gateway), reverse=True)


def placed(node, gateways, paths):
    """The paths gateways of gateways (names) that export node, first the first in its order."""
    return tuple(ranked(node, gateways)[:paths])
