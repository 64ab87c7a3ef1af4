"""Logging helpers of the servers."""


class RecurringProblem:
    """A problem a background loop meets again and again: logged when it first shows, or changes,
    not every time round."""

    def __init__(self, log, what):
        self._log, self._what, self._last = log, what, None

    def report(self, err):
        if str(err) != self._last:
            self._log.warning("%s: %s", self._what, err)
            self._last = str(err)

    def clear(self):
        self._last = None
