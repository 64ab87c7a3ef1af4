"""What an image, node, gateway or project name, a path or a MAC address may be. Checked before any command
runs, by client and server alike; a value that is not one is BadInput."""
import re

from bmi.errors import BadInput
from config import GATEWAY_FORM, IMAGE_FORM, NODE_FORM, PROJECT_FORM

MAC_FORM = "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"   # as the service keeps it: lower case, ':' between
MAX_MACS = 8


def _checker(kind, form):
    """check(name): name, if it is a str of the form; else BadInput saying what it must be."""
    matcher = re.compile(form)

    def check(name):
        # fullmatch: "$" alone would accept a trailing newline
        if not isinstance(name, str) or not matcher.fullmatch(name):
            raise BadInput("invalid %s name %r: it must match %s" % (kind, name, form))
        return name
    return check


check_image = _checker("image", IMAGE_FORM)
check_node = _checker("node", NODE_FORM)
check_gateway = _checker("gateway", GATEWAY_FORM)
check_project = _checker("project", PROJECT_FORM)


def check_path(path):
    """A file path on the server host, as given to import_image."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise BadInput("invalid path %r: it must be an absolute path on the server host" % (path,))
    return path


def check_mac(mac):
    """A network card's MAC address (52:54:00:12:34:56, or with '-', any case), as the service keeps
    it; a group (multicast) address is no card's."""
    value = mac.strip().lower() if isinstance(mac, str) else None
    if value is not None and re.fullmatch(MAC_FORM.replace(":", "-"), value):
        value = value.replace("-", ":")
    if value is None or not re.fullmatch(MAC_FORM, value):
        raise BadInput("invalid MAC address %r: it must be six bytes in hex, as 52:54:00:12:34:56" % (mac,))
    if int(value[:2], 16) & 1:
        raise BadInput("invalid MAC address %s: a group address, not one network card's" % value)
    return value


def check_macs(macs):
    """A node's MAC addresses: a list of at most MAX_MACS, each a MAC once."""
    if not isinstance(macs, (list, tuple)) or len(macs) > MAX_MACS:
        raise BadInput("MAC addresses must be a list of at most %d" % MAX_MACS)
    checked = tuple(check_mac(mac) for mac in macs)
    if len(set(checked)) != len(checked):
        raise BadInput("a MAC address is given twice: %s" % ", ".join(checked))
    return checked
