"""Who may do what (README, Security: Rights). With TLS, a caller is the subject of its client
certificate; BMI_ROLES_FILE gives each subject a role and its projects:

    [{"subject": "CN=alice,O=Team A", "role": "operator", "projects": ["team-a"]}, ...]

A subject is written as `openssl x509 -noout -subject -nameopt RFC2253` prints it. Roles:
  viewer    lists (its projects' nodes and images, and the public images), ping, status
  operator  a viewer that also provisions, detaches, snapshots and powers its projects' nodes and
            imports images into its projects
  admin     everything, of every project: delete_image, remove_gateway, the gateways' peer calls
A subject the file does not name is refused. Without a roles file every caller is an admin, as is
the key holder without TLS and a call made in the server's own process.

Nodes and images belong to a project (None: the admins' alone); an image may be public, which
every caller may provision from. What a caller may not see is refused as if it did not exist.
"""
import contextlib
import contextvars
import functools
import json
import logging
import os
import threading
import time

import Pyro4

from bmi import names
from bmi.errors import BadInput, Refused

log = logging.getLogger("bmi.rights")

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
VIEWING = {"list_all_images", "ping", "health"}
OPERATING = VIEWING | {"import_image", "provision", "detach_node", "create_snapshot", "power"}
MAY = {VIEWER: VIEWING, OPERATOR: OPERATING}   # and ADMIN: every call
ROLES = (VIEWER, OPERATOR, ADMIN)
# the names openssl -nameopt RFC2253 gives the attributes Python's ssl spells out; others as ssl spells them
SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
               "stateOrProvinceName": "ST", "localityName": "L", "streetAddress": "street",
               "domainComponent": "DC", "userId": "UID"}
KEY_HOLDER = "the key holder"   # the caller without TLS
IN_PROCESS = "in-process"       # a call made in the server's own process

_acting = contextvars.ContextVar("the caller of the operation this thread runs", default=None)


class Caller:
    """Who calls: subject, role (None: not in the roles file, refused) and projects."""

    def __init__(self, subject, role, projects=(), refusal=None):
        self.subject, self.role, self.projects = subject, role, tuple(projects)
        self.refusal = refusal or (None if role else "%s is not in the roles file" % subject)

    def check(self, call):
        """Refused unless the caller's role allows call."""
        if self.refusal:
            raise Refused(self.refusal)
        if self.role != ADMIN and call not in MAY[self.role]:
            raise Refused("%s is %s %s, who may not %s" % (self.subject, "an" if self.role == OPERATOR
                                                                     else "a", self.role, call))

    def sees(self, project):
        return self.role == ADMIN or project in self.projects

    def uses(self, owner):
        """Whether the caller may provision from an image of owner (an ImageOwner, or None)."""
        return self.role == ADMIN or owner is not None and (owner.public or owner.project in self.projects)

    def project_for(self, named):
        """The project of what the caller makes: the one named, which must be the caller's; else its
        one project (an admin's: none, the admins' alone)."""
        if named is not None:
            names.check_project(named)
            if not self.sees(named):
                raise Refused("%s is no operator of project %s" % (self.subject, named))
            return named
        if self.role == ADMIN:
            return self.projects[0] if len(self.projects) == 1 else None
        if len(self.projects) != 1:
            raise BadInput("%s has %s: name one with --project" % (
                self.subject, "projects %s" % ", ".join(self.projects) if self.projects else "no project"))
        return self.projects[0]


def acting():
    """The Caller of the operation this thread runs (an admin in the server's own process)."""
    return _acting.get() or Caller(IN_PROCESS, ADMIN)


def subject_of(certificate):
    """A certificate's subject (as ssl's getpeercert gives it) in RFC 4514's form, last part first."""
    def escaped(value):
        value = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
        if value[:1] in ("#", " "):
            value = "\\" + value
        return value[:-1] + "\\ " if value.endswith(" ") else value
    return ",".join("+".join("%s=%s" % (SHORT_NAMES.get(name, name), escaped(value)) for name, value in part)
                    for part in reversed(certificate["subject"]))


class Rights:
    """The roles file, read again whenever it changes (its inode, size or time)."""

    def __init__(self, settings):
        self.path = settings.BMI_ROLES_FILE
        self._tls = bool(settings.BMI_TLS_CERT)
        self._lock = threading.Lock()
        self._seen = None
        self._roles = {}
        self._problem = None

    def load(self):
        """Read the roles file at start: ValueError, one line, if it is not right."""
        if self.path:
            self._read()
            if self._problem:
                raise ValueError(self._problem)

    def caller(self):
        """The Caller of the Pyro4 call this thread serves."""
        connection = getattr(Pyro4.current_context, "client", None)
        if connection is None:
            return Caller(IN_PROCESS, ADMIN)
        certificate = connection.sock.getpeercert() if self._tls else None
        if not certificate:
            return Caller(KEY_HOLDER, ADMIN)
        subject = subject_of(certificate)
        if not self.path:
            return Caller(subject, ADMIN)
        with self._lock:
            self._read()
            if self._problem:
                return Caller(subject, None, refusal="the roles file cannot be read")
            role, projects = self._roles.get(subject, (None, ()))
        return Caller(subject, role, projects)

    def _read(self):
        """Read the file again if it changed; a file that is not right refuses every call until it is."""
        try:
            status = os.stat(self.path)
            seen = (status.st_ino, status.st_size, status.st_mtime_ns)
            if seen == self._seen:
                return
            with open(self.path) as f:
                self._roles = roles_from(json.load(f))
            self._problem = None
        except (OSError, ValueError) as err:
            seen = None
            self._problem = "the roles file %s (BMI_ROLES_FILE) %s" % (
                self.path, "cannot be read: %s" % err.strerror if isinstance(err, OSError) else "is wrong: %s" % err)
            log.error("%s: every call is refused until it is right", self._problem)
        self._seen = seen


def roles_from(entries):
    """{subject: (role, projects)} of the roles file's entries; ValueError saying what is wrong."""
    if not isinstance(entries, list):
        raise ValueError("it must be a list of {\"subject\": ..., \"role\": ..., \"projects\": [...]}")
    roles = {}
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) - {"subject", "role", "projects"} or \
                not isinstance(entry.get("subject"), str) or not entry["subject"] or entry.get("role") not in ROLES:
            raise ValueError("entry %d must have a subject, a role (%s) and projects" % (number, ", ".join(ROLES)))
        projects = entry.get("projects", [])
        if not isinstance(projects, list):
            raise ValueError("entry %d: projects must be a list" % number)
        for project in projects:
            names.check_project(project)
        if entry["subject"] in roles:
            raise ValueError("entry %d: subject %s is there twice" % (number, entry["subject"]))
        roles[entry["subject"]] = (entry["role"], tuple(projects))
    return roles


@contextlib.contextmanager
def acting_as(caller, call):
    """Run call (the name of a server method) as caller: Refused unless its role allows it."""
    caller.check(call)
    token = _acting.set(caller)
    try:
        yield
    finally:
        _acting.reset(token)


def guarded(method):
    """For ping, health and the gateways' peer calls, frequent as they are: the caller's rights are
    checked, and only a refusal is audited (bmi/audit.py audits every call of an operation). A
    method called within an operation (list_all_images asks this gateway's exported_nodes) is the
    operation's."""
    @functools.wraps(method)
    def run(server, /, *args, **kwargs):
        if _acting.get() is not None:
            return method(server, *args, **kwargs)
        started = time.monotonic()
        caller = server.rights.caller()
        try:
            caller.check(method.__name__)
        except Refused as err:
            server.audit_log.write(method.__name__, args, kwargs, "Refused: %s" % err, time.monotonic() - started,
                                   getattr(Pyro4.current_context, "client_sock_addr", None), caller)
            raise
        with acting_as(caller, method.__name__):
            return method(server, *args, **kwargs)
    return run
