"""Locks by name, so that operations on one node or image wait for each other and others do not.
A name is held exclusively, or shared with others who share it: many provisions clone one golden
image at once, while deleting it waits for them all, and they for it.

And lock files, by which one main server owns its state directory and its tgtd.
"""
import contextlib
import fcntl
import os
import threading


class _Lock:
    def __init__(self):
        self.changed = threading.Condition()
        self.sharers = 0
        self.owned = False
        self.owners_waiting = 0   # who waits to own it goes before new sharers: no one starves
        self.users = 0            # threads holding or waiting for it

    def acquire(self, shared, timeout=None):
        """Whether it was acquired within timeout seconds (None: it waits as long as it takes)."""
        with self.changed:
            if shared:
                if not self.changed.wait_for(lambda: not self.owned and not self.owners_waiting, timeout):
                    return False
                self.sharers += 1
            else:
                self.owners_waiting += 1
                free = self.changed.wait_for(lambda: not self.owned and not self.sharers, timeout)
                self.owners_waiting -= 1
                if not free:
                    self.changed.notify_all()   # sharers held back by this waiter may go
                    return False
                self.owned = True
            return True

    def release(self, shared):
        with self.changed:
            if shared:
                self.sharers -= 1
            else:
                self.owned = False
            self.changed.notify_all()


class NamedLocks:
    def __init__(self):
        self._mutex = threading.Lock()
        self._locks = {}   # name -> _Lock, while someone holds or waits for it

    @contextlib.contextmanager
    def hold(self, *names, shared=(), timeout=None):
        """Hold names exclusively and the names in shared shared, for the with block. With a timeout,
        Busy if one of them is not had within that many seconds."""
        wanted = sorted([(name, False) for name in names] + [(name, True) for name in shared])   # one order: no deadlock
        with self._mutex:
            entries = [(self._locks.setdefault(name, _Lock()), is_shared) for name, is_shared in wanted]
            for lock, _ in entries:
                lock.users += 1
        held = []
        try:
            for (name, _), (lock, is_shared) in zip(wanted, entries):
                if not lock.acquire(is_shared, timeout):
                    raise Busy(name)
                held.append((lock, is_shared))
            yield
        finally:
            for lock, is_shared in reversed(held):
                lock.release(is_shared)
            with self._mutex:
                for (name, _), (lock, _) in zip(wanted, entries):
                    lock.users -= 1
                    if lock.users == 0:
                        del self._locks[name]   # unused locks go: memory stays flat


class Busy(RuntimeError):
    """A lock was not had in time: its name."""


class HeldElsewhere(RuntimeError):
    """Another process holds a lock file."""


def hold_lock_file(path, what):
    """Take the exclusive lock of the file path (made if missing) for as long as the returned file
    descriptor stays open, and write this process's id in it. HeldElsewhere, naming what the lock
    guards and the process that holds it, if another open of the file holds it already."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise HeldElsewhere("%s belongs to the main server with process id %s (it holds %s)" % (what, holder, path))
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    return fd
