"""What an image, node or gateway name may be. Checked before any command runs, by client and server alike."""
import re

IMAGE_FORM = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NODE_FORM = "^[a-z0-9][a-z0-9.-]{0,62}$"   # becomes part of an IQN, which is lower case
GATEWAY_FORM = "^[a-z0-9][a-z0-9-]{0,31}$"   # part of object names in RADOS and the name server


def _checker(kind, form):
    """check(name): name, if it is a str of the form; else ValueError saying what it must be."""
    matcher = re.compile(form)

    def check(name):
        # fullmatch: "$" alone would accept a trailing newline
        if not isinstance(name, str) or not matcher.fullmatch(name):
            raise ValueError("invalid %s name %r: it must match %s" % (kind, name, form))
        return name
    return check


check_image = _checker("image", IMAGE_FORM)
check_node = _checker("node", NODE_FORM)
check_gateway = _checker("gateway", GATEWAY_FORM)


def check_path(path):
    """A file path on the server host, as given to import_image."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise ValueError("invalid path %r: it must be an absolute path on the server host" % (path,))
    return path
