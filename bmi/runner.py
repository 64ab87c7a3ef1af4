"""The one way bmi-rpc runs a command: an argument list, never a shell, with a timeout."""
import os
import signal
import subprocess


# A server killed mid-operation must not leave a script finishing the operation on its own:
# recovery at the next start undoes the operation, and an orphan command would redo part of it.
# setpriv (util-linux) sends the script SIGTERM when the server dies, and the script then kills
# every command it started (the end of each script). A preexec_fn setting the same signal would
# make every start of a command cost a full fork of the server.
DIE_WITH_SERVER = ["setpriv", "--pdeathsig", "SIGTERM", "--"]


def run(args, timeout, env=None):
    """Run args; return stdout as text. On failure raise RuntimeError with the command's stderr.

    A plain RuntimeError, because the server hands it on to the client as it is (Pyro4 rebuilds
    built-in exception types only).
    """
    try:
        proc = subprocess.Popen(DIE_WITH_SERVER + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True, start_new_session=True,
                                errors="backslashreplace")   # a hostile path in a message is no crash
    except OSError as err:
        raise RuntimeError("%s: %s" % (args[0], err.strerror))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the whole group: a script's own children too
        proc.communicate()
        raise RuntimeError("%s timed out after %g s" % (_name(args), timeout))
    if proc.returncode != 0:
        # one line, as the client prints it
        detail = "; ".join(line.strip() for line in (err or out).splitlines() if line.strip())
        detail = detail or "exit code %d" % proc.returncode
        raise RuntimeError("%s: %s" % (_name(args), detail))
    return out


def _name(args):
    return " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(args[:2]))


SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


class Script:
    """One of the project's scripts (scripts/KIND/NAME), run with the settings as its environment."""

    def __init__(self, kind, name, settings):
        self.path = os.path.join(SCRIPTS, kind, name)
        if not os.access(self.path, os.X_OK):
            raise ValueError("unknown %s backend %r: no script %s" % (kind, name, self.path))
        self.timeout = settings.BMI_SCRIPT_TIMEOUT
        self.env = dict(os.environ, **settings.environment())

    def __call__(self, *args):
        return run([self.path, *args], self.timeout, self.env)
