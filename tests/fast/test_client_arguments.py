"""mainclient's command line: the conventions, the checks before any call, the exit codes."""
import os
import socket
import subprocess
import sys

import pytest

import mainclient
from config import ROOT


@pytest.mark.parametrize("argv, expected", [
    (["list_all_images"], ("list_all_images", [], {}, False, {}, None)),
    (["--json", "provision", "golden", "node-a"], ("provision", ["golden", "node-a"], {}, True, {}, None)),
    (["provision", "golden", "node-a", "--json"], ("provision", ["golden", "node-a"], {}, True, {}, None)),
    (["detach_node", "--force", "node-a"], ("detach_node", ["node-a"], {"force": True}, False, {}, None)),
    (["--ns-host=10.0.0.1", "--ns-port", "9100", "ping"],
     ("ping", [], {}, False, {"BMI_NS_HOST": "10.0.0.1", "BMI_NS_PORT": "9100"}, None)),
    (["--gateway", "gw-b", "ping"], ("ping", [], {}, False, {}, "gw-b")),
    (["remove_gateway", "gw-b"], ("remove_gateway", ["gw-b"], {}, False, {}, None)),
    (["list_all_images", "--node", "node-a"], ("list_all_images", [], {"node": "node-a"}, False, {}, None)),
    (["--image=golden", "--node", "node-a", "list_all_images"],
     ("list_all_images", [], {"node": "node-a", "image": "golden"}, False, {}, None)),
    (["--", "ping"], ("ping", [], {}, False, {}, None)),
    (["-h"], (None, [], {}, False, {}, None)),
    (["provision", "--help"], (None, ["provision"], {}, False, {}, None)),
    (["provision", "-x", "--help"], (None, ["provision"], {}, False, {}, None)),
])
def test_parse(argv, expected):
    assert tuple(mainclient.parse(argv)) == expected


@pytest.mark.parametrize("argv, message", [
    ([], "no operation given"),
    (["frobnicate"], "unknown operation 'frobnicate'"),
    (["provision", "golden"], "usage: mainclient.py provision IMAGE NODE"),
    (["list_all_images", "--force"], "--force goes with detach_node only"),
    (["--bogus", "ping"], "unknown option '--bogus'"),
    (["--json=yes", "ping"], "unknown option '--json=yes'"),
    (["ping", "--ns-port"], "--ns-port needs a value"),
    (["detach_node", "--", "-rf"], "invalid node name '-rf'"),
    (["--", "--json", "ping"], "unknown operation '--json'"),
    (["import_image", "golden", "relative.raw"], "invalid path 'relative.raw'"),
    (["--gateway=GW.1", "ping"], "invalid gateway name 'GW.1'"),
    (["detach_node", "node-a", "--node", "node-a"], "--node goes with list_all_images only"),
    (["list_all_images", "--image", "../x"], "invalid image name '../x'"),
    (["list_all_images", "--node"], "--node needs a value"),
])
def test_usage_errors(argv, message):
    with pytest.raises(mainclient.UsageError, match="^" + message.replace("(", r"\(")):
        mainclient.parse(argv)


def client(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "mainclient.py"), *args], capture_output=True,
                          text=True, timeout=30, env=dict({"PATH": os.environ["PATH"]}, **(env or {})))


def test_help_lists_every_operation_and_an_operations_help_its_usage():
    done = client("--help")
    assert done.returncode == 0 and done.stderr == ""
    for operation in mainclient.OPERATIONS:
        assert "  " + mainclient.usage(operation) + " " in done.stdout
    done = client("detach_node", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: mainclient.py [OPTIONS] detach_node NODE [--force] [--power-off]\n")


def test_a_usage_error_is_one_line_and_exit_code_2():
    done = client("provision", "golden", "Node;rm")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "mainclient: invalid node name 'Node;rm': it must match ^[a-z0-9][a-z0-9.-]{0,62}$\n"


def test_a_bad_setting_is_a_usage_error():
    done = client("--ns-port", "0", "ping")
    assert (done.returncode, done.stderr) == (2, "mainclient: BMI_NS_PORT must be a whole number from 1 to 65535, "
                                                 "not '0'\n")


def test_no_name_server_is_exit_code_3(tmp_path):
    key = tmp_path / "hmac.key"
    key.write_text("0123456789abcdef0123\n")
    key.chmod(0o600)
    with socket.socket() as sock:   # a port with no one listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = client("--ns-port", str(port), "ping", env={"BMI_KEY_FILE": str(key)})
    assert (done.returncode, done.stderr) == (3, "mainclient: cannot reach the name server at 127.0.0.1:%d\n" % port)
