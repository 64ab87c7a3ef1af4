"""Locks by name, so that operations on one node wait for each other and different nodes do not."""
import contextlib
import threading


class NamedLocks:
    def __init__(self):
        self._mutex = threading.Lock()
        self._locks = {}   # name -> [lock, number of threads holding or waiting for it]

    @contextlib.contextmanager
    def hold(self, *names):
        names = sorted(set(names))   # one order for everybody: no deadlock
        with self._mutex:
            entries = [self._locks.setdefault(name, [threading.Lock(), 0]) for name in names]
            for entry in entries:
                entry[1] += 1
        held = []
        try:
            for entry in entries:
                entry[0].acquire()
                held.append(entry)
            yield
        finally:
            for entry in reversed(held):
                entry[0].release()
            with self._mutex:
                for name, entry in zip(names, entries):
                    entry[1] -= 1
                    if entry[1] == 0:
                        del self._locks[name]   # unused locks go: memory stays flat
