"""The main server's Prometheus metrics (README, Metrics), in a registry of its own, so that several
servers in one process do not mix theirs: events counted as they happen (operations, bytes copied,
reconcile rounds), and what is read when Prometheus scrapes (nodes, targets, sessions, gateways,
tgtd's process)."""
import contextlib
import logging
import re
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from bmi import progress, pyrosetup, runner
from bmi.logs import RecurringProblem
from bmi.nodes import TRANSITIONS

log = logging.getLogger("bmi.metrics")
# from a ping's round trip to an import of a large image
OPERATION_BUCKETS = (.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
RECONCILE_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
NODE_STATES = [state for state in TRANSITIONS if state is not None]


def outcome_of(err):
    """The outcome label of an operation that raised err, a kind of bmi/errors.py (as @audited
    raises it), in snake case: not_found, in_use, service_error for a failure."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(err).__name__).lower()


class Metrics:
    def __init__(self, settings, records, target, gateways, operations):
        self._settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        self._operations = Counter("bmi_operations", "Operation calls, by operation and outcome (ok, or the kind "
                                   "of error the client gets)", ["operation", "outcome"], registry=self.registry)
        self._durations = Histogram("bmi_operation_duration_seconds", "How long operations took", ["operation"],
                                    buckets=OPERATION_BUCKETS, registry=self.registry)
        self._copied = Counter("bmi_copied_bytes", "Bytes of images copied (as the copy tools report their "
                               "progress: holes too), by the operation that copied", ["operation"],
                               registry=self.registry)
        self._rounds = Counter("bmi_reconcile_rounds", "Rounds of keeping this gateway's exports in line with the "
                               "records, by outcome (ok, failed)", ["outcome"], registry=self.registry)
        self._round_durations = Histogram("bmi_reconcile_duration_seconds", "How long reconcile rounds took",
                                          buckets=RECONCILE_BUCKETS, registry=self.registry)
        for operation in operations:   # each series there from the start, so that rate() sees the first call
            self._operations.labels(operation, "ok")
            self._durations.labels(operation)
        for outcome in ("ok", "failed"):
            self._rounds.labels(outcome)
        self.registry.register(_Readings(records, target, gateways))

    def serve(self):
        """Serve the metrics over HTTP on BMI_METRICS_HOST:BMI_METRICS_PORT, in a thread of their
        own; port 0 serves none. A port in use is one line naming it (OSError)."""
        host, port = self._settings.BMI_METRICS_HOST, self._settings.BMI_METRICS_PORT
        if port:
            pyrosetup._listening(lambda: start_http_server(port, host, self.registry), host, port, "BMI_METRICS_PORT")
            log.info("serving metrics on http://%s:%d/metrics", host, port)

    @contextlib.contextmanager
    def operation(self, name):
        """Count the operation run within (bmi/audit.py's @audited), by outcome, its duration, and
        the bytes its copies report."""
        copied = self._copied.labels(name)
        last = 0

        def count(done, total):
            nonlocal last
            copied.inc(done - last)
            last = 0 if done == total else done   # a copy done: a next one starts from nothing

        started = time.monotonic()
        try:
            with progress.reported_to(count):
                yield
        except Exception as err:
            self._operations.labels(name, outcome_of(err)).inc()
            raise
        else:
            self._operations.labels(name, "ok").inc()
        finally:
            self._durations.labels(name).observe(time.monotonic() - started)

    @contextlib.contextmanager
    def reconcile_round(self):
        """Count the round of keep_targets_exported run within, by outcome, and its duration."""
        started = time.monotonic()
        try:
            yield
        except Exception:
            self._rounds.labels("failed").inc()
            raise
        else:
            self._rounds.labels("ok").inc()
        finally:
            self._round_durations.observe(time.monotonic() - started)


class _Readings:
    """What is read at each scrape: a part that cannot be read (Ceph or tgtd down) is left out, and
    logged once, while the others are still served."""

    def __init__(self, records, target, gateways):
        self._records, self._target, self._gateways = records, target, gateways
        self._problems = {}

    def describe(self):
        return []   # nothing is read at registration: tgtd or Ceph may not answer yet

    def collect(self):
        for part in (self._nodes, self._targets, self._gateways_up, self._tgtd_process):
            problem = self._problems.setdefault(part.__name__, RecurringProblem(log, "metrics: cannot read "
                                                                                + part.__name__.strip("_")))
            try:
                families = list(part())
                problem.clear()
            except Exception as err:   # whatever it is, that part is missing from this scrape
                problem.report(err)
                families = []
            yield from families

    def _nodes(self):
        nodes = GaugeMetricFamily("bmi_nodes", "Nodes the records know, by state", labels=["state"])
        states = [record.state for record in self._records.all()]
        for state in NODE_STATES:
            nodes.add_metric([state], states.count(state))
        yield nodes

    def _targets(self):
        """tgtd_up, and what it exports; only tgtd_up (0) while it does not answer, which the
        server's check of the targets logs already."""
        try:
            exported, sessions = self._target.exported_nodes(), self._target.sessions()
        except runner.CommandFailed:
            yield GaugeMetricFamily("bmi_tgtd_up", "Whether this gateway's tgtd answers", value=0)
            return
        yield GaugeMetricFamily("bmi_tgtd_up", "Whether this gateway's tgtd answers", value=1)
        yield GaugeMetricFamily("bmi_targets_exported", "Nodes whose target this gateway's tgtd has, whole",
                                value=len(exported))
        yield GaugeMetricFamily("bmi_initiators_logged_in", "Initiator sessions (I_T nexuses) at this gateway's "
                                "targets", value=sum(len(initiators) for initiators in sessions.values()))

    def _gateways_up(self):
        up = GaugeMetricFamily("bmi_gateway_up", "Whether each gateway of the records answers (this one does)",
                               labels=["gateway"])
        answers = self._gateways.ping()
        for gateway in self._gateways.all():
            up.add_metric([gateway.name], int(gateway.name == self._gateways.name or answers.get(gateway.name) is not None))
        yield up

    def _tgtd_process(self):
        pid = self._target.tgtd_pid()
        if pid is None:
            return
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f)
        yield GaugeMetricFamily("bmi_tgtd_threads", "Threads of this gateway's tgtd", value=int(status["Threads"]))
        yield GaugeMetricFamily("bmi_tgtd_resident_memory_bytes", "Resident memory of this gateway's tgtd",
                                value=int(status["VmRSS"].split()[0]) * 1024)   # "22248 kB"
