"""Hostile input, property-based: random and malicious names and argument lists, sent through
mainclient (a process each) and through a Pyro4 proxy to the real main server, on both backends.

Each call is refused with a clear error, no script runs for an invalid name (the audit log, which
has a line for every call of an operation, shows it refused by its check), and nothing changes.
The expected outcome comes from the README's rules, not from bmi/names.py.
"""
import inspect
import json
import os
import re

import Pyro4.errors
import hypothesis
import pytest
from hypothesis import HealthCheck, strategies as st


from bmi import pyrosetup
from bmi.errors import BadInput, NotFound, Refused
from testkit.fixtures import state_of
from testkit.images import make_image_file
from testkit.initiator import node_record
from testkit.service import audit_lines


# --- the README's rules ------------------------------------------------------------------------

IMAGE_FORM = re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NODE_FORM = re.compile("[a-z0-9][a-z0-9.-]{0,62}")
GATEWAY_FORM = re.compile("[a-z0-9][a-z0-9-]{0,31}")
VALID = {"image": lambda v: isinstance(v, str) and IMAGE_FORM.fullmatch(v) is not None,
         "node": lambda v: isinstance(v, str) and NODE_FORM.fullmatch(v) is not None,
         "gateway": lambda v: isinstance(v, str) and GATEWAY_FORM.fullmatch(v) is not None,
         "path": lambda v: isinstance(v, str) and v.startswith("/") and "\0" not in v and len(v) <= 4096,
         "force": lambda v: isinstance(v, bool)}
VALID["snapshot"] = VALID["image"]


# The exposed operations as the README states them; only their signatures are used.
def import_image(image, path): pass
def provision(image, node): pass
def detach_node(node, force=False): pass
def create_snapshot(node, snapshot): pass
def delete_image(image): pass
def remove_gateway(gateway): pass
def list_all_images(*, node=None, image=None): pass
def ping(): pass


SIGNATURES = {f.__name__: inspect.signature(f)
              for f in (import_image, provision, detach_node, create_snapshot, delete_image, list_all_images, ping,
                        remove_gateway)}
OPERATIONS = sorted(SIGNATURES)
UNAUDITED = {"ping"}
EXISTING = {"golden", "node-a"}   # what the world fixture makes; valid calls must not touch it
ABSENT = "/nonexistent.bmi-hostile"   # valid absolute paths below it name no file


def proxy_call_is_valid(operation, args, kwargs):
    try:
        bound = SIGNATURES[operation].bind(*args, **kwargs)
    except TypeError:
        return False
    # a filter (a keyword whose default is None) may be None too: no filter
    return all(VALID[name](value) or value is None and SIGNATURES[operation].parameters[name].default is None
               for name, value in bound.arguments.items())


def read_argv(argv):
    """mainclient's usage rules: -h or --help anywhere asks for help; --json anywhere; --force with
    detach_node; --node NODE and --image IMAGE (or --node=NODE) with list_all_images; any other -x
    is an error; -- ends the options. Returns "help", "valid" or "invalid", and the operation named."""
    words, flags, filters, unknown = [], set(), {}, False
    args = iter(argv)
    for arg in args:
        option, equals, value = arg.partition("=")
        if arg == "--":
            words += list(args)
            break
        if arg in ("-h", "--help", "--json", "--force"):
            flags.add(arg)
        elif option in ("--node", "--image"):
            value = value if equals else next(args, None)
            unknown = unknown or value is None
            filters[option[2:]] = value
        elif arg.startswith("-") and arg != "-":
            unknown = True
        else:
            words.append(arg)
    operation = words[0] if words else None
    if flags & {"-h", "--help"}:
        return "help", operation
    if unknown or operation not in SIGNATURES or ("--force" in flags and operation != "detach_node") \
            or (filters and operation != "list_all_images"):
        return "invalid", operation
    kwargs = dict({"force": True} if "--force" in flags else {}, **filters)
    return "valid" if proxy_call_is_valid(operation, words[1:], kwargs) else "invalid", operation


# --- strategies ------------------------------------------------------------------------------

METACHARACTERS = list(";|&$()`<>*?'\"\\!#~{}[]% \t\n\r\x0b\x0c")
LOOKALIKE_CHARS = ["\u0430", "\u043e", "\u0435", "\uff4e", "\uff41", "\u0301", "\u0307", "\u200b", "\u200d",
                   "\u2028", "\u00a0", "\ufeff", "\u2010", "\u2024", "\u212a", "\u0131", "\u017f"]
HOSTILE_WORDS = [
    "", " ", "\n", "\t", "node-a\n", "\nnode-a", " node-a", "node-a ", "Node-A", "node_a", ".", "..", "../node-a",
    "../../etc/passwd", "a/b", "/", "-x", "--force", "-rf", "--json", "-", "--", "--force=yes", "$(id)", "`id`",
    "golden;rm -rf /", "a|b", "a&&b", "a>b", "*", "?", "'", '"', "golden\\", "node-\u0430", "\uff4e\uff4f\uff44\uff45",
    "node-a\u0301", "node\u200b-a", "\u0261olden", "golden\u200d", "\ufeffgolden", "n" * 63, "n" * 64, "i" * 64,
    "i" * 65, "x" * 5000, "/dev/zero", "/proc/self/environ", ABSENT + "/../etc/passwd",
    ABSENT + "/" + "x" * 4000, ABSENT + "/" + "x" * 4100,   # a valid PATH, the longest; one too long
]
OPTION_LIKE = st.sampled_from(["-x", "--force", "--json", "-", "--", "-rf", "--force=1", "--help", "-h", "--node",
                               "--image=golden", "--node=node-a"])


WELL_FORMED = st.from_regex(r"\A[a-z0-9][a-z0-9.-]{0,20}\Z")   # a valid image and node name, of nothing


def word(nul):
    """One argument: hostile, or well-formed, or a valid absolute PATH of no file. NUL only where
    it can travel (argv cannot carry it)."""
    chars = st.one_of(st.sampled_from(METACHARACTERS + LOOKALIKE_CHARS + list("az09.-_/A")),
                      st.characters(exclude_categories=["Cs"], exclude_characters="" if nul else "\0"),
                      # lone surrogates \udc80-\udcff: argv carries them as raw non-UTF-8 bytes
                      st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))
    if nul:
        chars = st.one_of(chars, st.just("\0"))
    hostile = st.one_of(
        st.sampled_from(HOSTILE_WORDS),
        st.text(chars, max_size=24),
        st.text(chars, min_size=200, max_size=3000),
        st.tuples(WELL_FORMED, st.text(chars, min_size=1, max_size=3), st.booleans())   # one bad character
          .map(lambda t: t[1] + t[0] if t[2] else t[0] + t[1]))
    return st.one_of(hostile, WELL_FORMED, st.text(chars, max_size=24).map(lambda t: ABSENT + "/" + t))


def calls(operations, value):
    """(operation, arguments): mostly as many arguments as it takes, sometimes any number."""
    def arguments(operation):
        signature = SIGNATURES.get(operation, SIGNATURES["ping"])
        count = sum(p.default is p.empty for p in signature.parameters.values())
        return st.tuples(st.just(operation), st.one_of(st.lists(value, min_size=count, max_size=count),
                                                       st.lists(value, max_size=4)))
    return operations.flatmap(arguments)


ARGV = calls(st.one_of(st.sampled_from(OPERATIONS), word(nul=False)),
             st.one_of(word(nul=False), OPTION_LIKE)).map(lambda call: [call[0], *call[1]])
VALUES = st.one_of(word(nul=True), st.integers(), st.none(), st.booleans(),
                   st.floats(allow_nan=False), st.lists(st.text(max_size=8), max_size=3),
                   st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))
PROXY_CALLS = calls(st.sampled_from(OPERATIONS), VALUES)
KWARGS = st.dictionaries(st.sampled_from(["image", "node", "path", "snapshot", "force", "self", "x", ""]),
                         VALUES, max_size=2)

# One world for all examples of a test (function-scoped fixtures, deliberately): every example
# must leave it as it was, which is what each example checks.
SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much]


# --- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture
def world(service, settings, tgtd, tmp_path):
    """A golden image and a provisioned node that hostile calls try to hit; returns their state."""
    assert not os.path.exists(ABSENT)
    make_image_file(tmp_path / "golden.raw", 1024 * 1024)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    assert service.client("provision", "golden", "node-a").returncode == 0
    listing = json.loads(service.client("--json", "list_all_images").stdout)
    return {"state": state_of(settings, tgtd), "listing": listing}


@pytest.fixture
def proxy(service, settings):
    """A Pyro4 proxy to the running main server, found as mainclient finds it."""
    pyrosetup.configure(settings)
    with pyrosetup.locate_ns(settings) as ns:
        uri = pyrosetup.gateways(ns, settings.BMI_OBJECT_NAME)[settings.BMI_GATEWAY]
    with pyrosetup.proxy(uri) as server:
        yield server


def assert_unchanged(world, settings, tgtd, proxy):
    assert state_of(settings, tgtd) == world["state"]
    assert proxy.list_all_images() == world["listing"]


def one_line(text):
    return text.count("\n") == 1 and text.endswith("\n")


# --- through mainclient ----------------------------------------------------------------------

@hypothesis.settings(max_examples=40, deadline=None, database=None, suppress_health_check=SLOW)
@hypothesis.given(argv=ARGV)
@hypothesis.example(argv=["provision", "golden", "node-a;reboot"])
@hypothesis.example(argv=["--", "list_all_images"])
@hypothesis.example(argv=["detach_node", "--", "-rf"])
@hypothesis.example(argv=["provision", "--help", "golden"])
@hypothesis.example(argv=["detach_node", "node-\u0430"])
@hypothesis.example(argv=["detach_node", "node-a\n"])
@hypothesis.example(argv=["create_snapshot", "node-a", "../../golden"])
@hypothesis.example(argv=["import_image", "evil", ABSENT + "/\udcff"])   # a non-UTF-8 byte in a valid path
@hypothesis.example(argv=["import_image", "evil", ABSENT + "/a\nb;" + "x" * 4000])
def test_hostile_argv_is_refused_by_mainclient_and_changes_nothing(service, world, settings, tgtd, proxy, argv):
    if any(a.startswith(("--ns-host", "--ns-port", "--gateway")) for a in argv):
        hypothesis.assume(False)   # they pick the name server or the gateway, they are no names
    reading, operation = read_argv(argv)
    valid = reading == "valid"
    if valid:
        hypothesis.assume(not EXISTING & set(argv))   # a valid call on what exists may succeed
    hypothesis.event(reading)
    seen = len(audit_lines(settings))

    done = service.client(*argv, timeout=60)

    audit = audit_lines(settings)[seen:]
    if reading == "help":
        assert (done.returncode, done.stderr, audit) == (0, "", []) and done.stdout.startswith("usage: ")
    elif not valid:
        # refused by mainclient itself: one line, exit code 2, and the server never called
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert done.stdout == "" and one_line(done.stderr) and done.stderr.startswith("mainclient: ")
        assert audit == []
    elif operation in ("list_all_images", "ping"):
        assert done.returncode == 0 and done.stderr == ""
        assert [line["outcome"] for line in audit] == ([] if operation in UNAUDITED else ["ok"])
    else:
        # well-formed names of nothing that exists: the server says so (NotFound, exit code 4)
        assert done.returncode == NotFound.exit_code, (done.stdout, done.stderr)
        assert done.stdout == "" and one_line(done.stderr)
        assert done.stderr.startswith("mainclient: %s failed: " % operation)
        assert [line["operation"] for line in audit] == [operation]
        assert audit[0]["outcome"].startswith("NotFound: ")
    assert_unchanged(world, settings, tgtd, proxy)


# --- through a Pyro4 proxy -------------------------------------------------------------------

@hypothesis.settings(max_examples=200, deadline=None, database=None, suppress_health_check=SLOW)
@hypothesis.given(call=PROXY_CALLS, kwargs=st.one_of(st.just({}), KWARGS), serializer=st.sampled_from(["serpent", "json"]))
@hypothesis.example(call=("detach_node", ["node-a"]), kwargs={"force": "false"}, serializer="json")
@hypothesis.example(call=("detach_node", ["node-a", 1]), kwargs={}, serializer="serpent")
@hypothesis.example(call=("provision", ["golden", "node-b\0"]), kwargs={}, serializer="serpent")
@hypothesis.example(call=("provision", []), kwargs={"self": None}, serializer="serpent")
@hypothesis.example(call=("import_image", ["evil", ABSENT + "/\udcff"]), kwargs={}, serializer="serpent")
@hypothesis.example(call=("list_all_images", []), kwargs={"image": "\udc80"}, serializer="json")
def test_hostile_proxy_calls_are_refused_before_any_script_runs(service, world, settings, tgtd, proxy,
                                                                call, kwargs, serializer):
    operation, args = call
    valid = proxy_call_is_valid(operation, args, kwargs)
    if valid:
        hypothesis.assume(not any(a in EXISTING for a in args if isinstance(a, str)))
    hypothesis.event("valid" if valid else "invalid")
    seen = len(audit_lines(settings))
    proxy._pyroSerializer = serializer

    try:   # _pyroInvoke: as sent, past the proxy's own checks (a "self" keyword, say)
        result, error = proxy._pyroInvoke(operation, args, kwargs), None
    except Exception as err:   # the assertions below say which ones are right
        result, error = None, err
    finally:
        proxy._pyroSerializer = None

    audit = audit_lines(settings)[seen:]
    if isinstance(error, UnicodeEncodeError):
        # json cannot carry a lone surrogate: the client's serializer refused it, nothing was sent
        assert serializer == "json" and audit == [], (repr(error), audit)
    elif not valid:
        # the service's check says BadInput; an unaudited call (ping) gets Python's own TypeError
        assert type(error) is (TypeError if operation in UNAUDITED else BadInput), repr(error)
        expected = [] if operation in UNAUDITED else [type(error).__name__]
        # the check refused it: the audit log has the call, refused with that very error
        assert [line["outcome"].split(":")[0] for line in audit] == expected
    elif operation in ("list_all_images", "ping"):
        assert error is None and result is not None
    else:
        assert type(error) is NotFound, repr(error)
        assert [line["outcome"].split(":")[0] for line in audit] == ["NotFound"]
    for line in audit:
        assert line["operation"] == operation
        assert len(line["arguments"]) == len(args) and set(line["options"]) == set(kwargs)
    assert_unchanged(world, settings, tgtd, proxy)


# --- what is not exposed, and serializers that build objects -----------------------------------

PRIVATE = ["_storage", "_target", "_records", "_take_away", "_detach", "_undo", "_reconcile", "_pyroDaemon",
           "_pyroHmacKey", "__init__", "__class__", "__reduce__", "__module__"]
UNEXPOSED = ["keep_targets_exported", "settings", "audit_log", "__dict__"]


@pytest.mark.parametrize("name", PRIVATE + UNEXPOSED)
def test_unexposed_members_are_refused_by_the_server(service, world, settings, tgtd, proxy, name):
    seen = len(audit_lines(settings))
    # straight to the server, past the proxy's own check of the exposed names: Pyro4's daemon
    # refuses names starting with "_" (and object dunders) as private, the rest as unexposed
    refusal = "attempt to access %s attribute '%s'" % ("private" if name in PRIVATE else "unexposed", name)
    for args in [(), (node_record(settings, "node-a"), True), (None,)]:   # _take_away(node-a) would detach it
        with pytest.raises(AttributeError) as refused:
            proxy._pyroInvoke(name, args, None)
        assert str(refused.value) == refusal
    # attribute reads and writes: only exposed properties, and MainServer has none
    with pytest.raises(AttributeError):
        proxy._pyroInvoke("__getattr__", (name,), None)
    with pytest.raises(AttributeError):
        proxy._pyroInvoke("__setattr__", (name, None), None)
    if not name.startswith(("__", "_pyro")):   # those are the proxy's own
        with pytest.raises(AttributeError, match="no exposed attribute or method"):
            getattr(proxy, name)
    assert audit_lines(settings)[seen:] == []
    assert proxy.ping() == "pong"
    assert_unchanged(world, settings, tgtd, proxy)


class Planted:
    """Unpickling this makes a directory: the proof that a server loaded a pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_and_marshal_are_refused(service, world, settings, tgtd, proxy, tmp_path):
    seen = len(audit_lines(settings))
    planted = str(tmp_path / "unpickled")
    # pickle from the first message on: the connection handshake itself is refused
    fresh = pyrosetup.proxy(proxy._pyroUri)
    fresh._pyroSerializer = "pickle"
    with fresh, pytest.raises(Pyro4.errors.CommunicationError, match="serializer that is not accepted"):
        fresh.provision("golden", Planted(planted))
    # pickle after a serpent handshake: the call is refused, its payload never loaded
    proxy._pyroBind()
    proxy._pyroSerializer = "pickle"
    try:
        with pytest.raises(Pyro4.errors.SerializeError, match="serializer that is not accepted"):
            proxy.provision("golden", Planted(planted))
    finally:
        proxy._pyroSerializer = None
    marshal = pyrosetup.proxy(proxy._pyroUri)
    marshal._pyroSerializer = "marshal"
    with marshal, pytest.raises(Pyro4.errors.CommunicationError, match="serializer that is not accepted"):
        marshal.list_all_images()
    # serpent's class dictionaries build no class the server does not know
    with pytest.raises(Pyro4.errors.SerializeError, match="unsupported serialized class"):
        proxy.provision("golden", {"__class__": "os.mkdir", "path": planted})
    assert not os.path.exists(planted)
    assert audit_lines(settings)[seen:] == []
    assert_unchanged(world, settings, tgtd, proxy)


# --- file names are data, and name the file they name (scripts/lib.sh, open_image) ---------------

# A qcow2 header qemu-img refuses: the refusal quotes qemu-img, which names the file it opened.
BROKEN_QCOW2 = b"QFI\xfb\x00\x00\x00\x03" + b"\xff" * 1016


@pytest.mark.parametrize("name", ["a|;1e touch pwned\n#", "x|w pwned", "a&b\\1\\&", "$(touch pwned)", "`touch pwned`",
                                  "'\";|&", "-e", "%s%n"])
def test_a_hostile_file_name_is_named_as_given_and_runs_nothing(server, settings, tgtd, tmp_path, name):
    """What reached sed's program before: the reason is kept, the name is as given, sed's e and w
    commands run nothing (pwned is what they would make, in the script's directory or the test's)."""
    from bmi.runner import SCRIPTS
    path = tmp_path / name
    path.write_bytes(BROKEN_QCOW2)
    before = state_of(settings, tgtd)
    with pytest.raises(RuntimeError) as refused:
        server.import_image("x", str(path))
    # the script's lines are joined into one, "; " between them (bmi/runner.py)
    said = "%s is not a disk image qemu-img can read: Could not open '%s': Unsupported cluster size: 2^4294967295" % (
        path, path)
    assert str(refused.value) == "; ".join(line.strip() for line in said.split("\n") if line.strip())
    for where in (tmp_path, os.getcwd(), SCRIPTS, os.path.join(SCRIPTS, "storage"), "/"):
        assert not os.path.exists(os.path.join(where, "pwned")), where
    assert state_of(settings, tgtd) == before


@pytest.mark.parametrize("name", ["disk.raw\n", "disk.raw\n\n", "d\n/disk.raw\n"])
def test_a_file_name_ending_in_a_newline_imports_that_file(server, tmp_path, name):
    """Command substitution cuts trailing newlines: a path is still the file it names, not its neighbour."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    make_image_file(path, 3 * 512)
    make_image_file(str(path).rstrip("\n"), 8 * 512)   # the neighbour without the newlines
    server.import_image("exact", str(path))
    assert server.list_all_images()["images"] == [{"name": "exact", "size_bytes": 3 * 512}]


# --- the server's own files are its own ------------------------------------------------------------

MiB = 1024 * 1024


def refused_import(main, path):
    with pytest.raises(RuntimeError) as refused:
        main.import_image("stolen", str(path))
    return str(refused.value)


def own_file_refusal(path, why):
    return "%s is a file the service keeps for itself (%s): import_image does not copy it" % (path, why)


def test_the_servers_own_files_cannot_be_imported(server_with, settings, tgtd, tmp_path):
    # TLS files and a key that look like disk images, so that only whose they are can refuse them
    own = {}
    for setting in ("BMI_KEY_FILE", "BMI_TLS_CERT", "BMI_TLS_KEY", "BMI_TLS_CA"):
        own[setting] = str(tmp_path / setting.lower())
        make_image_file(own[setting], MiB)
    main = server_with(**own)
    make_image_file(tmp_path / "golden.raw", MiB)
    main.import_image("golden", str(tmp_path / "golden.raw"))
    main.provision("golden", "node-a")
    state = settings.BMI_STATE_DIR
    if settings.BMI_BACKEND == "file":
        disk = os.path.join(state, "disks", "node-a.img")   # a live disk, copied without the node's lock
        record = os.path.join(state, "nodes", "node-a.json")   # holds the node's CHAP secret
    else:   # the disks and records are in Ceph: a disk image in the state directory stands for them
        disk = os.path.join(state, "planted.img")
        make_image_file(disk, MiB)
        record = None
    os.symlink(disk, tmp_path / "elsewhere.img")
    os.symlink(state, tmp_path / "state-link")
    in_state = "in its state directory %s" % os.path.realpath(state)
    cases = [(disk, in_state), (tmp_path / "elsewhere.img", in_state),
             (os.path.join(str(tmp_path / "state-link"), os.path.relpath(disk, state)), in_state),
             (os.path.join(state, "boot", "node-a.ipxe"), in_state),
             (os.path.join(state, "boot", "..", "boot", "node-a.ipxe"), in_state),
             (own["BMI_KEY_FILE"], "its key file, BMI_KEY_FILE"),
             (settings.BMI_AUDIT_LOG, in_state),
             (own["BMI_TLS_CERT"], "its TLS certificate, BMI_TLS_CERT"),
             (own["BMI_TLS_KEY"], "its TLS key, BMI_TLS_KEY"),
             (own["BMI_TLS_CA"], "its TLS CA certificate, BMI_TLS_CA")]
    if record:
        cases.append((record, in_state))
    before = state_of(settings, tgtd)
    for path, why in cases:
        assert refused_import(main, path) == own_file_refusal(path, why), path
    assert state_of(settings, tgtd) == before
    assert [i["name"] for i in main.list_all_images()["images"]] == ["golden"]


def test_an_audit_log_elsewhere_and_a_hard_link_are_refused(server_with, settings, tgtd, tmp_path):
    audit = str(tmp_path / "logs" / "audit.log")
    os.makedirs(os.path.dirname(audit))
    main = server_with(BMI_AUDIT_LOG=audit)
    main.list_all_images()   # a line in it
    with open(audit, "ab") as f:   # make it look like a disk
        f.truncate(MiB)
    assert refused_import(main, audit) == own_file_refusal(audit, "its audit log, BMI_AUDIT_LOG")
    planted = os.path.join(settings.BMI_STATE_DIR, "planted.img")
    make_image_file(planted, MiB)
    os.link(planted, tmp_path / "hard-link.img")   # the same file, by another name outside
    why = "in its state directory %s" % os.path.realpath(settings.BMI_STATE_DIR)
    assert refused_import(main, tmp_path / "hard-link.img") == own_file_refusal(tmp_path / "hard-link.img", why)


def test_the_key_file_is_refused_through_mainclient(service, settings):
    seen = len(audit_lines(settings))
    done = service.client("import_image", "stolen", settings.BMI_KEY_FILE)
    assert (done.returncode, done.stdout) == (Refused.exit_code, "")
    assert done.stderr == "mainclient: import_image failed: %s\n" % own_file_refusal(
        settings.BMI_KEY_FILE, "its key file, BMI_KEY_FILE")
    assert [line["outcome"].split(":")[0] for line in audit_lines(settings)[seen:]] == ["Refused"]
    assert service.list_all_images()["images"] == []
