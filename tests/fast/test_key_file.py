"""The shared key file, kept as ssh keeps a private key: every program refuses one that others may
read, and says how to mend it; empty or unset paths get a clear line."""
import os
import subprocess
import sys

import pytest

from config import ROOT

PROGRAMS = {"nameserver.py": [], "mainserver.py": [], "mainclient.py": ["ping"]}


def run(program, key_file, tmp_path):
    env = {"PATH": os.environ["PATH"], "BMI_KEY_FILE": key_file, "BMI_STATE_DIR": str(tmp_path / "state"),
           "BMI_NS_PORT": "1", "BMI_SERVER_PORT": "1"}   # they stop before they listen or call
    return subprocess.run([sys.executable, os.path.join(ROOT, program), *PROGRAMS[program]], env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_others_may_read_is_refused(program, mode, tmp_path):
    key = tmp_path / "hmac.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    key.chmod(mode)
    done = run(program, str(key), tmp_path)
    name = program[:-3]
    assert done.returncode != 0 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(name + ": ")
    assert ("the key file %s is open to others (mode %04o): it must be readable by its owner alone; chmod 600 %s"
            % (key, mode, key)) in done.stderr
    assert not os.path.exists(tmp_path / "state")   # the main server stopped before it touched anything


@pytest.mark.parametrize("program", PROGRAMS)
def test_an_empty_key_file_setting_is_one_clear_line(program, tmp_path):
    done = run(program, "", tmp_path)
    assert (done.returncode, done.stderr) == (2, "%s: BMI_KEY_FILE must not be empty, not ''\n" % program[:-3])


def test_the_client_says_where_the_key_file_should_be(tmp_path):
    done = run("mainclient.py", str(tmp_path / "missing.key"), tmp_path)
    assert (done.returncode, done.stderr) == (3, "mainclient: authentication failed: there is no key file %s "
                                                 "(BMI_KEY_FILE): copy the servers' key file there, mode 0600\n"
                                              % (tmp_path / "missing.key"))
