"""What an image or node name may be. Checked before any command runs, by client and server alike."""
import re

IMAGE_FORM = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NODE_FORM = "^[a-z0-9][a-z0-9.-]{0,62}$"   # becomes part of an IQN, which is lower case
_IMAGE = re.compile(IMAGE_FORM)
_NODE = re.compile(NODE_FORM)


def check_image(name):
    # fullmatch: "$" alone would accept a trailing newline
    if not isinstance(name, str) or not _IMAGE.fullmatch(name):
        raise ValueError("invalid image name %r: it must match %s" % (name, IMAGE_FORM))
    return name


def check_node(name):
    if not isinstance(name, str) or not _NODE.fullmatch(name):
        raise ValueError("invalid node name %r: it must match %s" % (name, NODE_FORM))
    return name


GATEWAY_FORM = "^[a-z0-9][a-z0-9-]{0,31}$"   # part of object names in RADOS and the name server
_GATEWAY = re.compile(GATEWAY_FORM)


def check_gateway(name):
    if not isinstance(name, str) or not _GATEWAY.fullmatch(name):
        raise ValueError("invalid gateway name %r: it must match %s" % (name, GATEWAY_FORM))
    return name


def check_path(path):
    """A file path on the server host, as given to import_image."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise ValueError("invalid path %r: it must be an absolute path on the server host" % (path,))
    return path
