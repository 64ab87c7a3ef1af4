"""The audit log: one JSON line per operation call, appended to a file that logrotate may rename."""
import functools
import json
import logging
import os
import threading
import time

import Pyro4

from bmi import errors, rights

log = logging.getLogger("bmi.audit")


SECRETS = ("password",)   # keys of a dict argument (a node's BMC) whose values the audit log never keeps


def shorten(value):
    """An argument as the audit log keeps it: hostile ones may be huge, and secrets are left out."""
    if isinstance(value, dict):
        value = {key: "(secret)" if key in SECRETS else item for key, item in value.items()}
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class AuditLog:
    """Each line is one write of its own, whole or not at all. Like logging's WatchedFileHandler, it
    opens the file again when it was renamed or removed (logrotate), so nothing goes to the old one."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._fd = None

    def open(self):
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as err:
            raise OSError(err.errno, "cannot open the audit log %s: %s" % (self.path, err.strerror)) from None

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, operation, args, kwargs, outcome, seconds, caller=None, who=None):
        """caller: the caller's (host, port); who: its rights.Caller, by whose subject and role."""
        who = who or rights.acting()
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "caller": "%s:%s" % caller[:2] if caller else "in-process",
                           "subject": who.subject, "role": who.role,
                           "operation": operation, "arguments": [shorten(a) for a in args],
                           "options": {k: shorten(v) for k, v in kwargs.items()}, "outcome": shorten(outcome),
                           "seconds": round(seconds, 6)})
        data = (line + "\n").encode()
        with self._lock:
            try:
                self._reopen_if_moved()
                size = os.fstat(self._fd).st_size
                if os.write(self._fd, data) != len(data):   # the disk filled up half way through
                    os.ftruncate(self._fd, size)
                    raise OSError(28, os.strerror(28))
            except OSError as err:   # the operation itself is done and stays done
                log.error("cannot write the audit log %s (%s); the line was %s", self.path, err.strerror, line)

    def _reopen_if_moved(self):
        try:
            moved = not os.path.samestat(os.stat(self.path), os.fstat(self._fd))
        except FileNotFoundError:
            moved = True
        if moved:
            self.close()
            self.open()


def audited(operation):
    """Check the caller's rights to a server's operation (bmi/rights.py: refused, it does not run)
    and write every call to the server's audit_log: time, caller, its subject and role, arguments,
    outcome, duration; and count it in the server's metrics (bmi/metrics.py). Errors leave as the
    kinds of bmi/errors.py, which Pyro4 rebuilds at the client."""
    @functools.wraps(operation)
    def call(server, /, *args, **kwargs):   # "/": a keyword named server is refused, and audited, too
        started = time.monotonic()
        caller = server.rights.caller()

        def write(outcome):
            server.audit_log.write(operation.__name__, args, kwargs, outcome, time.monotonic() - started,
                                   getattr(Pyro4.current_context, "client_sock_addr", None), caller)
        with server.metrics.operation(operation.__name__):
            try:
                with rights.acting_as(caller, operation.__name__):
                    result = operation(server, *args, **kwargs)
            except Exception as err:
                plain = _plain(err)
                write("%s: %s" % (type(plain).__name__, plain))
                raise plain from None
        write("ok")
        return result
    return call


def _plain(err):
    """err as the kind of bmi/errors.py that Pyro4 rebuilds at the client: its own kind, BadInput for
    an argument the operation could not take, ServiceError for any other failure."""
    for kind in errors.KINDS:
        if type(err) is kind:
            return err
    if isinstance(err, errors.ServiceError):   # a subclass: the command runner's CommandFailed, say
        kind = next(kind for kind in reversed(errors.KINDS) if isinstance(err, kind))
        return kind(str(err))
    if isinstance(err, (ValueError, TypeError)):
        return errors.BadInput(str(err))
    return errors.ServiceError(err.strerror if isinstance(err, OSError) and err.strerror else str(err))
