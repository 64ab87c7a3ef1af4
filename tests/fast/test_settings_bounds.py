"""Settings read literally: seconds that are finite and within what a time limit takes, an IQN
prefix that leaves room for every node name within the standard's 223 bytes, an image size cap."""
import os
import subprocess
import sys
import threading

import pytest

import config
from bmi import names
from config import ROOT

SECONDS = [name for name, setting in config.SETTINGS.items() if setting.check is config.seconds]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in config.SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_every_time_limit_is_a_seconds_setting():
    assert {"BMI_SCRIPT_TIMEOUT", "BMI_STALL_TIMEOUT", "BMI_CLIENT_TIMEOUT", "BMI_TGT_CHECK_SECONDS"} <= set(SECONDS)


@pytest.mark.parametrize("name", SECONDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan", "NaN", "1e300", "1e3", "1" * 400, "86401",
                                   "1e10", "0", "0.0", "-1", "", " 5", "5 ", "1_000", "0x10", "5s", "3e-1"])
def test_seconds_that_are_not_a_plain_finite_number_in_range_are_refused_naming_the_setting(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        config.Settings()
    assert str(refused.value) == "%s must be a number of seconds above 0 and at most 86400 (a day), not %r" % (
        name, value)


@pytest.mark.parametrize("value, seconds", [("30", 30.0), ("0.5", 0.5), ("2.", 2.0), (".25", 0.25),
                                            ("86400", 86400.0), ("007", 7.0)])
def test_plain_seconds_are_taken(monkeypatch, value, seconds):
    monkeypatch.setenv("BMI_CLIENT_TIMEOUT", value)
    assert config.Settings().BMI_CLIENT_TIMEOUT == seconds


def test_the_longest_seconds_fit_every_time_limit_the_service_sets():
    """A day is within what threading, sockets and select (epoll: milliseconds in an int) accept."""
    import select
    import socket
    longest = config.Settings(BMI_STALL_TIMEOUT="86400").BMI_STALL_TIMEOUT
    assert longest <= threading.TIMEOUT_MAX
    with socket.socket() as sock:
        sock.settimeout(longest)
    with select.epoll() as poll:
        poll.poll(0)
        assert longest * 1000 < 2 ** 31 - 1


def client(*args, **env):
    return subprocess.run([sys.executable, os.path.join(ROOT, "mainclient.py"), *args], capture_output=True,
                          text=True, timeout=30, env=dict(PATH=os.environ["PATH"], **env))


@pytest.mark.parametrize("value", ["inf", "nan", "1e300"])
def test_the_client_refuses_an_infinite_timeout_at_start(value, tmp_path):
    done = client("list_all_images", BMI_CLIENT_TIMEOUT=value, BMI_KEY_FILE=str(tmp_path / "key"),
                  BMI_NS_PORT="1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "BMI_CLIENT_TIMEOUT must be a number of seconds" in done.stderr
    assert "name server" not in done.stderr


# --- IQNs ---------------------------------------------------------------------------------------

LONGEST_NODE = "n" * 63


def test_the_longest_node_name_is_the_one_names_allows():
    names.check_node(LONGEST_NODE)
    with pytest.raises(ValueError):
        names.check_node(LONGEST_NODE + "n")


def prefix_of(length):
    prefix = "iqn.2026-11.io.bmi-rpc."
    return prefix + "x" * (length - len(prefix))


def test_an_iqn_prefix_leaves_room_for_every_node_within_223_bytes():
    longest = prefix_of(223 - 1 - len(LONGEST_NODE))
    settings = config.Settings(BMI_IQN_PREFIX=longest)
    assert len(("%s:%s" % (settings.BMI_IQN_PREFIX, LONGEST_NODE)).encode()) == 223
    with pytest.raises(ValueError) as refused:
        config.Settings(BMI_IQN_PREFIX=longest + "x")
    assert str(refused.value).startswith("BMI_IQN_PREFIX must be at most 159 bytes, so that PREFIX:NODE with the "
                                         "longest node name (63) stays within an IQN's 223 bytes, not ")
    with pytest.raises(ValueError, match="^BMI_IQN_PREFIX must be iqn.YYYY-MM.reversed.domain"):
        config.Settings(BMI_IQN_PREFIX=prefix_of(5000) + ":")


# --- the image size cap ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, size", [("16TiB", 16 << 40), ("16 TiB", 16 << 40), ("16T", 16 << 40), ("512", 512),
                                         ("1048576", 1 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29),
                                         ("100MiB", 100 << 20), ("1PiB", 1 << 50), ("4096B", 4096)])
def test_the_image_size_cap_is_bytes_or_with_a_unit(value, size):
    assert config.Settings(BMI_IMAGE_SIZE_CAP=value).BMI_IMAGE_SIZE_CAP == size


def test_the_image_size_cap_defaults_to_16_tib():
    assert config.Settings().BMI_IMAGE_SIZE_CAP == 16 << 40


@pytest.mark.parametrize("value", ["", "0", "511", "-1", "16 TB", "16KB", "inf", "nan", "1e3", "1.5", "16 TiBs",
                                   "5EiB", "x", "1_000"])
def test_a_bad_image_size_cap_is_refused_naming_the_setting(value):
    with pytest.raises(ValueError) as refused:
        config.Settings(BMI_IMAGE_SIZE_CAP=value)
    assert str(refused.value).startswith("BMI_IMAGE_SIZE_CAP must be a size in bytes from 512 to 4 EiB, as a whole "
                                         "number or with a binary unit (16TiB, 500 GiB, 2G)")
