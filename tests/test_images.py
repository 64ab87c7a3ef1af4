"""Golden images as admins have them: real sizes and formats, refusals, copies bounded by their
progress, progress shown, nothing left behind by a killed copy, and delete_image. Both backends."""
import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time

import pytest

from bmi.errors import Unavailable
from config import ROOT
from testkit.daemons import wait_until
from testkit.fixtures import state_of
from testkit.images import GiB, MiB, convert, make_image_file, make_random_file, make_sparse_image
from testkit.initiator import lun_holds, lun_url, read_lun
from testkit.service import audit_lines


@pytest.fixture(scope="module")
def big_random(tmp_path_factory):
    """512 MiB of random bytes: a copy of it takes long enough to be caught half way."""
    path = tmp_path_factory.mktemp("big") / "big.raw"
    make_random_file(path, 512 * MiB)
    return path


def processes_running(*words):
    """Pids of the processes whose command line has all of words."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if all(word in args for word in words):
            pids.append(int(pid))
    return pids


@contextlib.contextmanager
def frozen_copy(settings, operation):
    """Wait for the command that copies the data of an import or a snapshot to start, then stop it
    (SIGSTOP) for the block."""
    words = ["rbd", "cp"] if operation == "snapshot" and settings.BMI_BACKEND == "rbd" else ["qemu-img", "convert"]
    pids = []
    wait_until(lambda: pids.extend(processes_running(*words)) or pids, 60, "the copy started")
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# --- sizes and formats -------------------------------------------------------------------------

def test_a_multi_gib_sparse_image_is_no_timeout(server_with, settings, tmp_path):
    """4 GiB, data at its start, middle and end: imported and cloned whole, though quick commands
    may take 3 s only."""
    marks = {0: (0x11, MiB), 2 * GiB - 512: (0x22, MiB), 4 * GiB - MiB: (0x33, MiB)}
    make_sparse_image(tmp_path / "big.raw", 4 * GiB, marks)
    main = server_with(BMI_SCRIPT_TIMEOUT="3")
    main.import_image("big", str(tmp_path / "big.raw"))
    assert main.list_all_images()["images"] == [{"name": "big", "size_bytes": 4 * GiB}]
    main.provision("big", "node-a")
    url = lun_url(settings, "node-a")
    for offset, (byte, length) in marks.items():
        assert lun_holds(url, offset, byte, length), offset
    assert lun_holds(url, GiB, 0, MiB) and lun_holds(url, 3 * GiB, 0, MiB)   # the holes read as zeros
    main.create_snapshot("node-a", "big2")
    assert main.list_all_images()["images"][1] == {"name": "big2", "size_bytes": 4 * GiB}


FORMATS = {"qcow2 compressed": ("qcow2", "-c"), "vmdk": ("vmdk",), "vmdk stream": ("vmdk", "-o", "subformat=streamOptimized"),
           "vdi": ("vdi",), "vhdx": ("vhdx",)}


@pytest.mark.parametrize("kind", FORMATS)
def test_an_image_in_another_format_is_stored_raw(server, settings, tmp_path, kind):
    raw = tmp_path / "disk.raw"
    make_sparse_image(raw, 16 * MiB, {0: (0x5a, MiB)})
    with open(raw, "r+b") as f:   # random data too, which no format can squeeze
        f.seek(8 * MiB)
        f.write(os.urandom(2 * MiB))
    image = convert(raw, tmp_path / "disk.img", *FORMATS[kind])
    server.import_image("disk", str(image))
    assert server.list_all_images()["images"] == [{"name": "disk", "size_bytes": 16 * MiB}]
    server.provision("disk", "node-a")
    assert read_lun(lun_url(settings, "node-a"), tmp_path / "back.raw") == raw.read_bytes()


def test_a_symlink_is_resolved_once(server, tmp_path):
    data = make_image_file(tmp_path / "debian.raw", MiB)
    (tmp_path / "current.raw").symlink_to("debian.raw")
    server.import_image("current", str(tmp_path / "current.raw"))
    assert server.list_all_images()["images"] == [{"name": "current", "size_bytes": len(data)}]


def refusals(tmp_path):
    """{what: (path, what the refusal says)}, of files import_image must refuse."""
    base = tmp_path / "base.raw"
    make_image_file(base, MiB)

    def qemu_img(*args):
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(tmp_path / "backed.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-o", "data_file=%s" % (tmp_path / "data.raw"),
             str(tmp_path / "external.qcow2"), "1M")
    # AES, not LUKS: making a LUKS header times the machine's PBKDF, which fails on a loaded one
    qemu_img("create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=swordfish",
             "-o", "encrypt.format=aes,encrypt.key-secret=s0", str(tmp_path / "encrypted.qcow2"), "1M")
    qemu_img("create", "-q", "-f", "qed", str(tmp_path / "disk.qed"), "1M")
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat", str(base), str(tmp_path / "flat.vmdk"))
    (tmp_path / "broken.qcow2").write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\xff" * 1016)
    (tmp_path / "odd.raw").write_bytes(b"x" * 670)
    # a link whose own length is 512 bytes, to a file that is no disk
    os.symlink("./" * 252 + "/odd.raw", tmp_path / "odd-link")
    assert os.lstat(tmp_path / "odd-link").st_size == 512
    os.mkfifo(tmp_path / "fifo")
    return {
        "backing file": (tmp_path / "backed.qcow2", "has a backing file (%s): it would read another file" % base),
        "data file": (tmp_path / "external.qcow2", "keeps its data in another file"),
        "encrypted": (tmp_path / "encrypted.qcow2", "is encrypted"),
        "other format": (tmp_path / "disk.qed", "is in the qed format; import_image takes raw, qcow2, vmdk, vdi, vhdx"),
        "vmdk descriptor": (tmp_path / "flat.vmdk", "is a VMDK descriptor: its data lies in other files"),
        "unreadable": (tmp_path / "broken.qcow2", "is not a disk image qemu-img can read"),
        "odd size": (tmp_path / "odd.raw", "is 670 bytes: a raw disk image is a non-zero multiple of 512 bytes"),
        "odd size behind a link": (tmp_path / "odd-link", "is 670 bytes"),
        "directory": (tmp_path, "is not a regular file"),
        "device": ("/dev/zero", "is not a regular file"),
        "fifo": (tmp_path / "fifo", "is not a regular file"),
        "missing": (tmp_path / "missing.raw", "no such file on the server"),
    }


def test_what_is_no_image_to_import_is_refused_in_one_line_and_changes_nothing(server, settings, tgtd, tmp_path):
    before = state_of(settings, tgtd)
    for what, (path, message) in refusals(tmp_path).items():
        with pytest.raises(RuntimeError) as refused:
            server.import_image("x", str(path))
        assert message in str(refused.value) and "\n" not in str(refused.value), (what, str(refused.value))
        assert state_of(settings, tgtd) == before, what
    assert server.list_all_images()["images"] == []


# --- copies are bounded by their progress, which is shown --------------------------------------

def test_a_copy_that_makes_no_progress_is_stopped_and_taken_back(server_with, settings, tgtd, big_random):
    main = server_with(BMI_STALL_TIMEOUT="2")
    before = state_of(settings, tgtd)
    outcome = []
    import_thread = threading_call(lambda: main.import_image("big", str(big_random)), outcome)
    with frozen_copy(settings, "import"):
        import_thread.join(60)
    assert [type(err) for err in outcome] == [Unavailable]   # audited: as the client gets it
    assert str(outcome[0]) == "made no progress for 2 s (BMI_STALL_TIMEOUT)"
    assert state_of(settings, tgtd) == before   # no partial image left


def threading_call(function, outcome):
    """Run function in a thread; its result or error goes to outcome."""
    def run():
        try:
            outcome.append(function())
        except Exception as err:
            outcome.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def client_on_a_terminal(service, *args):
    """Run mainclient with its stderr on a terminal; return (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), *args], env=service.env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:   # the client closed the terminal's last end
            break
        if not data:
            break
        shown += data
    out = proc.communicate(timeout=120)[0]
    os.close(master)
    return proc.returncode, out, shown.decode(errors="replace")


def test_import_and_snapshot_show_progress_on_a_terminal_only(service, settings, big_random):
    code, out, shown = client_on_a_terminal(service, "import_image", "big", str(big_random))
    assert (code, out) == (0, "imported golden image big from %s\n" % big_random)
    assert "import_image: 100% (512.0 MiB of 512.0 MiB, " in shown and "MiB/s)" in shown
    assert service.client("provision", "big", "node-a").returncode == 0
    code, out, shown = client_on_a_terminal(service, "--json", "create_snapshot", "node-a", "big2")
    assert (code, json.loads(out), shown) == (0, {"node": "node-a", "image": "big2"}, "")
    done = service.client("create_snapshot", "node-a", "big3")   # not a terminal: the result alone
    assert (done.returncode, done.stdout, done.stderr) == (0, "created golden image big3 from node node-a\n", "")


# --- nothing unseen takes space ------------------------------------------------------------------

@pytest.mark.parametrize("operation", ["import", "snapshot"])
def test_a_server_killed_during_a_copy_leaves_nothing_after_its_restart(service, settings, tgtd, big_random,
                                                                        operation):
    if operation == "snapshot":
        assert service.client("import_image", "big", str(big_random)).returncode == 0
        assert service.client("provision", "big", "node-a").returncode == 0
        args = ["create_snapshot", "node-a", "copy"]
    else:
        args = ["import_image", "copy", str(big_random)]
    before = state_of(settings, tgtd)
    client = subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), *args], env=service.env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with frozen_copy(settings, operation):
        service.mainserver.kill()
        service.mainserver.wait(10)
        assert client.wait(60) == 3
    service.start_mainserver()
    service.wait_ready()
    # at once; with rbd, a partial image the killed writer held open goes once its watch times out (30 s)
    wait_until(lambda: state_of(settings, tgtd) == before, 60, "nothing left")
    assert [i["name"] for i in service.list_all_images()["images"]] == (["big"] if operation == "snapshot" else [])


# --- a client never hangs --------------------------------------------------------------------------

@pytest.mark.parametrize("program", ["nameserver", "mainserver"])
def test_a_hung_server_is_exit_code_3_within_the_client_timeout(service, program):
    service.env["BMI_CLIENT_TIMEOUT"] = "2"
    proc = getattr(service, program)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = service.client("list_all_images", timeout=60)
        assert time.monotonic() - started < 15
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    what = "name server" if program == "nameserver" else "main server"
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith("mainclient: the %s at " % what)
    assert done.stderr.endswith(" did not answer within 2 s (BMI_CLIENT_TIMEOUT)\n")


# --- delete_image --------------------------------------------------------------------------------

def test_delete_image_is_refused_while_nodes_use_the_image(service, settings, tgtd, tmp_path):
    make_image_file(tmp_path / "golden.raw", MiB)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    for node in ("node-a", "node-b"):
        assert service.client("provision", "golden", node).returncode == 0
    before = state_of(settings, tgtd)
    done = service.client("delete_image", "golden")
    assert (done.returncode, done.stdout) == (6, "")   # in use
    assert done.stderr == ("mainclient: delete_image failed: image golden is in use: nodes node-a, node-b "
                           "provisioned from it; detach them first\n")
    assert state_of(settings, tgtd) == before
    for node in ("node-a", "node-b"):
        assert service.client("detach_node", node).returncode == 0
    done = service.client("delete_image", "golden")
    assert (done.returncode, done.stdout) == (0, "deleted golden image golden\n")
    assert service.list_all_images()["images"] == []
    done = service.client("delete_image", "golden")
    assert (done.returncode, done.stderr) == (4, "mainclient: delete_image failed: no such image: golden\n")   # not found
    assert [(line["operation"], line["outcome"]) for line in audit_lines(settings) if line["operation"] == "delete_image"] == [
        ("delete_image", "InUse: image golden is in use: nodes node-a, node-b provisioned from it; detach them first"),
        ("delete_image", "ok"), ("delete_image", "NotFound: no such image: golden")]
