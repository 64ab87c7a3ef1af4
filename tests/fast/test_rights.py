"""The rules of bmi/rights.py without a server: what each role may call, whose project a new node
or image is, what a roles file may hold, the settings rights need. tests/test_rights.py has them
through the real programs."""
import pytest

import config
from bmi.errors import BadInput, Refused
from bmi.nodes import ImageOwner
from bmi.rights import ADMIN, OPERATOR, VIEWER, Caller, roles_from, subject_of

# every exposed method of MainServer but follow, which only hands an operation on
CALLS = ["import_image", "provision", "detach_node", "create_snapshot", "delete_image", "list_all_images",
         "remove_gateway", "power", "ping", "health", "sync_node", "logged_in", "exported_nodes"]
ALLOWED = {VIEWER: {"list_all_images", "ping", "health"},
           OPERATOR: {"list_all_images", "ping", "health", "import_image", "provision", "detach_node",
                      "create_snapshot", "power"},
           ADMIN: set(CALLS), None: set()}


@pytest.mark.parametrize("role", list(ALLOWED))
@pytest.mark.parametrize("call", CALLS)
def test_each_role_may_call_what_it_may_alone(role, call):
    caller = Caller("CN=someone", role, ["team-a"])
    if call in ALLOWED[role]:
        caller.check(call)
    else:
        with pytest.raises(Refused, match="^CN=someone (is not in the roles file|is an? %s, who may not %s)$"
                                          % (role, call)):
            caller.check(call)


def test_the_project_of_what_a_caller_makes():
    assert Caller("CN=o", OPERATOR, ["team-a"]).project_for(None) == "team-a"
    assert Caller("CN=o", OPERATOR, ["team-a", "team-b"]).project_for("team-b") == "team-b"
    with pytest.raises(BadInput, match="CN=o has projects team-a, team-b: name one with --project"):
        Caller("CN=o", OPERATOR, ["team-a", "team-b"]).project_for(None)
    with pytest.raises(Refused, match="CN=o is no operator of project team-c"):
        Caller("CN=o", OPERATOR, ["team-a"]).project_for("team-c")
    with pytest.raises(BadInput, match="invalid project name"):
        Caller("CN=o", OPERATOR, ["team-a"]).project_for("../team-a")
    assert Caller("CN=a", ADMIN).project_for(None) is None   # the admins' alone
    assert Caller("CN=a", ADMIN).project_for("team-z") == "team-z"


def test_who_sees_and_uses_what():
    operator = Caller("CN=o", OPERATOR, ["team-a"])
    assert (operator.sees("team-a"), operator.sees("team-b"), operator.sees(None)) == (True, False, False)
    assert [operator.uses(owner) for owner in (ImageOwner("team-a"), ImageOwner("team-b"), ImageOwner("team-b", True),
                                               ImageOwner(None, True), None)] == [True, False, True, True, False]
    assert Caller("CN=a", ADMIN).sees("team-b") and Caller("CN=a", ADMIN).uses(None)


def test_a_subject_is_written_as_rfc_4514_last_part_first():
    certificate = {"subject": ((("commonName", "a,b+c"),), (("organizationName", " Team"),),
                               (("domainComponent", "example"), ("userId", "x=y")))}
    assert subject_of(certificate) == "DC=example+UID=x=y,O=\\ Team,CN=a\\,b\\+c"


@pytest.mark.parametrize("entries, message", [
    ({"CN=a": "admin"}, "it must be a list"),
    ([{"subject": "CN=a", "role": "root"}], "entry 1 must have a subject, a role (viewer, operator, admin)"),
    ([{"subject": "", "role": "admin"}], "entry 1 must have a subject"),
    ([{"subject": "CN=a", "role": "admin", "group": "x"}], "entry 1 must have"),
    ([{"subject": "CN=a", "role": "viewer", "projects": "team-a"}], "entry 1: projects must be a list"),
    ([{"subject": "CN=a", "role": "viewer", "projects": ["team a"]}], "invalid project name 'team a'"),
    ([{"subject": "CN=a", "role": "admin"}, {"subject": "CN=a", "role": "viewer"}], "entry 2: subject CN=a is there twice"),
])
def test_a_wrong_roles_file_says_what_is_wrong(entries, message):
    with pytest.raises(ValueError) as wrong:
        roles_from(entries)
    assert str(wrong.value).startswith(message)


def test_roles_from_reads_each_subjects_role_and_projects():
    assert roles_from([{"subject": "CN=a", "role": "admin"},
                       {"subject": "O=x,CN=b", "role": "operator", "projects": ["team-a", "team-b"]}]) == {
        "CN=a": ("admin", ()), "O=x,CN=b": ("operator", ("team-a", "team-b"))}


def test_a_roles_file_needs_tls_and_import_directories():
    tls = {"BMI_TLS_CERT": "/etc/x.crt", "BMI_TLS_CA": "/etc/ca.crt"}
    for settings in ({}, dict(tls), {"BMI_IMPORT_DIRS": "/srv/images"}):
        with pytest.raises(ValueError, match="^BMI_ROLES_FILE needs TLS"):
            config.Settings(BMI_ROLES_FILE="/etc/roles.json", **settings)
    config.Settings(BMI_ROLES_FILE="/etc/roles.json", BMI_IMPORT_DIRS="/srv/images:/srv/more", **tls)
    with pytest.raises(ValueError, match="BMI_IMPORT_DIRS must be absolute directories separated by ':'"):
        config.Settings(BMI_IMPORT_DIRS="/srv/images:images")
