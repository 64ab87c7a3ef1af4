"""The one way bmi-rpc runs a command: an argument list, never a shell, bounded in time.

A quick command is bounded by a clock (run). A copy, which takes as long as its size needs, is
bounded by its progress instead (run_copy): it may run as long as it reports progress, and is
stopped when it makes none for a while.
"""
import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import threading
import time

from bmi import progress
from bmi.errors import AlreadyExists, InUse, NotFound, Refused, ServiceError, Unavailable
from config import ROOT

# A server killed mid-operation must not leave a script finishing the operation on its own:
# recovery at the next start undoes the operation, and an orphan command would redo part of it.
# setpriv (util-linux) sends the script SIGTERM when the server dies, and the script then kills
# every command it started (run_main in scripts/lib.sh). A preexec_fn setting the same signal would
# make every start of a command cost a full fork of the server.
DIE_WITH_SERVER = ["setpriv", "--pdeathsig", "SIGTERM", "--"]
# what every command may need beside its settings
BASE_ENVIRONMENT = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C.UTF-8"}
# how a copy says how far it got (scripts/README): "progress DONE TOTAL", in bytes, on stderr
_PROGRESS = re.compile(r"^progress (\d+) (\d+)$")


class CommandFailed(ServiceError):
    """A command failed; str() is what it said on stderr, in one line, for the user."""


class NoAnswer(CommandFailed, Unavailable):
    """A command ran out of its time (BMI_SCRIPT_TIMEOUT), or a copy out of progress, and was stopped."""


# a script's exit code for a kind of refusal, or of something that does not answer (scripts/README): raised as that kind
REFUSALS = {66: NotFound, 69: Unavailable, 73: AlreadyExists, 75: InUse, 77: Refused}


def _start(args, env, stdin=subprocess.DEVNULL):
    try:
        return subprocess.Popen(DIE_WITH_SERVER + list(args), stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as err:
        raise CommandFailed("cannot run %s: %s" % (args[0], err.strerror))


def _stop(proc):
    """Kill the script and its group, if it still runs, and reap it; its pipes close with it (another
    thread may be reading one, or its stdin be closed: both are fine)."""
    with contextlib.suppress(ProcessLookupError):   # ended, and reaped, already
        os.killpg(proc.pid, signal.SIGKILL)   # the whole group: a script's own children too
    proc.wait()


def _text(data):
    return data.decode(errors="backslashreplace")   # a hostile path in a message is no crash


def _one_line(text):
    """What a command said, as one line, as the client prints it."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _answer(args, proc, out, err):
    if proc.returncode != 0:
        raise REFUSALS.get(proc.returncode, CommandFailed)(
            _one_line(err or out) or "%s failed with exit code %d" % (os.path.basename(args[0]), proc.returncode))
    return out


def run(args, timeout, env=None):
    """Run args; return stdout as text. On failure raise CommandFailed with the command's stderr."""
    proc = _start(args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise NoAnswer("no answer within %g s (BMI_SCRIPT_TIMEOUT)" % timeout)
    return _answer(args, proc, _text(out), _text(err))


def run_copy(args, stall, env=None):
    """Run args, a copy, as run does, but with no time limit as long as it makes progress: stop it
    when it has reported none for stall seconds. Its progress goes to progress.report."""
    proc = _start(args, env)
    chunks = {proc.stdout: [], proc.stderr: []}
    errors, pending, done = [], b"", -1
    last_progress = time.monotonic()
    with selectors.DefaultSelector() as streams:
        for stream in chunks:
            streams.register(stream, selectors.EVENT_READ)
        while streams.get_map():
            ready = streams.select(timeout=max(0.0, last_progress + stall - time.monotonic()))
            if not ready and time.monotonic() >= last_progress + stall:
                _stop(proc)
                raise NoAnswer("made no progress for %g s (BMI_STALL_TIMEOUT)" % stall)
            for key, _ in ready:
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    streams.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    chunks[proc.stdout].append(data)
                else:
                    *lines, pending = (pending + data).split(b"\n")
                    for line in map(_text, lines):
                        match = _PROGRESS.match(line)
                        if not match:
                            errors.append(line)
                        elif int(match.group(1)) > done:
                            done = int(match.group(1))
                            last_progress = time.monotonic()
                            progress.report(done, int(match.group(2)))
    proc.wait()
    return _answer(args, proc, _text(b"".join(chunks[proc.stdout])), "\n".join(errors + [_text(pending)]))


SCRIPTS = os.path.join(ROOT, "scripts")


def declared(path, what):
    """The words of the script path's "# WHAT: ..." line (scripts/README), or [] if it has none."""
    with open(path) as f:
        line = re.search(r"^# %s:(.*)$" % re.escape(what), f.read(), re.MULTILINE)
    return line.group(1).split() if line else []


class Script:
    """One of the project's scripts (scripts/KIND/NAME), run with the settings it reads as its
    environment: those its "# settings:" line names (scripts/README)."""

    def __init__(self, kind, name, settings):
        self.path = os.path.join(SCRIPTS, kind, name)
        names = declared(self.path, "settings")
        self.timeout = settings.BMI_SCRIPT_TIMEOUT
        self.stall = settings.BMI_STALL_TIMEOUT
        self.env = dict(BASE_ENVIRONMENT, **settings.environment(names))

    def __call__(self, *args):
        return run([self.path, *args], self.timeout, self.env)

    def copy(self, *args):
        """A command that copies data: bounded by its progress (run_copy), not by the clock."""
        return run_copy([self.path, *args], self.stall, self.env)


class Helper:
    """A helper script (scripts/KIND/NAME) that runs as long as the server does and answers one JSON
    request a line with one JSON line (scripts/README). Started at the first request, again after
    it died; each answer bounded by BMI_SCRIPT_TIMEOUT, and the helper stopped when one is late."""

    def __init__(self, kind, name, settings):
        self._script = Script(kind, name, settings)
        self._lock = threading.Lock()
        self._proc = None

    def request(self, **request):
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
            except OSError:
                pass   # it died: the answer below says why
            answer = self._answer()
        if "error" in answer:
            raise CommandFailed(answer["error"])
        return answer

    def close(self):
        with self._lock:
            if self._proc is not None:
                _stop(self._proc)
                self._proc = None

    def _start(self):
        self._proc = _start([self._script.path], self._script.env, stdin=subprocess.PIPE)
        self._answer()   # its first line says it is ready

    def _answer(self):
        with selectors.DefaultSelector() as ready:
            ready.register(self._proc.stdout, selectors.EVENT_READ)
            line = self._proc.stdout.readline() if ready.select(self._script.timeout) else None
        if line:
            return json.loads(line)
        proc, self._proc = self._proc, None
        if proc.poll() is None:   # late
            _stop(proc)
            raise NoAnswer("no answer within %g s (BMI_SCRIPT_TIMEOUT)" % self._script.timeout)
        raise CommandFailed(_one_line(_text(proc.stderr.read())) or "%s ended" % os.path.basename(self._script.path))
