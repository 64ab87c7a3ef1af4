"""The three bmi-rpc processes, run as a user runs them: name server, main server, mainclient."""
import json
import os
import signal
import subprocess
import sys

import config
from config import ROOT
from testkit.daemons import stop_process, wait_until


def variant(settings, **changes):
    """The settings with some changed: another program, or the same ones configured otherwise."""
    return config.Settings(**dict(settings.environment(), **changes))


def audit_lines(settings):
    """The main server's audit log, one dict a call."""
    if not os.path.exists(settings.BMI_AUDIT_LOG):
        return []
    with open(settings.BMI_AUDIT_LOG) as f:
        return [json.loads(line) for line in f]


def detach_every_node(server):
    """Force-detach every node of a MainServer, or of a Service through mainclient: what a test
    leaves goes before its tgtd does (rbd keeps a killed tgtd's watch on the disk for 30 s)."""
    for node in server.list_all_images()["nodes"]:
        server.detach_node(node["node"], force=True)


class Service:
    """The three programs on settings; each on this host, or on a test host of its own (hosts:
    {"nameserver"|"mainserver"|"mainclient": testkit.netns.Host}), with changes of its own to the
    settings there (changes: {program: {setting: value}})."""

    def __init__(self, settings, workdir, hosts=None, changes=None):
        self.settings = settings
        self.workdir = workdir
        # faulthandler: a server that hangs and is sent SIGABRT writes every thread's stack to its log
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", **settings.environment())
        self.hosts = hosts or {}
        self.changes = changes or {}
        self.nameserver = self.mainserver = None

    def _command(self, program, *args):
        command = [sys.executable, os.path.join(ROOT, program + ".py"), *args]
        return self.hosts[program].command(*command) if program in self.hosts else command

    def _env(self, program):
        return dict(self.env, **{name: str(value) for name, value in self.changes.get(program, {}).items()})

    def _start(self, program):
        with open(os.path.join(self.workdir, program + ".log"), "ab") as log:
            return subprocess.Popen(self._command(program), env=self._env(program), cwd=ROOT,
                                    stdout=log, stderr=subprocess.STDOUT)

    def start_nameserver(self):
        self.nameserver = self._start("nameserver")

    def start_mainserver(self):
        self.mainserver = self._start("mainserver")

    def start(self):
        self.start_nameserver()
        self.start_mainserver()
        self.wait_ready()

    def interrupt_mainserver(self, timeout=20):
        """SIGINT, as an operator's ^C, and wait for the main server to end; one that hangs is sent
        SIGABRT, and the test fails with the stacks it wrote to its log."""
        self.mainserver.send_signal(signal.SIGINT)
        try:
            self.mainserver.wait(timeout)
        except subprocess.TimeoutExpired:
            self.mainserver.send_signal(signal.SIGABRT)
            self.mainserver.wait(10)
            raise AssertionError("the main server did not end within %d s of SIGINT; its log ends:\n%s"
                                 % (timeout, self.log("mainserver")[-8000:])) from None

    def wait_ready(self, timeout=30):
        wait_until(lambda: self.client("list_all_images").returncode == 0, timeout, "main server reachable")

    def client(self, *args, timeout=180):
        return subprocess.run(self._command("mainclient", *args), env=self._env("mainclient"), cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def list_all_images(self):
        return json.loads(self.client("--json", "list_all_images").stdout or '{"images": [], "nodes": []}')

    def detach_node(self, node, force=False):
        return self.client("detach_node", *(["--force"] if force else []), node)

    def log(self, program):
        with open(os.path.join(self.workdir, program + ".log")) as f:
            return f.read()

    def stop(self):
        for proc in (self.mainserver, self.nameserver):
            if proc is not None:
                stop_process(proc)
