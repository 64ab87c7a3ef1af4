"""The package (pyproject.toml; README, Installing as a package): pip installs a copy of the
checkout (its build writes build/ and *.egg-info there, not in the checkout) in a fresh virtual
environment, whose commands then run the service as the checkout's programs do, on the scripts
installed with them, and bmi-install-service writes units that run those commands."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from config import ROOT
from testkit.daemons import require_command
from testkit.images import MiB, make_image_file
from testkit.service import Service, detach_every_node

COMMANDS = {"nameserver": "bmi-nameserver", "mainserver": "bmi-mainserver", "mainclient": "bmi"}
DATA = ("scripts", "systemd")   # the checkout's folders the package has as data, file by file

file_only = pytest.mark.parametrize("backend", ["file"], indirect=True)


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """The folder of the commands of a fresh virtual environment with the package installed."""
    work = tmp_path_factory.mktemp("package")
    shutil.copytree(ROOT, work / "source", ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", ".hypothesis", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=120)
    done = subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "-q", str(work / "source")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return work / "venv" / "bin"


def installed_files(commands):
    """{path under the installed package's config.ROOT: executable?}, as the installed Python sees them."""
    listing = subprocess.run([str(commands / "python"), "-c", (
        "import config, json, os; print(json.dumps({'root': config.ROOT, 'files': {"
        "os.path.relpath(os.path.join(d, f), config.ROOT): os.access(os.path.join(d, f), os.X_OK) "
        "for d, _, names in os.walk(config.ROOT) if '__pycache__' not in d for f in names}}))")],
        cwd="/", capture_output=True, text=True, timeout=60, check=True)
    return json.loads(listing.stdout)


class InstalledService(Service):
    """The three programs as the package's commands, away from the checkout."""

    def __init__(self, settings, workdir, commands):
        super().__init__(settings, workdir)
        self.env.pop("PYTHONPATH", None)
        self.commands = commands

    def _command(self, program, *args):
        return [str(self.commands / COMMANDS[program]), *args]


def test_the_commands_and_the_files_they_run(commands):
    for command in [*COMMANDS.values(), "bmi-bootservice"]:
        done = subprocess.run([str(commands / command), "--help"], cwd="/", capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and done.stdout.startswith("usage: "), (command, done.stderr)
    found = installed_files(commands)
    assert found["root"].startswith(str(commands.parent)) and found["root"].endswith("/site-packages/bmi")
    for folder in DATA:   # each file there, executable where the checkout's is
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                path = os.path.relpath(os.path.join(directory, name), ROOT)
                assert found["files"].get(path) == os.access(os.path.join(directory, name), os.X_OK), path


@file_only
def test_the_installed_commands_run_the_service(commands, settings, tgtd, tmp_path):
    service = InstalledService(settings, str(tmp_path), commands)
    try:
        service.start()
        assert service.client("ping").stdout == "pong\n"
        make_image_file(tmp_path / "golden.raw", 4 * MiB)   # the installed scripts copy it and export it
        assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
        assert service.client("provision", "golden", "node-a").returncode == 0
        assert [n["node"] for n in service.list_all_images()["nodes"]] == ["node-a"]
        assert list(tgtd.targets().values()) == [settings.BMI_IQN_PREFIX + ":node-a"]
        detach_every_node(service)
        assert tgtd.targets() == {}
    finally:
        service.stop()


def test_install_service_writes_units_that_run_the_installed_commands(commands, tmp_path):
    require_command("systemd-analyze", "systemd")
    done = subprocess.run([str(commands / "bmi-install-service"), "--root", str(tmp_path)], cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    units = {path.name: path.read_text() for path in (tmp_path / "etc" / "systemd" / "system").iterdir()}
    run = {name: next(line for line in text.splitlines() if line.startswith("ExecStart="))
           for name, text in units.items()}
    assert run["bmi-nameserver.service"] == "ExecStart=%s" % (commands / "bmi-nameserver")
    assert run["bmi-mainserver.service"] == "ExecStart=%s" % (commands / "bmi-mainserver")
    assert run["bmi-dnsmasq.service"] == "ExecStart=%s --run" % (commands / "bmi-bootservice")
    assert not any("@" in text or ROOT in text or "Documentation=file:" in text for text in units.values())
    # it fails on a command it cannot run
    verified = subprocess.run(["systemd-analyze", "verify", *[str(tmp_path / "etc" / "systemd" / "system" / name)
                                                              for name in sorted(units)]],
                              capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stderr) == (0, "")
    settings = tmp_path / "etc" / "bmi-rpc" / "bmi-rpc.env"
    assert oct(settings.stat().st_mode & 0o777) == "0o600" and "BMI_TGT_CONTROL_PORT=0" in settings.read_text()
