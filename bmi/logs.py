"""Logging of the servers: to stderr (the journal, under systemd), or to BMI_LOG_FILE."""
import logging
import logging.handlers


def configure(program, settings):
    """Log lines with the time and the program's name; into BMI_LOG_FILE if set, reopened when
    logrotate renames or removes it."""
    handler = (logging.handlers.WatchedFileHandler(settings.BMI_LOG_FILE) if settings.BMI_LOG_FILE
               else logging.StreamHandler())
    logging.basicConfig(level=logging.INFO, handlers=[handler],
                        format="%(asctime)s " + program + " %(levelname)s %(message)s")


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
