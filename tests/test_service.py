"""The three real processes, driven through mainclient as a user would, verified with real initiators."""
import json
import os
import subprocess

import pytest

from testkit.daemons import require_command, stop_process, wait_until
from testkit.fixtures import state_of
from testkit.images import make_image_file
from testkit.initiator import lun_url, read_lun
from testkit.service import Service



def test_provision_exports_the_golden_image_to_a_real_initiator(service, settings, tgtd, tmp_path):
    golden = make_image_file(tmp_path / "golden.raw")
    done = service.client("import_image", "golden", str(tmp_path / "golden.raw"))
    assert (done.returncode, done.stdout) == (0, "imported golden image golden from %s\n" % (tmp_path / "golden.raw"))

    done = service.client("provision", "golden", "node-a")
    assert done.returncode == 0, done.stderr
    iqn = settings.BMI_IQN_PREFIX + ":node-a"
    assert done.stdout.splitlines()[0] == "provisioned node node-a from image golden"
    assert "  iqn:         %s" % iqn in done.stdout.splitlines()

    require_command("iscsi-ls", "libiscsi-bin")
    listing = subprocess.run(["iscsi-ls", "iscsi://" + tgtd.portal], capture_output=True, text=True, timeout=60)
    assert listing.stdout.split() == ["Target:%s" % iqn, "Portal:%s,1" % tgtd.portal]
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == golden

    listed = json.loads(service.client("--json", "list_all_images").stdout)
    assert listed == {"images": [{"name": "golden", "size_bytes": len(golden)}],
                      "nodes": [{"node": "node-a", "image": "golden", "iqn": iqn, "gateways": [settings.BMI_GATEWAY],
                                 "paths": [settings.BMI_GATEWAY], "macs": [], "bmc": None}],
                      "gateways": [{"name": settings.BMI_GATEWAY, "portal": settings.BMI_BOOT_PORTAL, "up": True}]}

    done = service.client("create_snapshot", "node-a", "snap")
    assert (done.returncode, done.stdout) == (0, "created golden image snap from node node-a\n")
    done = service.client("detach_node", "node-a")
    assert (done.returncode, done.stdout) == (0, "detached node node-a (image golden, target %s)\n" % iqn)
    assert tgtd.targets() == {}


def test_provision_json_result(service, settings, tgtd, tmp_path):
    make_image_file(tmp_path / "golden.raw", 1024 * 1024)
    service.client("import_image", "golden", str(tmp_path / "golden.raw"))
    done = service.client("--json", "provision", "golden", "node-a")
    assert json.loads(done.stdout) == {
        "node": "node-a", "image": "golden", "iqn": settings.BMI_IQN_PREFIX + ":node-a",
        "portal": tgtd.portal, "lun": 1, "portals": {settings.BMI_GATEWAY: settings.BMI_BOOT_PORTAL}, "down": [],
        "boot_script": os.path.join(settings.BMI_STATE_DIR, "boot", "node-a.ipxe"), "macs": []}


@pytest.mark.parametrize("arguments, code, message", [
    ([], 2, "no operation given"),
    (["frobnicate"], 2, "unknown operation 'frobnicate'"),
    (["provision", "golden"], 2, "usage: mainclient.py provision IMAGE NODE"),
    (["provision", "golden", "Node;rm"], 2, "invalid node name 'Node;rm'"),
    (["import_image", "golden", "relative.raw"], 2, "invalid path 'relative.raw'"),
    (["list_all_images", "--force"], 2, "--force goes with detach_node only"),
    (["--bogus", "list_all_images"], 2, "unknown option '--bogus'"),
    (["provision", "golden", "node-a", "--mac", "52:54:00:zz:00:01"], 2, "invalid MAC address '52:54:00:zz:00:01'"),
    (["provision", "golden", "node-a", "--mac", "01:00:5e:00:00:01"], 2, "a group address"),
    (["detach_node", "node-a", "--mac", "52:54:00:00:00:01"], 2, "--mac goes with provision only"),
    (["provision", "missing", "node-a"], 4, "provision failed: no such image: missing"),
    (["detach_node", "node-x"], 4, "detach_node failed: node node-x is not provisioned"),
])
def test_bad_input_gets_one_line_and_its_exit_code(service, arguments, code, message):
    done = service.client(*arguments)
    assert done.returncode == code
    assert message in done.stderr
    if arguments:
        assert done.stderr.count("\n") == 1 and done.stdout == ""


def test_help_lists_every_operation(service):
    done = service.client("--help")
    assert done.returncode == 0
    for usage in ("import_image IMAGE PATH", "provision IMAGE NODE", "detach_node NODE [--force]",
                  "create_snapshot NODE SNAPSHOT", "delete_image IMAGE", "list_all_images"):
        assert usage in done.stdout


def test_an_unreachable_name_server_is_exit_code_3(settings, tmp_path):
    service = Service(settings, str(tmp_path))
    with open(settings.BMI_KEY_FILE, "w") as f:   # as a server that ran before left it
        f.write("0123456789abcdef\n")
    os.chmod(settings.BMI_KEY_FILE, 0o600)
    done = service.client("list_all_images")
    assert done.returncode == 3
    assert done.stderr == "mainclient: cannot reach the name server at 127.0.0.1:%d\n" % settings.BMI_NS_PORT


def test_a_missing_main_server_is_exit_code_3(settings, tmp_path):
    service = Service(settings, str(tmp_path))
    service.start_nameserver()
    try:
        wait_until(lambda: "not registered" in service.client("list_all_images").stderr, 20, "name server up")
        done = service.client("list_all_images")
        assert done.returncode == 3
        assert done.stderr == ("mainclient: the main server is not registered with the name server at "
                               "127.0.0.1:%d\n" % settings.BMI_NS_PORT)
    finally:
        service.stop()


def test_the_main_server_waits_for_the_name_server_and_registers_again(settings, tmp_path):
    service = Service(settings, str(tmp_path))
    service.start_mainserver()   # before the name server: it waits
    try:
        service.start_nameserver()
        service.wait_ready(timeout=20)
        stop_process(service.nameserver)
        assert service.nameserver.returncode == 0   # SIGTERM is a clean stop
        service.start_nameserver()   # the same port again at once
        service.wait_ready(timeout=10)
    finally:
        service.stop()
    assert service.mainserver.returncode == 0


def test_tgtd_restart_gets_every_target_back_without_a_server_restart(service, settings, tgtd, tmp_path):
    golden = make_image_file(tmp_path / "golden.raw")
    service.client("import_image", "golden", str(tmp_path / "golden.raw"))
    for node in ("node-a", "node-b"):
        assert service.client("provision", "golden", node).returncode == 0
    exported = tgtd.exports()
    tgtd.restart()
    wait_until(lambda: tgtd.exports() == exported, 20, "targets back whole")
    assert read_lun(lun_url(settings, "node-b"), tmp_path / "b.raw") == golden


def test_a_restarted_main_server_keeps_its_nodes(service, settings, tgtd, tmp_path):
    make_image_file(tmp_path / "golden.raw", 1024 * 1024)
    service.client("import_image", "golden", str(tmp_path / "golden.raw"))
    service.client("provision", "golden", "node-a")
    before = service.client("list_all_images").stdout
    service.interrupt_mainserver()
    service.start_mainserver()
    service.wait_ready()
    assert service.client("list_all_images").stdout == before


def test_a_nodes_macs_are_listed_and_belong_to_it_alone(service, settings, tgtd, tmp_path):
    make_image_file(tmp_path / "golden.raw", 1024 * 1024)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    done = service.client("--json", "provision", "golden", "node-a", "--mac", "52:54:00:AA:00:01", "--mac",
                          "52-54-00-aa-00-02")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["macs"] == ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]
    before = state_of(settings, tgtd)
    done = service.client("provision", "golden", "node-b", "--mac", "52:54:00:aa:00:02")
    assert (done.returncode, done.stdout) == (5, "")   # already exists
    assert done.stderr == "mainclient: provision failed: MAC address 52:54:00:aa:00:02 belongs to node node-a\n"
    assert state_of(settings, tgtd) == before
    nodes = service.list_all_images()["nodes"]
    assert [(n["node"], n["macs"]) for n in nodes] == [("node-a", ["52:54:00:aa:00:01", "52:54:00:aa:00:02"])]
    assert service.client("detach_node", "node-a").returncode == 0
    assert service.client("provision", "golden", "node-b", "--mac", "52:54:00:aa:00:02").returncode == 0


def test_status_shows_what_is_up_and_exits_8_when_something_is_down(service, settings, tgtd):
    done = service.client("status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "name server 127.0.0.1:%d: up" % settings.BMI_NS_PORT, "gateway gw-a: up",
        "  storage:       up (%s, 0 golden images)" % settings.BMI_BACKEND, "  tgtd:          up (0 targets)"]
    done = service.client("--json", "status")   # the same facts, for a script
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "up": True, "name servers": [{"address": "127.0.0.1:%d" % settings.BMI_NS_PORT, "up": True}],
        "gateways": {"gw-a": {"up": True, "parts": {
            "storage": {"up": True, "detail": "%s, 0 golden images" % settings.BMI_BACKEND},
            "tgtd": {"up": True, "detail": "0 targets"}}}}}
    tgtd.stop()   # the gateway answers; its tgtd does not
    done = service.client("--json", "status")
    assert done.returncode == 8, done.stderr
    result = json.loads(done.stdout)
    assert result["up"] is False and result["gateways"]["gw-a"]["up"] is False
    parts = result["gateways"]["gw-a"]["parts"]
    assert parts["storage"]["up"] and not parts["tgtd"]["up"]
    assert "tgtd is not running" in parts["tgtd"]["detail"], parts
    done = service.client("status")
    assert done.returncode == 8, done.stderr
    assert done.stdout.splitlines()[1:] == ["gateway gw-a: DOWN", "  storage:       up (%s, 0 golden images)"
                                            % settings.BMI_BACKEND, "  tgtd:          DOWN (%s)" % parts["tgtd"]["detail"]]
    tgtd.start()
