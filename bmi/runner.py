"""The one way bmi-rpc runs a command: an argument list, never a shell, with a time limit."""
import os
import re
import signal
import subprocess

from config import ROOT

# A server killed mid-operation must not leave a script finishing the operation on its own:
# recovery at the next start undoes the operation, and an orphan command would redo part of it.
# setpriv (util-linux) sends the script SIGTERM when the server dies, and the script then kills
# every command it started (run_main in scripts/lib.sh). A preexec_fn setting the same signal would
# make every start of a command cost a full fork of the server.
DIE_WITH_SERVER = ["setpriv", "--pdeathsig", "SIGTERM", "--"]
# what every command may need beside its settings
BASE_ENVIRONMENT = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C.UTF-8"}


class CommandFailed(RuntimeError):
    """A command failed; str() is what it said on stderr, in one line, for the user."""


def run(args, timeout, env=None):
    """Run args; return stdout as text. On failure raise CommandFailed with the command's stderr."""
    try:
        proc = subprocess.Popen(DIE_WITH_SERVER + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True, start_new_session=True,
                                errors="backslashreplace")   # a hostile path in a message is no crash
    except OSError as err:
        raise CommandFailed("cannot run %s: %s" % (args[0], err.strerror))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the whole group: a script's own children too
        proc.communicate()
        raise CommandFailed("no answer within %g s (BMI_SCRIPT_TIMEOUT)" % timeout)
    if proc.returncode != 0:
        # one line, as the client prints it
        detail = "; ".join(line.strip() for line in (err or out).splitlines() if line.strip())
        raise CommandFailed(detail or "%s failed with exit code %d" % (os.path.basename(args[0]), proc.returncode))
    return out


SCRIPTS = os.path.join(ROOT, "scripts")
_SETTINGS_LINE = re.compile(r"^# settings:(.*)$", re.MULTILINE)


class Script:
    """One of the project's scripts (scripts/KIND/NAME), run with the settings it reads as its
    environment: those its "# settings:" line names (scripts/README)."""

    def __init__(self, kind, name, settings):
        self.path = os.path.join(SCRIPTS, kind, name)
        with open(self.path) as f:
            declared = _SETTINGS_LINE.search(f.read())
        names = declared.group(1).split() if declared else []
        self.timeout = settings.BMI_SCRIPT_TIMEOUT
        self.env = dict(BASE_ENVIRONMENT, **settings.environment(names))

    def __call__(self, *args):
        return run([self.path, *args], self.timeout, self.env)
