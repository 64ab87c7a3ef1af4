"""A node's BMC as the service takes and keeps it (bmi/power.py, bmi/nodes.py): its checks, its
record, and its password kept out of reprs, listings' fields, the audit log and error messages; the
client's BMC options."""
import json

import pytest

import mainclient
from bmi.audit import AuditLog, shorten
from bmi.errors import BadInput
from bmi.nodes import Bmc, NodeRecord
from bmi.power import bmc_from
from bmi.records import FileRecords

SECRET = "s3cret-pw"
GOOD = {"driver": "ipmi", "address": "10.0.0.9:623", "user": "admin", "password": SECRET}


@pytest.mark.parametrize("address", ["10.0.0.9", "bmc-7.example.org", "bmc-7:6230", "[fd00::9]", "[fd00::9]:623"])
def test_a_bmc_is_taken_by_its_address_forms(address):
    assert bmc_from(dict(GOOD, address=address)) == Bmc("ipmi", address, "admin", SECRET)


@pytest.mark.parametrize("changes, message", [
    ({"driver": "smoke"}, "BMC driver 'smoke' must be one of ipmi"),
    ({"driver": "../storage/file"}, "BMC driver '../storage/file' must be one of"),
    ({"address": "10.0.0.9:70000"}, "invalid BMC address '10.0.0.9:70000'"),
    ({"address": "-oProxyCommand=x"}, "invalid BMC address"),
    ({"address": "a b"}, "invalid BMC address"),
    ({"user": ""}, "invalid BMC user ''"),
    ({"user": "-U"}, None),   # an option as a user name is only an argument of ipmitool's -U
    ({"user": "a\nb"}, "invalid BMC user"),
    ({"password": ""}, "a BMC password is 1 to 128 printable characters"),
    ({"password": SECRET + "\n"}, "a BMC password is 1 to 128 printable characters"),
    ({"password": 7}, "are text"),
])
def test_a_bad_bmc_is_refused_in_one_line_without_its_password(changes, message):
    if message is None:
        bmc_from(dict(GOOD, **changes))
        return
    with pytest.raises(BadInput) as refused:
        bmc_from(dict(GOOD, **changes))
    assert message in str(refused.value) and SECRET not in str(refused.value)


@pytest.mark.parametrize("value", [None, [], {"driver": "ipmi"}, dict(GOOD, extra=1)])
def test_a_bmc_is_all_four_parts(value):
    with pytest.raises(BadInput, match="driver, address, user and password, all four"):
        bmc_from(value)


def test_a_record_keeps_its_bmc_and_its_repr_hides_the_password(tmp_path):
    records = FileRecords(str(tmp_path / "nodes"))
    records.load()
    record = records.add(NodeRecord("node-a", "golden", "iqn.x:node-a", "node-a", "chap", bmc=bmc_from(GOOD)))
    again = FileRecords(str(tmp_path / "nodes"))
    again.load()
    assert again.get("node-a").bmc == Bmc("ipmi", "10.0.0.9:623", "admin", SECRET)
    assert SECRET not in repr(record) and record.bmc.public() == {"driver": "ipmi", "address": "10.0.0.9:623",
                                                                  "user": "admin"}


def test_a_record_of_schema_3_has_no_bmc():
    old = {"schema": 3, "node": "node-a", "image": "golden", "iqn": "iqn.x:node-a", "chap_user": "node-a",
           "chap_secret": "chap", "state": "ready", "backing": None, "gateway": None, "macs": [], "paths": []}
    assert NodeRecord.from_json(json.dumps(old), "old").bmc is None


def test_the_audit_log_keeps_a_bmc_without_its_password(tmp_path):
    assert SECRET not in shorten(GOOD) and "'password': '(secret)'" in shorten(GOOD)
    log = AuditLog(str(tmp_path / "audit.log"))
    log.open()
    log.write("provision", ("golden", "node-a", [], GOOD), {"bmc": GOOD}, "ok", 0.1)
    log.close()
    text = (tmp_path / "audit.log").read_text()
    assert SECRET not in text and text.count("(secret)") == 2


def test_the_client_reads_the_password_from_its_file(tmp_path):
    (tmp_path / "pw").write_text(SECRET + "\nignored\n")
    call = mainclient.parse(["provision", "golden", "node-a", "--bmc-driver", "ipmi", "--bmc-address", "10.0.0.9",
                             "--bmc-user", "admin", "--bmc-password-file", str(tmp_path / "pw"), "--reboot"])
    assert call.options == {"reboot": True, "bmc": dict(GOOD, address="10.0.0.9")}
    assert mainclient.parse(["detach_node", "node-a", "--power-off"]).options == {"power_off": True}
    assert mainclient.parse(["power", "node-a", "cycle"]).arguments == ["node-a", "cycle"]


@pytest.mark.parametrize("argv, message", [
    (["power", "node-a", "reset"], "unknown power action 'reset': one of on, off, cycle, status"),
    (["power", "node-a"], "usage: mainclient.py power NODE ACTION"),
    (["provision", "golden", "node-a", "--reboot"], "a node's BMC needs --bmc-driver, --bmc-address, --bmc-user and "
                                                    "--bmc-password-file, for --reboot"),
    (["provision", "golden", "node-a", "--bmc-user", "admin"], "a node's BMC needs --bmc-driver"),
    (["detach_node", "node-a", "--reboot"], "--reboot goes with provision only"),
    (["provision", "golden", "node-a", "--power-off"], "--power-off goes with detach_node only"),
    (["power", "node-a", "on", "--bmc-user", "admin"], "--bmc-user goes with provision only"),
    (["provision", "golden", "node-a", "--bmc-driver", "ipmi", "--bmc-address", "h", "--bmc-user", "u",
      "--bmc-password-file", "/nonexistent/pw"], "cannot read the BMC password file /nonexistent/pw"),
])
def test_power_usage_errors(argv, message):
    with pytest.raises(mainclient.UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        mainclient.parse(argv)
