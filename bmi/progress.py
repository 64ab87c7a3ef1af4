"""How far the operation a thread runs has got, for whoever follows it (MainServer.follow)."""
import contextlib
import contextvars

_listener = contextvars.ContextVar("progress listener", default=None)


def report(done, total):
    """done of total bytes copied, said by the command this thread runs (bmi/runner.py)."""
    listener = _listener.get()
    if listener is not None:
        listener(done, total)


@contextlib.contextmanager
def reported_to(listener):
    """Within this block, this thread's progress goes to listener(done, total)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
