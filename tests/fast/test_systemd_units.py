"""The systemd units, as tools/install-service puts them in place: systemd finds nothing to say."""
import os
import subprocess

from config import ROOT
from testkit.daemons import require_command


def test_the_installed_units_verify_clean(tmp_path):
    require_command("systemd-analyze", "systemd")
    done = subprocess.run([os.path.join(ROOT, "tools", "install-service"), "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    units = sorted(str(path) for path in (tmp_path / "etc" / "systemd" / "system").iterdir())
    assert [os.path.basename(unit) for unit in units] == [
        "bmi-dnsmasq.service", "bmi-mainserver.service", "bmi-nameserver.service", "bmi-tgtd.service"]
    for unit in units:
        text = open(unit).read()
        assert "@ROOT@" not in text and (ROOT in text or "tgtd" in unit)
    # it warns of what it cannot parse, and fails on what it cannot run
    verified = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stderr) == (0, "")
    settings = tmp_path / "etc" / "bmi-rpc" / "bmi-rpc.env"
    assert oct(settings.stat().st_mode & 0o777) == "0o600"
    lines = settings.read_text().splitlines()
    assert "BMI_TGT_CONTROL_PORT=0" in lines and "#BMI_BOOT_PORTAL=" in lines
