"""Unit tests of the MainServer class: real scripts, a private tgtd, and for rbd a throwaway Ceph
cluster. Each test runs on every storage backend and checks a method's actual output against the
expected output, and that refused calls change nothing."""
import os
import subprocess
import threading

import Pyro4
import pytest



from bmi import runner
from bmi.changes import FULL
from bmi.errors import BadInput
from bmi.nodes import DETACHING, PROVISIONING
from bmi.records import records_for
from mainserver import MainServer
from testkit.daemons import wait_until
from testkit.fixtures import state_of
from testkit.images import make_image_file
from testkit.initiator import lun_url, node_record, read_lun, write_lun


OPERATIONS = {"import_image", "provision", "detach_node", "create_snapshot", "delete_image", "list_all_images", "ping",
              "remove_gateway", "follow", "sync_node", "logged_in", "exported_nodes", "health", "power"}


@pytest.fixture
def golden(server, tmp_path):
    """A 4 MiB golden image named "golden"; returns its bytes."""
    data = make_image_file(tmp_path / "golden.raw")
    server.import_image("golden", str(tmp_path / "golden.raw"))
    return data


def test_only_the_operations_are_exposed():
    exposed = Pyro4.util.get_exposed_members(MainServer, only_exposed=True)
    assert exposed["methods"] == OPERATIONS
    assert exposed["attrs"] == set() and exposed["oneway"] == set()


def the_gateway(settings):
    """The one gateway of a service, in list_all_images' words."""
    return [{"name": settings.BMI_GATEWAY, "portal": settings.BMI_BOOT_PORTAL, "up": True}]


def test_import_image_lists_the_golden_image(server, settings, golden):
    assert server.list_all_images() == {"images": [{"name": "golden", "size_bytes": len(golden)}], "nodes": [],
                                        "gateways": the_gateway(settings)}


def test_list_all_images_of_one_node_or_one_image(server, settings, golden, tmp_path):
    make_image_file(tmp_path / "other.raw", 1 << 20)
    server.import_image("other", str(tmp_path / "other.raw"))
    for image, node in (("golden", "node-a"), ("golden", "node-b"), ("other", "node-c")):
        server.provision(image, node)
    listed = lambda **filters: ([i["name"] for i in server.list_all_images(**filters)["images"]],
                                [n["node"] for n in server.list_all_images(**filters)["nodes"]])
    assert listed() == (["golden", "other"], ["node-a", "node-b", "node-c"])
    assert listed(node="node-b") == (["golden"], ["node-b"])
    assert listed(image="golden") == (["golden"], ["node-a", "node-b"])
    assert listed(image="other", node="node-c") == (["other"], ["node-c"])
    assert listed(image="other", node="node-a") == (["other"], [])
    assert listed(node="node-z") == listed(image="nothing") == ([], [])
    assert server.list_all_images(node="node-a")["nodes"] == [
        n for n in server.list_all_images()["nodes"] if n["node"] == "node-a"]
    assert server.list_all_images(node="node-a")["gateways"] == the_gateway(settings)
    with pytest.raises(BadInput, match="invalid node name"):
        server.list_all_images(node="../node-a")


def test_import_image_refuses_an_existing_name(server, golden, tmp_path):
    make_image_file(tmp_path / "other.raw", 1024 * 1024)
    with pytest.raises(RuntimeError, match="golden.* already exists"):
        server.import_image("golden", str(tmp_path / "other.raw"))
    assert server.list_all_images()["images"] == [{"name": "golden", "size_bytes": len(golden)}]


@pytest.mark.parametrize("size, message", [(None, "no such file"), (0, "multiple of 512"), (1000, "multiple of 512")])
def test_import_image_refuses_a_file_that_is_no_disk_image(server, settings, tmp_path, size, message):
    path = tmp_path / "bad.raw"
    if size is not None:
        path.write_bytes(b"x" * size)
    with pytest.raises(RuntimeError, match=message):
        server.import_image("bad", str(path))
    assert server.list_all_images() == {"images": [], "nodes": [], "gateways": the_gateway(settings)}


def test_provision_exports_a_clone_and_writes_the_boot_script(server, settings, golden, tgtd, tmp_path):
    result = server.provision("golden", "node-a")

    iqn = settings.BMI_IQN_PREFIX + ":node-a"
    boot_script = os.path.join(settings.BMI_STATE_DIR, "boot", "node-a.ipxe")
    assert result == {"node": "node-a", "image": "golden", "iqn": iqn, "portal": tgtd.portal, "lun": 1,
                      "portals": {settings.BMI_GATEWAY: settings.BMI_BOOT_PORTAL}, "down": [],
                      "boot_script": boot_script, "macs": []}
    assert list(tgtd.targets().values()) == [iqn]
    record = node_record(settings, "node-a")
    host, port = settings.BMI_BOOT_PORTAL.split(":")
    with open(boot_script) as f:
        assert f.read() == ("#!ipxe\nisset ${ip} || dhcp\nset username node-a\nset password %s\nsanboot iscsi:%s::%s:1:%s\n"
                            % (record["chap_secret"], host, port, iqn))
    assert os.stat(boot_script).st_mode & 0o777 == 0o600
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == golden
    assert server.list_all_images()["nodes"] == [{"node": "node-a", "image": "golden", "iqn": iqn,
                                                  "gateways": [settings.BMI_GATEWAY], "paths": [settings.BMI_GATEWAY],
                                                  "bmc": None,
                                                  "macs": []}]


def test_the_target_requires_the_nodes_chap_secret(server, settings, golden, tmp_path):
    server.provision("golden", "node-a")
    with pytest.raises(subprocess.CalledProcessError):
        read_lun(lun_url(settings, "node-a", credentials=False), tmp_path / "back.raw")


def test_provision_refuses_a_provisioned_node_and_changes_nothing(server, settings, golden, tgtd):
    server.provision("golden", "node-a")
    before = state_of(settings, tgtd)
    with pytest.raises(RuntimeError, match="node node-a is already provisioned"):
        server.provision("golden", "node-a")
    assert state_of(settings, tgtd) == before


def test_provision_of_a_missing_image_fails_and_changes_nothing(server, settings, golden, tgtd):
    before = state_of(settings, tgtd)
    with pytest.raises(RuntimeError, match="no such image: missing"):
        server.provision("missing", "node-a")
    assert state_of(settings, tgtd) == before


BAD_CALLS = [
    ("import_image", ("../etc", "/tmp/x")), ("import_image", ("ok", "relative/path")),
    ("import_image", ("a b", "/tmp/x")), ("import_image", ("ok", "/tmp/x\0y")),
    ("provision", ("golden", "Node-A")), ("provision", ("golden", "-rf")), ("provision", ("gold;en", "n")),
    ("provision", ("golden", "a" * 64)), ("provision", ("golden", "node\n")), ("provision", ("$(id)", "n")),
    ("detach_node", ("../n",)), ("create_snapshot", ("node-a", "x/y")), ("create_snapshot", ("n_1", "ok")),
    ("provision", (1, "n")), ("power", ("../n", "on")),
    ("provision", ("golden", "n", (), {"driver": "smoke", "address": "h", "user": "u", "password": "p"})),
]


@pytest.mark.parametrize("operation, arguments", BAD_CALLS)
def test_bad_names_are_refused_before_any_script_runs(server, settings, golden, tgtd, monkeypatch,
                                                      operation, arguments):
    before = state_of(settings, tgtd)
    done = []   # every command started (quick ones, copies, the records helper) and every record written
    real_start = runner._start
    monkeypatch.setattr(runner, "_start", lambda args, *rest, **kw: done.append(args) or real_start(args, *rest, **kw))
    for change in ("_create", "_replace", "_remove"):
        real = getattr(server._records, change)
        monkeypatch.setattr(server._records, change, lambda *args, real=real, change=change: done.append(change) or
                            real(*args))
    with pytest.raises(BadInput, match="must"):
        getattr(server, operation)(*arguments)
    assert done == []
    assert state_of(settings, tgtd) == before


def test_an_image_and_a_node_may_share_a_name(server, settings, golden, tmp_path):
    server.provision("golden", "golden")
    server.create_snapshot("golden", "golden2")
    assert [i["name"] for i in server.list_all_images()["images"]] == ["golden", "golden2"]
    assert read_lun(lun_url(settings, "golden"), tmp_path / "back.raw") == golden


def test_a_nodes_writes_stay_its_own(server, settings, golden, tmp_path):
    server.provision("golden", "node-a")
    (tmp_path / "sector").write_bytes(b"\xab" * 512)
    write_lun(lun_url(settings, "node-a"), 0, tmp_path / "sector")
    server.provision("golden", "node-b")
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "a.raw") == b"\xab" * 512 + golden[512:]
    assert read_lun(lun_url(settings, "node-b"), tmp_path / "b.raw") == golden


def test_detach_node_takes_target_disk_and_boot_script_away(server, settings, golden, tgtd):
    empty = state_of(settings, tgtd)
    server.provision("golden", "node-a")
    assert server.detach_node("node-a") == {"node": "node-a", "image": "golden",
                                            "iqn": settings.BMI_IQN_PREFIX + ":node-a"}
    assert state_of(settings, tgtd) == empty
    assert server.list_all_images()["nodes"] == []


def test_detach_node_of_an_unknown_node_says_so(server, golden):
    with pytest.raises(RuntimeError, match="node node-x is not provisioned"):
        server.detach_node("node-x")


def test_detach_node_refuses_while_an_initiator_is_logged_in(server, settings, golden, tgtd):
    server.provision("golden", "node-a")
    tid = tgtd.tid(settings.BMI_IQN_PREFIX + ":node-a")
    # qemu-io holds a session for as long as it sleeps
    holder = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 60000", lun_url(settings, "node-a")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "Initiator" in tgtd.admin("--op", "show", "--mode", "conn", "--tid", str(tid)).stdout,
                   30, "initiator logged in")
        before = state_of(settings, tgtd)
        with pytest.raises(RuntimeError, match="node node-a is in use: .* is logged in .*--force"):
            server.detach_node("node-a")
        assert state_of(settings, tgtd) == before
        server.detach_node("node-a", force=True)
        assert tgtd.targets() == {}
        assert server.list_all_images()["nodes"] == []
    finally:
        holder.kill()
        holder.wait()


def test_create_snapshot_makes_a_golden_image_that_outlives_the_node(server, settings, golden, tmp_path):
    server.provision("golden", "node-a")
    (tmp_path / "sector").write_bytes(b"\x5a" * 512)
    write_lun(lun_url(settings, "node-a"), 4096, tmp_path / "sector")
    assert server.create_snapshot("node-a", "snap") == {"node": "node-a", "image": "snap"}
    server.detach_node("node-a")
    server.provision("snap", "node-b")
    expected = golden[:4096] + b"\x5a" * 512 + golden[4608:]
    assert read_lun(lun_url(settings, "node-b"), tmp_path / "b.raw") == expected
    assert server.list_all_images()["images"] == [{"name": "golden", "size_bytes": len(golden)},
                                                  {"name": "snap", "size_bytes": len(golden)}]


def test_create_snapshot_refuses_an_unknown_node_or_a_taken_name(server, settings, golden, tgtd):
    server.provision("golden", "node-a")
    before = state_of(settings, tgtd)
    with pytest.raises(RuntimeError, match="node node-x is not provisioned"):
        server.create_snapshot("node-x", "snap")
    with pytest.raises(RuntimeError, match="golden already exists"):
        server.create_snapshot("node-a", "golden")
    assert state_of(settings, tgtd) == before


def test_a_failed_target_creation_leaves_nothing_behind(server, settings, golden, tgtd):
    before = state_of(settings, tgtd)
    tgtd.stop()
    with pytest.raises(RuntimeError, match="^cannot export .*:node-a: tgtd is not running"):
        server.provision("golden", "node-a")
    tgtd.start()
    assert state_of(settings, tgtd) == before
    assert server.list_all_images()["nodes"] == []


def test_a_failed_provision_is_taken_back_even_if_its_record_could_not_be_changed_then(server, settings, golden, tgtd,
                                                                                       monkeypatch):
    """The target fails, and so does marking the ready record detaching (the records out of reach for
    a moment): reconciling takes the node away, rather than export what the reply said failed."""
    before = state_of(settings, tgtd)
    move = server._records.move

    def move_unless_detaching(record, state, **fields):
        if state == DETACHING:
            raise RuntimeError("the records are out of reach")
        return move(record, state, **fields)

    monkeypatch.setattr(server._records, "move", move_unless_detaching)
    tgtd.stop()
    with pytest.raises(RuntimeError, match="tgtd is not running"):
        server.provision("golden", "node-a")
    tgtd.start()
    monkeypatch.undo()
    server.reconcile()
    assert state_of(settings, tgtd) == before
    assert server.list_all_images()["nodes"] == []


def test_a_new_server_exports_every_node_again_after_a_tgtd_restart(server, settings, golden, tgtd, tmp_path):
    server.provision("golden", "node-a")
    server.provision("golden", "node-b")
    exported = tgtd.exports()
    server.close()
    tgtd.restart()
    assert tgtd.targets() == {}
    with MainServer(settings):
        assert tgtd.exports() == exported
    assert read_lun(lun_url(settings, "node-b"), tmp_path / "b.raw") == golden


def test_a_new_server_undoes_a_provisioning_a_crash_interrupted(server, settings, golden, tgtd):
    empty = state_of(settings, tgtd)
    server.provision("golden", "node-a")
    server.close()
    records = records_for(settings)
    records.load()
    record = records.get("node-a")   # as a crash before the last step leaves it:
    records._replace(record.changed(state=PROVISIONING, gateway=settings.BMI_GATEWAY))   # no move leads back there
    records.close()
    with MainServer(settings):   # takes it away in the background, once it serves
        wait_until(lambda: state_of(settings, tgtd) == empty, 60, "the half-made node taken away")


def test_racing_provisions_of_one_node_have_one_winner(server, settings, golden, tgtd):
    outcomes = []

    def provision():
        try:
            outcomes.append(server.provision("golden", "node-a")["node"])
        except RuntimeError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=provision) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(outcomes) == ["node node-a is already provisioned (from image golden)"] * 3 + ["node-a"]
    assert list(tgtd.targets().values()) == [settings.BMI_IQN_PREFIX + ":node-a"]


def test_different_nodes_are_provisioned_in_parallel(server, settings, golden, tgtd):
    nodes = ["node-%d" % i for i in range(6)]
    threads = [threading.Thread(target=server.provision, args=("golden", node)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [n["node"] for n in server.list_all_images()["nodes"]] == nodes
    assert sorted(tgtd.targets().values()) == [settings.BMI_IQN_PREFIX + ":" + n for n in nodes]


def test_two_rounds_of_finishing_at_once_both_end_well(server, settings, golden, tgtd, monkeypatch):
    """Start's round and reconciling's may overlap on the same half-done nodes: each ends without an
    error, and every node is taken away."""
    empty = state_of(settings, tgtd)
    for node in ("node-a", "node-b"):
        server.provision("golden", node)
        record = server._records.get(node)   # as a crash halfway through a detach leaves it:
        server._records.move(record, DETACHING, gateway=settings.BMI_GATEWAY)
    server._recovery.load()
    second_started, failures = threading.Event(), []
    remove = server._storage.remove

    def remove_once_both_run(node):   # the first take-away waits until the second round has begun
        second_started.wait(10)
        remove(node)

    monkeypatch.setattr(server._storage, "remove", remove_once_both_run)

    def a_round(started=None):
        if started:
            started.set()
        try:
            server._recovery.finish()
        except Exception as err:
            failures.append(err)

    rounds = [threading.Thread(target=a_round), threading.Thread(target=a_round, args=(second_started,))]
    for thread in rounds:
        thread.start()
    for thread in rounds:
        thread.join(60)
    assert failures == []
    assert state_of(settings, tgtd) == empty


def test_a_peers_sync_of_a_node_held_here_answers_busy_instead_of_waiting(server, settings, golden):
    """Another gateway's operation may wait for this answer while this gateway's operation on the
    node waits for that one: the answer comes within a quarter of BMI_PEER_TIMEOUT, busy, and the
    node is synced at the next round of reconciling, as a change pushed."""
    server.provision("golden", "node-a")
    assert server._pushed.next_round() == FULL   # the first round: every node
    holding, release, answers = threading.Event(), threading.Event(), []

    def an_operation_here():
        with server._locks.hold("node:node-a"):
            holding.set()
            release.wait(30)

    operation = threading.Thread(target=an_operation_here)
    operation.start()
    try:
        assert holding.wait(10)
        peer_call = threading.Thread(target=lambda: answers.append(server.sync_node("node-a")))
        peer_call.start()
        peer_call.join(settings.BMI_PEER_TIMEOUT / 2)
        assert answers == [{"exported": None, "busy": True}]
    finally:
        release.set()
        operation.join(10)
    # with records in files, a round reads them all, and comes a check after the last
    assert server._pushed.next_round() == (["node-a"] if settings.BMI_BACKEND == "rbd" else FULL)
    assert server.sync_node("node-a") == {"exported": True}
