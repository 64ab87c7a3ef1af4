"""Settings: declared once, checked at start, each bad one a line that names it."""
import os
import subprocess
import sys

import pytest

import config
from config import ROOT


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in config.SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    settings = config.Settings()
    assert (settings.BMI_NS_HOST, settings.BMI_NS_PORT, settings.BMI_BACKEND) == ("127.0.0.1", 9090, "file")
    assert settings.BMI_BOOT_PORTAL == settings.BMI_ISCSI_PORTAL == "127.0.0.1:3260"
    assert settings.BMI_AUDIT_LOG == "/var/lib/bmi/audit.log"


def test_a_flag_overrides_the_environment_which_overrides_the_default(monkeypatch):
    monkeypatch.setenv("BMI_NS_PORT", "9100")
    assert config.Settings().BMI_NS_PORT == 9100
    assert config.Settings(BMI_NS_PORT="9200").BMI_NS_PORT == 9200
    assert config.Settings(BMI_NS_PORT=None).BMI_NS_PORT == 9100   # None: the flag was not given


@pytest.mark.parametrize("name, value, message", [
    ("BMI_NS_PORT", "abc", "BMI_NS_PORT must be a whole number from 1 to 65535, not 'abc'"),
    ("BMI_SERVER_PORT", "70000", "BMI_SERVER_PORT must be a whole number from 1 to 65535"),
    ("BMI_CLONE_CONCURRENCY", "0", "BMI_CLONE_CONCURRENCY must be a whole number of at least 1"),
    ("BMI_SCRIPT_TIMEOUT", "-1", "BMI_SCRIPT_TIMEOUT must be a number of seconds above 0"),
    ("BMI_TGT_CHECK_SECONDS", "soon", "BMI_TGT_CHECK_SECONDS must be a number of seconds above 0"),
    ("BMI_BACKEND", "nfs", "BMI_BACKEND must be one of file, rbd"),
    ("BMI_ISCSI_PORTAL", "10.0.0.1", "BMI_ISCSI_PORTAL must be HOST:PORT"),
    ("BMI_BOOT_PORTAL", "host:port", "BMI_BOOT_PORTAL must be HOST:PORT"),
    ("BMI_IQN_PREFIX", "IQN.x", "BMI_IQN_PREFIX must be iqn.YYYY-MM.reversed.domain"),
    ("BMI_KEY_FILE", "", "BMI_KEY_FILE must not be empty"),
    ("BMI_NS_HOST", "a b", "BMI_NS_HOST must be a host name or an IP address"),
    ("BMI_CEPH_POOL", "a/b", "BMI_CEPH_POOL must be a pool name"),
])
def test_a_bad_value_is_one_line_naming_the_setting(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        config.Settings()
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_tls_needs_a_certificate_and_a_ca():
    with pytest.raises(ValueError, match="BMI_TLS_CERT and BMI_TLS_CA go together"):
        config.Settings(BMI_TLS_CERT="/etc/x.crt")


def test_scripts_get_only_the_settings_they_read():
    from bmi import runner
    settings = config.Settings()
    # import refuses the service's own files (the state directory, key, TLS files, audit log) and
    # images above the cap: the storage scripts read where those are
    refused = {"BMI_STATE_DIR", "BMI_KEY_FILE", "BMI_TLS_CERT", "BMI_TLS_KEY", "BMI_TLS_CA", "BMI_AUDIT_LOG",
               "BMI_ROLES_FILE", "BMI_IMAGE_SIZE_CAP", "BMI_IMPORT_DIRS"}
    assert set(runner.Script("storage", "file", settings).env) == {"PATH", "LC_ALL"} | refused
    assert set(runner.Script("storage", "rbd", settings).env) == {
        "PATH", "LC_ALL", "BMI_CEPH_CONF", "BMI_CEPH_ID", "BMI_CEPH_POOL", "BMI_CEPH_TIMEOUT", "BMI_GATEWAY"} | refused
    assert set(runner.Script("target", "tgt", settings).env) == {"PATH", "LC_ALL", "BMI_TGT_CONTROL_PORT",
                                                                "BMI_TGT_PARAMETERS"}


def program(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *args], capture_output=True, text=True,
                          timeout=30, env={"PATH": os.environ["PATH"]})


@pytest.mark.parametrize("name, settings", [("nameserver.py", config.NAME_SERVER),
                                            ("mainserver.py", config.MAIN_SERVER),
                                            ("mainclient.py", config.CLIENT)])
def test_every_programs_help_lists_its_settings_with_their_defaults(name, settings):
    done = program(name, "--help")
    assert done.returncode == 0 and done.stderr == ""
    for setting in settings:
        line = [line for line in done.stdout.splitlines() if line.strip().startswith(setting + " ")]
        assert line and "(default: %s)" % (config.SETTINGS[setting].default or "empty") in line[0], setting


@pytest.mark.parametrize("args", [["--ns-port=abc"], ["--ns-port", "abc"]])
def test_a_server_takes_flags_as_flag_value_or_flag_equals_value(args):
    done = program("nameserver.py", *args)
    assert (done.returncode, done.stderr) == (2, "nameserver: BMI_NS_PORT must be a whole number from 1 to 65535, "
                                                 "not 'abc'\n")


def test_a_server_refuses_an_unknown_flag_in_one_line():
    done = program("mainserver.py", "--frobnicate")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unrecognized arguments: --frobnicate" in done.stderr
