"""Who may do what (bmi/rights.py; README: Security, Rights), through the real programs over TLS, on
both backends: each caller is the subject of its client certificate, BMI_ROLES_FILE gives it a role
and projects, and import_image reads only below BMI_IMPORT_DIRS."""
import json
import os
import subprocess

import pytest

from testkit.daemons import require_command
from testkit.images import make_image_file
from testkit.service import Service, audit_lines, detach_every_node
from testkit.tls import make_ca, make_cert, with_tls

# certificate: its subject, as openssl's -subj takes it
SUBJECTS = {"bmi": "/CN=bmi",   # the programs' own: the gateway's peer calls are an admin's
            "viewer": "/O=Team A/OU=ops, west/CN=viewer",   # RFC 4514 escapes the comma
            "operator": "/CN=operator", "operator-b": "/CN=operator-b", "admin": "/CN=admin",
            "unknown": "/CN=unknown"}   # of the service's CA, but not in the roles file
ROLES = {"bmi": ("admin", []), "viewer": ("viewer", ["team-a"]), "operator": ("operator", ["team-a"]),
         "operator-b": ("operator", ["team-b"]), "admin": ("admin", [])}
REFUSED = 7   # mainclient's exit code of a refusal (errors.Refused)


class World:
    """The service over TLS with a roles file, and a client for each certificate."""

    def __init__(self, settings, tmp_path):
        require_command("openssl", "openssl")
        self.workdir = str(tmp_path)
        tls = tmp_path / "tls"
        tls.mkdir()
        self.ca = make_ca(tls, "bmi-ca")
        self.certs = {name: make_cert(tls, name, self.ca, subject=subject) for name, subject in SUBJECTS.items()}
        # the admin's subject, from another CA: the CA, not the subject, decides
        self.stranger = make_cert(tls, "stranger", make_ca(tls, "other-ca"), subject="/CN=admin")
        self.imports = tmp_path / "imports"
        self.imports.mkdir()
        self.golden = make_image_file(self.imports / "golden.raw", 1024 * 1024)
        self.roles_file = tmp_path / "roles.json"
        self.write_roles(ROLES)
        self.settings = with_tls(settings, self.certs["bmi"], self.ca[0], BMI_ROLES_FILE=str(self.roles_file),
                                 BMI_IMPORT_DIRS=str(self.imports))
        self.service = Service(self.settings, self.workdir)

    def subject(self, name):
        """The subject of a certificate as the README says to write it: as openssl prints it."""
        said = subprocess.run(["openssl", "x509", "-in", self.certs[name][0], "-noout", "-subject", "-nameopt",
                               "RFC2253"], capture_output=True, text=True, check=True, timeout=30).stdout
        return said.strip().partition("subject=")[2]

    def write_roles(self, roles):
        """The roles file, replaced whole: {certificate: (role, projects)}."""
        partial = str(self.roles_file) + ".partial"
        with open(partial, "w") as f:
            json.dump([{"subject": self.subject(name), "role": role, "projects": projects}
                       for name, (role, projects) in roles.items()], f)
        os.replace(partial, self.roles_file)

    def client(self, name, *args):
        cert = self.stranger if name == "stranger" else self.certs[name]
        return Service(with_tls(self.settings, cert, self.ca[0]), self.workdir).client(*args)

    def ok(self, name, *args):
        done = self.client(name, *args)
        assert done.returncode == 0, done.stderr
        return done

    def listing(self, name):
        return json.loads(self.ok(name, "--json", "list_all_images").stdout)


@pytest.fixture
def world(settings, tmp_path):
    world = World(settings, tmp_path)
    try:
        world.service.start()
        world.ok("admin", "import_image", "base", str(world.imports / "golden.raw"), "--project", "team-a")
        yield world
        detach_every_node(Service(with_tls(world.settings, world.certs["admin"], world.ca[0]), world.workdir))
    finally:
        world.service.stop()


def refused(done, words):
    """Whether done is a refusal: exit code 7, one line saying words, no result."""
    return done.returncode == REFUSED and done.stderr.count("\n") == 1 and words in done.stderr and done.stdout == ""


# --- the role x operation matrix -------------------------------------------------------------------

# In this order, for each caller: what it calls, and the exit code once its rights let it through
# (4: the operation's own answer, not found, past the check of rights)
CALLS = [("import_image", lambda who, world: ["import_image", "img-" + who, str(world.imports / "golden.raw")], 0),
         ("provision", lambda who, world: ["provision", "base", "node-" + who, "--project", "team-a"], 0),
         ("create_snapshot", lambda who, world: ["create_snapshot", "node-" + who, "snap-" + who], 0),
         ("power", lambda who, world: ["power", "node-ghost", "status"], 4),
         ("detach_node", lambda who, world: ["detach_node", "node-" + who], 0),
         ("list_all_images", lambda who, world: ["list_all_images"], 0),
         ("ping", lambda who, world: ["ping"], 0),
         ("status", lambda who, world: ["status"], 0),
         ("delete_image", lambda who, world: ["delete_image", "snap-" + who], 0),
         ("remove_gateway", lambda who, world: ["remove_gateway", "gw-gone"], 4)]
MAY = {"viewer": {"list_all_images", "ping", "status"},
       "operator": {"list_all_images", "ping", "status", "import_image", "provision", "create_snapshot", "power",
                    "detach_node"},
       "admin": {operation for operation, _, _ in CALLS},
       "unknown": set()}
UNAUDITED = {"ping", "status"}   # unless refused (status: its list_all_images is audited)


def test_every_role_may_do_what_it_may_and_nothing_else(world):
    before = len(audit_lines(world.settings))
    outcomes, expected = {}, {}
    for who in MAY:
        for operation, arguments, allowed_code in CALLS:
            done = world.client(who, *arguments(who, world))
            outcomes[who, operation] = done.returncode if done.returncode != REFUSED else (
                "refused" if refused(done, "not in the roles file" if who == "unknown" else "may not " + operation)
                else done.stderr)
            expected[who, operation] = allowed_code if operation in MAY[who] else "refused"
    assert outcomes == expected

    lines = audit_lines(world.settings)[before:]
    for who in MAY:   # every call but a ping and status that went through names its caller and role
        subject = world.subject(who) if who != "unknown" else "CN=unknown"
        role = ROLES[who][0] if who in ROLES else None
        audited = [line for line in lines if line["subject"] == subject]
        assert {line["role"] for line in audited} == {role}
        assert {line["operation"] for line in audited if line["outcome"].startswith("Refused:")} == \
            {op if op != "status" else "list_all_images" for op, _, _ in CALLS if op not in MAY[who]}
        assert {line["operation"] for line in audited if not line["outcome"].startswith("Refused:")} == \
            {op if op != "status" else "list_all_images" for op in MAY[who] if op != "ping"}


# --- projects ---------------------------------------------------------------------------------------

def test_another_projects_nodes_and_images_are_not_there_to_an_operator(world):
    world.ok("operator", "import_image", "golden-a", str(world.imports / "golden.raw"))   # team-a, its one project
    world.ok("operator", "provision", "golden-a", "node-a")
    listing = world.listing("viewer")   # team-a's viewer sees team-a's
    assert [(n["node"], n["project"]) for n in listing["nodes"]] == [("node-a", "team-a")]
    assert [(i["name"], i.get("project")) for i in listing["images"]] == [("base", "team-a"), ("golden-a", "team-a")]

    assert world.listing("operator-b")["images"] == [] and world.listing("operator-b")["nodes"] == []
    # another project's node or image, and one that is not there: the same words
    for theirs, none in ((["detach_node", "node-a"], ["detach_node", "node-none"]),
                         (["create_snapshot", "node-a", "mine"], ["create_snapshot", "node-none", "mine"]),
                         (["power", "node-a", "status"], ["power", "node-none", "status"]),
                         (["provision", "golden-a", "node-b"], ["provision", "none", "node-b"])):
        done, missing = world.client("operator-b", *theirs), world.client("operator-b", *none)
        assert done.returncode == missing.returncode == 4
        assert done.stderr == missing.stderr.replace("node-none", "node-a").replace("none", "golden-a")
    world.ok("admin", "import_image", "shared", str(world.imports / "golden.raw"), "--public")
    done = world.client("operator-b", "provision", "shared", "node-a")   # over team-a's node
    assert (done.returncode, done.stderr) == (5, "mainclient: provision failed: node node-a is taken\n")
    assert refused(world.client("operator-b", "import_image", "x", str(world.imports / "golden.raw"), "--project",
                                "team-a"), "CN=operator-b is no operator of project team-a")
    assert [n["node"] for n in world.listing("admin")["nodes"]] == ["node-a"]   # all as it was
    assert world.listing("operator")["nodes"][0]["image"] == "golden-a"

    # a public image: every project provisions from it; the node is the provisioner's project's
    world.ok("operator-b", "provision", "shared", "node-b")
    listing = world.listing("operator-b")
    assert [(i["name"], i.get("project"), i.get("public")) for i in listing["images"]] == [("shared", None, True)]
    assert [(n["node"], n["project"]) for n in listing["nodes"]] == [("node-b", "team-b")]
    world.ok("operator-b", "create_snapshot", "node-b", "snap-b")   # the node's project's
    assert [(i["name"], i.get("project")) for i in world.listing("operator-b")["images"]] == \
        [("shared", None), ("snap-b", "team-b")]
    assert "snap-b" not in [i["name"] for i in world.listing("operator")["images"]]


# --- the roles file, read again -----------------------------------------------------------------

def test_a_change_of_the_roles_file_holds_from_the_next_call(world):
    world.ok("operator", "list_all_images")
    world.write_roles({name: role for name, role in ROLES.items() if name != "operator"})
    assert refused(world.client("operator", "list_all_images"), "CN=operator is not in the roles file")
    assert refused(world.client("operator", "ping"), "CN=operator is not in the roles file")
    assert refused(world.client("viewer", "provision", "base", "node-v"), "who may not provision")
    world.write_roles(dict(ROLES, viewer=("operator", ["team-a"])))
    world.ok("viewer", "provision", "base", "node-v")
    world.ok("operator", "ping")

    world.roles_file.write_text("[{")   # broken: every call is refused until it is right
    assert refused(world.client("admin", "list_all_images"), "the roles file cannot be read")
    world.write_roles(ROLES)
    world.ok("admin", "detach_node", "node-v")


def test_a_certificate_of_another_ca_is_refused_whatever_its_subject(world):
    before = audit_lines(world.settings)
    for args in (["ping"], ["list_all_images"], ["delete_image", "base"]):
        done = world.client("stranger", *args)
        assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert audit_lines(world.settings) == before   # it never reached an operation
    assert [i["name"] for i in world.listing("admin")["images"]] == ["base"]


# --- where imports come from -----------------------------------------------------------------------

def test_import_image_reads_only_below_bmi_import_dirs(world, tmp_path):
    outside = tmp_path / "outside.raw"
    make_image_file(outside, 1024 * 1024)
    (world.imports / "link.raw").symlink_to(outside)
    (world.imports / "roles.json").symlink_to(world.roles_file)
    for path in (outside, world.imports / "link.raw"):
        assert refused(world.client("admin", "import_image", "out", str(path)), "outside the directories")
    assert refused(world.client("admin", "import_image", "roles", str(world.imports / "roles.json")),
                   "keeps for itself (its roles file")
    assert [i["name"] for i in world.listing("admin")["images"]] == ["base"]
