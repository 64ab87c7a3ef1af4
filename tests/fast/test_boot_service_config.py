"""The boot service's files (bmi/bootservice.py) without dnsmasq or root: its configuration in both
modes, MAC addresses, and what publish and withdraw leave in BMI_BOOT_DIR (tests/test_boot_service.py
has dnsmasq serve them)."""
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
import types

import pytest

import config
from bmi.bootservice import LOADERS, SCRIPT, BootService, config_text, mac_directory
from bmi.names import check_mac

ME = pwd.getpwuid(os.getuid()).pw_name
MAC_A, MAC_B, MAC_C = "52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58"


def settings(mode="full", dhcp_range="198.18.0.100,198.18.0.199", top="/var/lib/bmi-boot"):
    return types.SimpleNamespace(BMI_DHCP_MODE=mode, BMI_DHCP_INTERFACE="eth1", BMI_DHCP_RANGE=dhcp_range,
                                 BMI_BOOT_DIR=top)


@pytest.mark.parametrize("text, mac", [
    ("52:54:00:12:34:56", "52:54:00:12:34:56"), ("52-54-00-AB-cd-EF", "52:54:00:ab:cd:ef"),
    (" 52:54:00:12:34:56\n", "52:54:00:12:34:56")])
def test_a_mac_address_as_dnsmasq_takes_it(text, mac):
    assert check_mac(text) == mac
    assert mac_directory(text) == mac.replace(":", "-")


@pytest.mark.parametrize("text", ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54-00:12:34:56",
                                  "52.54.00.12.34.56", "5254.0012.3456", "52:54:00:12:34:5g", "52:54:00:12:34:56,ignore",
                                  "../52-54-00-12-34-56", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", None, 525400123456])
def test_what_is_not_one_interfaces_mac_address(text):
    with pytest.raises(ValueError):
        check_mac(text)


def lines(text):
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_full_dhcp_configuration():
    conf = lines(config_text(settings("full", "198.18.0.100,198.18.0.199,255.255.254.0")))
    for line in ("port=0", "interface=eth1", "bind-dynamic", "user=dnsmasq", "log-facility=-",
                 "dhcp-range=198.18.0.100,198.18.0.199,255.255.254.0,1h",
                 "dhcp-hostsdir=/var/lib/bmi-boot/hosts", "dhcp-ignore=tag:!known",
                 "dhcp-match=set:bios,option:client-arch,0", "dhcp-match=set:efi64,option:client-arch,7",
                 "dhcp-userclass=set:ipxe,iPXE", "dhcp-boot=tag:ipxe,boot.ipxe",
                 "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe", "dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi",
                 "dhcp-option=option:router", "dhcp-option=option:dns-server",
                 "enable-ra", "dhcp-range=::,constructor:eth1,ra-only", "ra-param=eth1,0,0",
                 "enable-tftp", "tftp-root=/var/lib/bmi-boot/tftp", "tftp-unique-root=mac", "tftp-secure",
                 "pid-file=/var/lib/bmi-boot/dnsmasq.pid", "dhcp-leasefile=/var/lib/bmi-boot/dnsmasq.leases"):
        assert line in conf
    assert not [line for line in conf if line.startswith("pxe-service")]
    assert "dhcp-range=198.18.0.100,198.18.0.199,255.255.255.0,1h" in config_text(settings("full"))


def test_proxy_dhcp_configuration_hands_out_no_address():
    conf = lines(config_text(settings("proxy", "198.18.4.17,255.255.252.0")))
    assert "dhcp-range=198.18.4.0,proxy,255.255.252.0" in conf
    assert [line for line in conf if line.startswith("dhcp-range")] == ["dhcp-range=198.18.4.0,proxy,255.255.252.0"]
    assert 'pxe-service=tag:!ipxe,x86PC,"bmi-rpc",undionly.kpxe' in conf
    assert 'pxe-service=tag:!ipxe,x86-64_EFI,"bmi-rpc",snponly.efi' in conf
    assert "dhcp-boot=tag:ipxe,boot.ipxe" in conf and "dhcp-ignore=tag:!known" in conf
    assert not [line for line in conf if line.startswith("dhcp-option")]
    assert not [line for line in conf if line.startswith(("enable-ra", "ra-param"))]   # the site's routers' job
    assert "log-facility=-" in conf
    assert "dhcp-range=198.18.4.0,proxy,255.255.255.0" in config_text(settings("proxy", "198.18.4.0"))


def test_no_configuration_when_the_service_is_off():
    with pytest.raises(ValueError, match="BMI_DHCP_MODE is off"):
        config_text(settings("off"))


def test_the_configuration_from_the_settings(monkeypatch, tmp_path):
    for name in config.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    real = config.Settings(BMI_DHCP_MODE="full", BMI_DHCP_INTERFACE="eno2", BMI_DHCP_RANGE="10.9.0.10,10.9.0.20",
                           BMI_BOOT_DIR=str(tmp_path))
    assert config_text(real) == config_text(settings("full", "10.9.0.10,10.9.0.20", str(tmp_path))).replace(
        "eth1", "eno2")


@pytest.fixture
def ipxe_dir(tmp_path):
    directory = tmp_path / "ipxe"
    directory.mkdir()
    for name in LOADERS:
        (directory / name).write_bytes(b"iPXE " + name.encode())
    return str(directory)


@pytest.fixture
def service(tmp_path, ipxe_dir):
    return BootService(settings(top=str(tmp_path / "boot")), user=ME, firewall=False).open(ipxe_dir)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_open_makes_the_tree_with_ipxes_loaders(service, tmp_path, ipxe_dir):
    top = str(tmp_path / "boot")
    assert sorted(os.listdir(top)) == ["hosts", "tftp"]
    assert [mode(os.path.join(top, d)) for d in ("", "hosts", "tftp")] == [0o755] * 3
    assert sorted(os.listdir(service.tftp)) == sorted(LOADERS)
    for name in LOADERS:
        path = os.path.join(service.tftp, name)
        assert open(path, "rb").read() == b"iPXE " + name.encode() and mode(path) == 0o444
        assert os.stat(path).st_uid == os.getuid()
    # again: what a crash left half written goes, the loaders are written anew
    open(os.path.join(service.hosts, ".52-54-00-12-34-56.x.partial"), "w").close()
    open(os.path.join(service.tftp, ".snponly.efi.x.partial"), "w").close()
    service.open(ipxe_dir)
    assert os.listdir(service.hosts) == [] and sorted(os.listdir(service.tftp)) == sorted(LOADERS)


def test_open_needs_ipxe(tmp_path, ipxe_dir):
    os.unlink(os.path.join(ipxe_dir, "snponly.efi"))
    with pytest.raises(FileNotFoundError, match="snponly.efi: missing"):
        BootService(settings(top=str(tmp_path / "boot")), user=ME, firewall=False).open(ipxe_dir)


def test_publish_writes_a_host_line_and_a_tftp_root_of_each_mac(service):
    service.publish("node-a", [MAC_B, "52-54-00-12-34-56"], "#!ipxe\nsanboot x\n")
    assert service.published() == {MAC_A: "node-a", MAC_B: "node-a"}
    assert sorted(os.listdir(service.hosts)) == ["52-54-00-12-34-56", "52-54-00-12-34-57"]
    assert open(os.path.join(service.hosts, "52-54-00-12-34-56")).read() == "# node node-a\n%s\n" % MAC_A
    for mac in (MAC_A, MAC_B):
        root = os.path.join(service.tftp, mac_directory(mac))
        assert mode(root) == 0o711
        assert sorted(os.listdir(root)) == sorted(LOADERS + (SCRIPT,))
        assert open(os.path.join(root, SCRIPT)).read() == "#!ipxe\nsanboot x\n"
        assert mode(os.path.join(root, SCRIPT)) == 0o400
        for name in LOADERS:
            assert os.readlink(os.path.join(root, name)) == "../" + name
            assert open(os.path.join(root, name), "rb").read() == b"iPXE " + name.encode()


def test_publish_again_changes_the_script_and_withdraws_the_macs_left_out(service):
    service.publish("node-a", [MAC_A, MAC_B], "one")
    service.publish("node-a", [MAC_B, MAC_C], "two")
    assert service.published() == {MAC_B: "node-a", MAC_C: "node-a"}
    assert not os.path.exists(os.path.join(service.tftp, mac_directory(MAC_A)))
    assert not os.path.exists(os.path.join(service.hosts, mac_directory(MAC_A)))
    assert open(os.path.join(service.tftp, mac_directory(MAC_B), SCRIPT)).read() == "two"


def test_a_mac_of_another_node_is_refused_and_nothing_changes(service):
    service.publish("node-a", [MAC_A], "a")
    before = sorted(os.walk(service.top))
    with pytest.raises(ValueError, match="52:54:00:12:34:56 \\(node node-a\\)"):
        service.publish("node-b", [MAC_C, MAC_A], "b")
    assert sorted(os.walk(service.top)) == before
    assert service.published() == {MAC_A: "node-a"}


@pytest.mark.parametrize("node", ["", "a b", "a\nb", "#x", "a,b", None])
def test_a_node_name_a_host_file_cannot_hold_is_refused(service, node):
    with pytest.raises(ValueError):
        service.publish(node, [MAC_A], "x")
    assert service.published() == {}


def test_withdraw_removes_the_nodes_macs_only(service):
    service.publish("node-a", [MAC_A, MAC_B], "a")
    service.publish("node-b", [MAC_C], "b")
    assert service.withdraw("node-a") == [MAC_A, MAC_B]
    assert service.withdraw("node-a") == [] and service.withdraw("node-z") == []
    assert service.published() == {MAC_C: "node-b"}
    assert os.listdir(service.hosts) == [mac_directory(MAC_C)]
    assert sorted(os.listdir(service.tftp)) == sorted(LOADERS + (mac_directory(MAC_C),))


def test_withdraw_sends_dnsmasq_a_sighup_and_publish_none(service, tmp_path):
    """dnsmasq reads new files of hosts/ by itself, but forgets a record only when SIGHUP makes it
    read them all again. A pid file naming a process that is not dnsmasq is not believed."""
    fake = str(tmp_path / "dnsmasq")
    shutil.copy(shutil.which("sleep"), fake)   # its comm is "dnsmasq"
    proc = subprocess.Popen([fake, "60"])
    try:
        with open(service.pid_file, "w") as f:
            f.write("%d\n" % proc.pid)
        deadline = time.monotonic() + 10   # until it has exec'd
        while service.dnsmasq_pid() != proc.pid and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.dnsmasq_pid() == proc.pid
        service.publish("node-a", [MAC_A], "a")
        service.publish("node-a", [MAC_A], "changed")
        assert proc.poll() is None
        service.withdraw("node-a")
        assert proc.wait(10) == -signal.SIGHUP
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(service.pid_file, "w") as f:
        f.write("%d\n" % os.getpid())
    assert service.dnsmasq_pid() is None
    service.publish("node-a", [MAC_A], "a")
    service.withdraw("node-a")   # signals nobody


def test_the_nftables_ruleset_lets_tftp_in_from_published_macs_only(service):
    text = service.ruleset([MAC_A, MAC_B])
    assert "type ether_addr; elements = { %s, %s }" % (MAC_A, MAC_B) in text
    assert 'iifname "eth1" udp dport 69 ether saddr != @macs drop' in text
    assert text.startswith("table inet bmi_boot\ndelete table inet bmi_boot\n")
    assert "elements" not in service.ruleset([])
