"""The errors the service raises on purpose, by kind. Each crosses Pyro4 as its own type (serpent
rebuilds the registered classes), and the client maps each to an exit code of its own (README,
Operations), so neither a person nor a script has to read the message to tell them apart.

Every one is a RuntimeError (a refusal or a failure), and BadInput a ValueError too.
"""
import Pyro4.util


class ServiceError(RuntimeError):
    """An operation failed or was refused; nothing is left half done."""
    exit_code = 1


class BadInput(ServiceError, ValueError):
    """An argument the operation cannot take: a malformed name, MAC, path or value."""
    exit_code = 2


class NotFound(ServiceError):
    """No such image, node or gateway (or one the caller may not see)."""
    exit_code = 4


class AlreadyExists(ServiceError):
    """The image, node or MAC address is there already."""
    exit_code = 5


class InUse(ServiceError):
    """The thing is busy: initiators are logged in, nodes use the image, another operation holds it."""
    exit_code = 6


class Refused(ServiceError):
    """The request is well formed but not allowed: a file the service keeps for itself, a gateway
    that still answers, a size past the cap."""
    exit_code = 7


class Unavailable(ServiceError):
    """Something the operation needs (tgtd, Ceph, a copy that stopped moving) did not answer in time."""
    exit_code = 8


KINDS = (ServiceError, BadInput, NotFound, AlreadyExists, InUse, Refused, Unavailable)


def _register():
    for kind in KINDS:
        name = "%s.%s" % (kind.__module__, kind.__name__)
        Pyro4.util.SerializerBase.register_dict_to_class(
            name, lambda _, data, kind=kind: Pyro4.util.SerializerBase.make_exception(kind, data))


_register()
