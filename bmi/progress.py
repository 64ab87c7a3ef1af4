"""How far the operation a thread runs has got, for whoever follows it (MainServer.follow)."""
import contextlib
import contextvars
import queue
import threading

HEARTBEAT_SECONDS = 1.0   # how often follow says how far an operation got, moved or not

_listeners = contextvars.ContextVar("progress listeners", default=())


def report(done, total):
    """done of total bytes copied, said by the command this thread runs (bmi/runner.py)."""
    for listener in _listeners.get():
        listener(done, total)


@contextlib.contextmanager
def reported_to(listener):
    """Within this block, this thread's progress goes to listener(done, total) too: a client that
    follows the operation, and the server's metrics, both hear it."""
    token = _listeners.set(_listeners.get() + (listener,))
    try:
        yield
    finally:
        _listeners.reset(token)


def follow(call, name):
    """Run call() in a thread of its own, named name, yielding {"progress": {"done": BYTES, "total":
    BYTES}} (None before the first report) at each report or every HEARTBEAT_SECONDS while it runs,
    then {"result": what it returned}; or raising its error."""
    events = queue.Queue()

    def run():
        with reported_to(lambda done, total: events.put(("progress", (done, total)))):
            try:
                events.put(("result", call()))
            except Exception as err:
                events.put(("error", err))

    threading.Thread(target=run, name=name, daemon=True).start()
    last = None
    while True:
        try:
            kind, value = events.get(timeout=HEARTBEAT_SECONDS)
        except queue.Empty:
            kind, value = "progress", last
        if kind == "result":
            yield {"result": value}
            return
        if kind == "error":
            raise value
        last = value
        yield {"progress": {"done": value[0], "total": value[1]} if value else None}
