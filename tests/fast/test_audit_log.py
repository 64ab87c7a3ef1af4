"""The audit log: whole JSON lines, into the file logrotate left in place."""
import json
import os
import subprocess

from bmi.audit import AuditLog
from testkit.daemons import require_command


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_a_line_per_call_with_long_values_cut(tmp_path):
    log = AuditLog(str(tmp_path / "audit.log"))
    log.open()
    log.write("provision", ("golden", "n" * 1000), {"force": True}, "ok", 0.25, ("127.0.0.1", 5000))
    log.close()
    [line] = lines(tmp_path / "audit.log")
    assert (line["caller"], line["operation"], line["options"], line["outcome"], line["seconds"]) == (
        "127.0.0.1:5000", "provision", {"force": "True"}, "ok", 0.25)
    assert line["arguments"] == ["golden", "n" * 200 + "..."]


def test_after_a_rename_or_removal_the_log_goes_on_in_a_new_file(tmp_path):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.open()
    log.write("ping", (), {}, "ok", 0.0)
    os.rename(path, path + ".1")      # what logrotate does
    log.write("list_all_images", (), {}, "ok", 0.0)
    os.unlink(path)
    log.write("provision", (), {}, "ok", 0.0)
    log.close()
    assert [line["operation"] for line in lines(path + ".1")] == ["ping"]
    assert [line["operation"] for line in lines(path)] == ["provision"]


def test_logrotate_rotates_it(tmp_path):
    require_command("logrotate", "logrotate")
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.open()
    log.write("ping", (), {}, "ok", 0.0)
    (tmp_path / "rotate.conf").write_text("%s {\n  rotate 2\n  missingok\n  nocompress\n}\n" % path)
    subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "state"), str(tmp_path / "rotate.conf")],
                   check=True, timeout=30)
    log.write("provision", (), {}, "ok", 0.0)
    log.close()
    assert [line["operation"] for line in lines(path + ".1")] == ["ping"]
    assert [line["operation"] for line in lines(path)] == ["provision"]
