"""Security of bmi-rpc: who may call the servers (the HMAC key file, the accepted serializers, TLS
with client certificates), each node's own CHAP account on its target, and the audit log.

Backend-independent tests run on the file backend only; the CHAP test runs on both.
"""
import datetime
import json
import os
import pickle
import re
import socket
import stat
import subprocess
import threading
import time

import Pyro4
import Pyro4.errors
import Pyro4.message
import Pyro4.socketutil
import Pyro4.util
import pytest


from bmi import pyrosetup
from testkit.daemons import free_port, require_command, wait_until
from testkit.images import make_image_file
from testkit.initiator import node_record
from testkit.service import Service, audit_lines, detach_every_node, variant
from testkit.tls import Certificates, with_tls


file_only = pytest.mark.parametrize("backend", ["file"], indirect=True)


def mainserver_uri(settings):
    return "PYRO:%s@127.0.0.1:%d" % (settings.BMI_OBJECT_NAME, settings.BMI_SERVER_PORT)


def nameserver_uri(settings):
    return "PYRO:Pyro.NameServer@127.0.0.1:%d" % settings.BMI_NS_PORT


def key_of(settings):
    with open(settings.BMI_KEY_FILE, "rb") as f:
        return f.read().strip()


def raw_call(uri, method, *args, hmac_key=None, serializer=None):
    """Call through a bare Pyro4 proxy, as any program that can reach the port could."""
    with Pyro4.Proxy(uri) as proxy:
        proxy._pyroHmacKey = hmac_key
        if serializer:
            proxy._pyroSerializer = serializer
        return getattr(proxy, method)(*args)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# --- the HMAC key file ---------------------------------------------------------------------------

@file_only
def test_the_servers_create_a_private_random_key_file(service, settings):
    assert mode_of(settings.BMI_KEY_FILE) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}", key_of(settings))   # 32 random bytes, hex
    assert [n for n in os.listdir(os.path.dirname(settings.BMI_KEY_FILE)) if "partial" in n] == []


@file_only
def test_servers_starting_together_agree_on_one_new_key(settings, tmp_path):
    for attempt in range(6):   # the race is short: try it a few times, each with no key file yet
        workdir = tmp_path / ("start%d" % attempt)
        workdir.mkdir()
        fresh = variant(settings, BMI_KEY_FILE=str(workdir / "keys" / "hmac.key"),
                        BMI_NS_PORT=free_port(), BMI_SERVER_PORT=free_port())
        service = Service(fresh, str(workdir))
        service.start_nameserver()
        service.start_mainserver()   # the same instant: both find no key file and make one
        try:
            # the client reads the file: it gets through only if both servers took the key in it
            service.wait_ready()
        finally:
            service.stop()
        assert os.listdir(workdir / "keys") == ["hmac.key"]   # no candidate left behind
        assert mode_of(fresh.BMI_KEY_FILE) == 0o600


@file_only
def test_an_empty_key_file_stops_the_servers(settings, tmp_path):
    # An empty key is no key to Pyro4: it would sign nothing and check nothing, so anyone could call.
    open(settings.BMI_KEY_FILE, "w").close()
    os.chmod(settings.BMI_KEY_FILE, 0o600)
    service = Service(settings, str(tmp_path))
    service.start_nameserver()
    service.start_mainserver()
    try:
        deadline = time.monotonic() + 20
        while None in (service.nameserver.poll(), service.mainserver.poll()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if service.mainserver.poll() is None:   # still serving: show the hole
            pytest.fail("with an empty key file the main server serves a caller that has no key: %r"
                        % raw_call(mainserver_uri(settings), "list_all_images"))
    finally:
        service.stop()
    assert service.nameserver.returncode not in (None, 0) and service.mainserver.returncode not in (None, 0)
    assert settings.BMI_KEY_FILE in service.log("mainserver")


@file_only
@pytest.mark.parametrize("key", ["wrong", "missing", "empty"])
def test_a_client_without_the_key_gets_authentication_failed(service, settings, tmp_path, key):
    other_key = tmp_path / "other.key"
    if key != "missing":
        other_key.write_text("00112233445566778899aabbccddeeff\n" if key == "wrong" else "")
        other_key.chmod(0o600)
    before = audit_lines(settings)
    done = Service(variant(settings, BMI_KEY_FILE=str(other_key)), str(tmp_path)).client("list_all_images")
    assert done.returncode == 3
    assert done.stderr.startswith("mainclient: authentication failed")
    assert done.stderr.count("\n") == 1 and done.stdout == ""   # one line, no traceback
    assert audit_lines(settings) == before


@file_only
@pytest.mark.parametrize("hmac_key, refusal", [(None, "hmac key config not symmetric"),
                                               (b"0123456789abcdef" * 4, "message hmac mismatch")],
                         ids=["no key", "wrong key"])
def test_a_bare_proxy_without_the_key_is_refused(service, settings, hmac_key, refusal):
    before = audit_lines(settings)
    for uri, method in ((mainserver_uri(settings), "list_all_images"), (nameserver_uri(settings), "list")):
        with pytest.raises(Pyro4.errors.CommunicationError, match=refusal):
            raw_call(uri, method, hmac_key=hmac_key)
        raw_call(uri, method, hmac_key=key_of(settings))   # the same call with the key goes through
    assert audit_lines(settings)[:len(before)] == before
    assert len(audit_lines(settings)) == len(before) + 1   # only the call with the key reached MainServer


# --- serializers ---------------------------------------------------------------------------------

@file_only
@pytest.mark.parametrize("serializer", ["pickle", "marshal"])   # dill is not even installed
def test_serializers_that_build_arbitrary_objects_are_refused(service, settings, serializer):
    for uri, method in ((mainserver_uri(settings), "list_all_images"), (nameserver_uri(settings), "list")):
        with pytest.raises(Pyro4.errors.CommunicationError, match="serializer that is not accepted"):
            raw_call(uri, method, hmac_key=key_of(settings), serializer=serializer)
        raw_call(uri, method, hmac_key=key_of(settings), serializer="json")   # an accepted one


class _OpensOnUnpickle:
    """Unpickling it creates a file: proof that a server unpickled what a caller sent."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@file_only
def test_a_pickled_handshake_is_refused_before_it_is_unpickled(service, settings, tmp_path):
    marker = tmp_path / "unpickled"
    key = key_of(settings)
    for port in (settings.BMI_SERVER_PORT, settings.BMI_NS_PORT):
        connect = Pyro4.message.Message(Pyro4.message.MSG_CONNECT, pickle.dumps(_OpensOnUnpickle(str(marker))),
                                        Pyro4.util.PickleSerializer.serializer_id, 0, 1, hmac_key=key)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(connect.to_bytes())
            reply = Pyro4.message.Message.recv(Pyro4.socketutil.SocketConnection(sock), hmac_key=key)
        assert reply.type == Pyro4.message.MSG_CONNECTFAIL
    assert not marker.exists()


# --- TLS with client certificates ----------------------------------------------------------------

@pytest.fixture
def certificates(tmp_path):
    require_command("openssl", "openssl")
    return Certificates(tmp_path / "tls")



@pytest.fixture
def tls_service(settings, certificates, tmp_path):
    processes = Service(with_tls(settings, certificates.cert, certificates.ca[0]), str(tmp_path))
    try:
        processes.start()
        yield processes
        detach_every_node(processes)
    finally:
        processes.stop()


@file_only
def test_the_service_works_over_tls(tls_service, settings, tmp_path):
    make_image_file(tmp_path / "golden.raw", 1024 * 1024)
    for args in (["ping"], ["import_image", "golden", str(tmp_path / "golden.raw")], ["provision", "golden", "node-a"]):
        done = tls_service.client(*args)
        assert done.returncode == 0, done.stderr
    listed = json.loads(tls_service.client("--json", "list_all_images").stdout)
    assert [n["node"] for n in listed["nodes"]] == ["node-a"]


@file_only
def test_tls_refuses_clients_without_a_certificate_of_the_ca(tls_service, settings, certificates, tmp_path):
    (tmp_path / "other.key").write_text("00112233445566778899aabbccddeeff\n")
    (tmp_path / "other.key").chmod(0o600)
    clients = {   # each has the right HMAC key unless said otherwise
        "no TLS": variant(settings),
        "a certificate of another CA": with_tls(settings, certificates.other_cert, certificates.ca[0]),
        "not trusting the service's CA": with_tls(settings, certificates.cert, certificates.other_ca[0]),
        "a good certificate but the wrong key": with_tls(settings, certificates.cert, certificates.ca[0],
                                                         BMI_KEY_FILE=str(tmp_path / "other.key")),
    }
    before = audit_lines(settings)
    codes = {name: Service(client, str(tmp_path)).client("list_all_images").returncode
             for name, client in clients.items()}
    assert codes == {name: 3 for name in clients}
    assert audit_lines(settings) == before


@file_only
def test_a_tls_client_trusts_only_bmi_tls_ca(settings, certificates, tmp_path):
    # An impostor on the servers' address, with a certificate from a CA the system trusts (a public
    # CA, say; SSL_CERT_FILE stands for the system's store here), must not get the client's calls.
    # It has the HMAC key here, so that only the client's check of its certificate stands in its way.
    impostor = Service(with_tls(settings, certificates.other_cert, certificates.both_cas), str(tmp_path))
    impostor.start()
    try:
        client = Service(with_tls(settings, certificates.cert, certificates.ca[0]), str(tmp_path))
        client.env["SSL_CERT_FILE"] = certificates.other_ca[0]
        done = client.client("list_all_images")
    finally:
        impostor.stop()
    assert done.returncode == 3, "the client took the impostor's certificate: " + done.stdout


def answers_within(service, seconds):
    try:
        return service.client("ping", timeout=seconds).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@file_only
@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_an_idle_connection_does_not_hold_up_other_clients(settings, tmp_path, request, use_tls):
    if use_tls:
        certificates = request.getfixturevalue("certificates")
        settings = with_tls(settings, certificates.cert, certificates.ca[0])
    service = Service(settings, str(tmp_path))
    service.start()
    try:
        for server, port in (("name server", settings.BMI_NS_PORT), ("main server", settings.BMI_SERVER_PORT)):
            with socket.create_connection(("127.0.0.1", port)):   # connects, then says nothing
                assert answers_within(service, 20), "one idle connection holds up the %s" % server
    finally:
        service.stop()


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


@file_only
def test_connections_that_do_not_say_who_they_are_give_way_within_the_handshake_time(settings, tmp_path):
    """Twice the thread pool's idle connections: the ones that took a worker are closed after
    HANDSHAKE_SECONDS, the others at once, and then an authenticated client is served."""
    settings = variant(settings, BMI_THREADPOOL_SIZE=8)
    service = Service(settings, str(tmp_path))
    service.start()
    try:
        for server, port in (("name server", settings.BMI_NS_PORT), ("main server", settings.BMI_SERVER_PORT)):
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
            try:
                started = time.monotonic()
                # refused while they hold every worker, then served
                wait_until(lambda: answers_within(service, 10), pyrosetup.HANDSHAKE_SECONDS + 15,
                           "the %s, after 16 idle connections" % server)
                for sock in idle:   # each closed by the server (after a refusal, maybe): reads end
                    sock.settimeout(pyrosetup.HANDSHAKE_SECONDS + 5)
                    while sock.recv(65536):
                        pass
                assert time.monotonic() - started < pyrosetup.HANDSHAKE_SECONDS + 15
            finally:
                for sock in idle:
                    sock.close()
    finally:
        service.stop()


@file_only
def test_a_huge_message_without_the_key_is_refused_from_its_header(service, settings):
    """A 100 MiB message is refused by its declared size before its body is read: the main server
    does not grow by it."""
    before = rss_mb(service.mainserver.pid)
    message = Pyro4.message.Message(Pyro4.message.MSG_CONNECT, b"\0" * (100 << 20),
                                    Pyro4.util.get_serializer("serpent").serializer_id, 0, 0)
    with socket.create_connection(("127.0.0.1", settings.BMI_SERVER_PORT)) as sock:
        sock.settimeout(30)
        with pytest.raises(OSError):   # reset or broken pipe once the server has read the header
            sock.sendall(message.to_bytes())
            sock.recv(1)
            sock.sendall(b"\0" * 65536)
    assert rss_mb(service.mainserver.pid) < before + 20
    assert answers_within(service, 20)


class Echo:
    @Pyro4.expose
    def answer(self, size):
        return "x" * size

    @Pyro4.expose
    def length(self, text):
        return len(text)


@file_only
def test_a_server_answers_more_than_it_reads(settings):
    """What a caller sends is bounded by SERVER_MESSAGE_BYTES; what a server answers is not (a
    listing of 10,000 nodes is several MiB)."""
    pyrosetup.configure(settings, create_key=True)
    daemon = pyrosetup.daemon(settings)
    uri = daemon.register(Echo())
    loop = threading.Thread(target=daemon.requestLoop, daemon=True)
    loop.start()
    try:
        with pyrosetup.proxy(uri) as server:
            assert len(server.answer(8 << 20)) == 8 << 20
            assert server.length("x" * 1000) == 1000
        with pyrosetup.proxy(uri) as server:
            with pytest.raises(Pyro4.errors.ConnectionClosedError):
                server.length("x" * (pyrosetup.SERVER_MESSAGE_BYTES + 1))
    finally:
        daemon.shutdown()
        loop.join(30)
        daemon.close()


# --- CHAP, a user and secret for each node -------------------------------------------------------

def test_each_node_has_its_own_chap_account(service, settings, tgtd, tmp_path):
    require_command("iscsi-inq", "libiscsi-bin")
    make_image_file(tmp_path / "golden.raw", 1024 * 1024)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    said = [service.client("provision", "golden", node) for node in ("node-a", "node-b")]
    assert [done.returncode for done in said] == [0, 0]
    a, b = node_record(settings, "node-a"), node_record(settings, "node-b")
    assert a["chap_user"] != b["chap_user"] and a["chap_secret"] != b["chap_secret"]
    assert min(len(a["chap_secret"]), len(b["chap_secret"])) >= 12
    for record in (a, b):
        boot_script = os.path.join(settings.BMI_STATE_DIR, "boot", record["node"] + ".ipxe")
        assert mode_of(boot_script) == 0o600   # it holds the secret; so does the record:
        if settings.BMI_BACKEND == "file":    # a file for root alone (with rbd, RADOS for its Ceph user alone)
            assert mode_of(os.path.join(settings.BMI_STATE_DIR, "nodes", record["node"] + ".json")) == 0o600

    def inquiry_works(target, login):
        url = "iscsi://%s%s/%s/1" % ("%s%%%s@" % (login["chap_user"], login["chap_secret"]) if login else "",
                                     tgtd.portal, target["iqn"])
        return subprocess.run(["iscsi-inq", url], capture_output=True, timeout=60).returncode == 0

    assert {"a as a": inquiry_works(a, a), "b as b": inquiry_works(b, b),
            "a without login": inquiry_works(a, None), "b as a": inquiry_works(b, a)} == \
        {"a as a": True, "b as b": True, "a without login": False, "b as a": False}

    with open(settings.BMI_AUDIT_LOG) as f:
        audit = f.read()
    listed = service.client("list_all_images").stdout + service.client("--json", "list_all_images").stdout
    where = {"provision output": "".join(done.stdout + done.stderr for done in said), "list_all_images": listed,
             "audit log": audit, "main server log": service.log("mainserver"),
             "name server log": service.log("nameserver")}
    for secret in (a["chap_secret"], b["chap_secret"]):
        assert [name for name, text in where.items() if secret in text] == []


# --- the audit log -------------------------------------------------------------------------------

@file_only
def test_the_audit_log_has_a_line_for_every_call(service, settings, tmp_path):
    started = time.time() - 1   # the log's times are whole seconds
    before = len(audit_lines(settings))
    golden = str(tmp_path / "golden.raw")
    make_image_file(golden, 1024 * 1024)
    for args, code in ((["import_image", "golden", golden], 0), (["provision", "golden", "node-a"], 0),
                       (["provision", "golden", "node-a"], 5), (["detach_node", "node-a"], 0)):
        done = service.client(*args)
        assert done.returncode == code, done.stderr
        if done.returncode == 0 and args[0] == "provision":
            secret = node_record(settings, "node-a")["chap_secret"]
    # mainclient checks names itself; a bare proxy reaches the server's own check
    with pytest.raises(ValueError):
        raw_call(mainserver_uri(settings), "provision", "golden", "Node;rm -rf /", hmac_key=key_of(settings))

    lines = audit_lines(settings)[before:]
    assert [(line["operation"], line["arguments"], line["options"], line["outcome"]) for line in lines] == [
        ("import_image", ["golden", golden], {}, "ok"),
        ("provision", ["golden", "node-a"], {}, "ok"),
        ("provision", ["golden", "node-a"], {}, "AlreadyExists: node node-a is already provisioned (from image golden)"),
        ("detach_node", ["node-a"], {}, "ok"),
        ("provision", ["golden", "Node;rm -rf /"], {},
         "BadInput: invalid node name 'Node;rm -rf /': it must match ^[a-z0-9][a-z0-9.-]{0,62}$"),
    ]
    for line in lines:
        host, port = line["caller"].split(":")
        assert host == "127.0.0.1" and int(port) != settings.BMI_SERVER_PORT   # the caller's end
        assert started <= datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp() <= time.time()
    with open(settings.BMI_AUDIT_LOG) as f:
        text = f.read()
    assert secret not in text and key_of(settings).decode() not in text


@file_only
def test_a_huge_argument_makes_a_short_audit_line(service, settings):
    with pytest.raises(ValueError):
        raw_call(mainserver_uri(settings), "provision", "golden", "n" * 100000, hmac_key=key_of(settings))
    line = audit_lines(settings)[-1]
    assert line["operation"] == "provision"
    assert len(json.dumps(line)) < 2000, "the outcome repeats the whole argument: %d characters" % len(json.dumps(line))
