"""The boot service (bmi/bootservice.py) with a real dnsmasq, on a network of namespaces
(testkit/bootnet.py): what it answers by DHCP and TFTP to a node's MAC and to others, in full and in
proxy mode; and two virtual nodes, BIOS and UEFI, that boot through it to a disk on a loopback tgtd.
Root only (namespaces, nftables)."""
import ipaddress
import os
import time

import pytest

from bmi.bootservice import BIOS_LOADER, EFI_LOADER, IPXE_DIR, SCRIPT, mac_directory
from testkit.bootdisk import write_boot_image
from testkit.bootnet import BootNetwork, probe_from, tftp_get, write_efi_boot_image

NODE_MAC = "52:54:00:b0:00:01"
OTHER_MAC = "52:54:00:b0:00:02"     # published for another node
STRANGER_MAC = "52:54:00:b0:00:03"  # published for none
SCRIPT_TEXT = "#!ipxe\necho node-a's script: CHAP secret here\n"


def loader(name):
    with open(os.path.join(IPXE_DIR, name), "rb") as f:
        return f.read()


@pytest.fixture
def full(tmp_path):
    with BootNetwork(tmp_path, mode="full") as net:
        service = net.boot_service()
        service.publish("node-a", [NODE_MAC], SCRIPT_TEXT)
        net.start_dnsmasq(service)
        net.service = service
        net.prober = net.host("probe")
        yield net


def offers(net, mac, seconds=5, **kwargs):
    """The DHCPOFFERs to a DHCPDISCOVER for mac (5 s: dnsmasq pings an address before it first
    offers it), each parsed (testkit/bootnet.py parse_dhcp)."""
    return [reply for reply in probe_from(net.prober, mac, seconds=seconds, count=1, **kwargs) if reply["type"] == 2]


def test_full_dhcp_gives_a_published_mac_an_address_and_the_boot_file_of_its_firmware(full):
    subnet = full.subnet + "."
    for arch, ipxe, boot_file in ((0, False, BIOS_LOADER), (7, False, EFI_LOADER), (9, False, EFI_LOADER),
                                  (0, True, SCRIPT), (7, True, SCRIPT)):
        replies = offers(full, NODE_MAC, arch=arch, ipxe=ipxe)
        assert len(replies) == 1, (arch, ipxe, replies)
        reply = replies[0]
        assert reply["chaddr"] == NODE_MAC and reply["server"] == full.gateway.address
        assert reply["yiaddr"].startswith(subnet) and 100 <= int(reply["yiaddr"].rsplit(".", 1)[1]) <= 199
        assert reply["boot_file"] == boot_file, (arch, ipxe, reply)
        assert reply["siaddr"] == full.gateway.address   # TFTP from dnsmasq itself
        assert 3 not in reply["options"] and 6 not in reply["options"]   # no router, no DNS


def test_a_mac_of_no_node_gets_no_reply(full):
    assert offers(full, STRANGER_MAC, arch=0, seconds=3) == []
    assert offers(full, STRANGER_MAC, arch=7, ipxe=True, seconds=3) == []
    assert "ignored" in full.dnsmasq_log()


def test_withdraw_and_publish_again_without_restarting_dnsmasq(full):
    pid = full.dnsmasq.pid
    assert full.service.withdraw("node-a") == [NODE_MAC]
    assert full.service.published() == {}
    assert offers(full, NODE_MAC, arch=0, seconds=3) == []
    assert offers(full, NODE_MAC, arch=0, ipxe=True, seconds=3) == []
    assert tftp_get(full.host("node", mac=NODE_MAC), full.gateway.address, SCRIPT, seconds=2) is None
    # a new MAC is read from hosts/ by inotify: no signal, no restart
    full.service.publish("node-b", [STRANGER_MAC], "#!ipxe\n")
    assert [reply["boot_file"] for reply in offers(full, STRANGER_MAC, arch=0, ipxe=True)] == [SCRIPT]
    full.service.publish("node-a", [NODE_MAC], SCRIPT_TEXT)
    assert [reply["boot_file"] for reply in offers(full, NODE_MAC, arch=7)] == [EFI_LOADER]
    assert full.dnsmasq.poll() is None and full.service.dnsmasq_pid() == pid
    assert full.dnsmasq_log().count("started, version") == 1


def test_a_nodes_script_goes_by_tftp_to_its_mac_only(full):
    full.service.publish("node-o", [OTHER_MAC], "#!ipxe\necho the other node\n")
    gateway = full.gateway.address
    node = full.host("node", mac=NODE_MAC)
    assert tftp_get(node, gateway, SCRIPT) == SCRIPT_TEXT.encode()
    assert tftp_get(node, gateway, BIOS_LOADER) == loader(BIOS_LOADER)
    assert tftp_get(node, gateway, EFI_LOADER) == loader(EFI_LOADER)

    own_dir = "%s/%s" % (mac_directory(NODE_MAC), SCRIPT)
    absolute = os.path.join(full.service.tftp, own_dir)
    stranger = full.host("stranger", mac=STRANGER_MAC)   # no node's: no TFTP at all
    for path in (SCRIPT, own_dir, absolute, BIOS_LOADER):
        assert tftp_get(stranger, gateway, path, seconds=2) is None, path
    other = full.host("other", mac=OTHER_MAC)            # another node's: its own script only
    assert tftp_get(other, gateway, SCRIPT) == b"#!ipxe\necho the other node\n"
    for path in (own_dir, "../" + own_dir, absolute, "/../" + own_dir):
        assert tftp_get(other, gateway, path, seconds=2) is None, path


def test_without_the_nftables_set_an_unknown_mac_would_reach_scripts(full):
    """Why the service has its nftables set: dnsmasq gives a MAC without a directory of its own the
    TFTP root itself, from which MAC/boot.ipxe is any node's script."""
    stranger = full.host("stranger", mac=STRANGER_MAC)
    path = "%s/%s" % (mac_directory(NODE_MAC), SCRIPT)
    assert tftp_get(stranger, full.gateway.address, path, seconds=2) is None
    assert full.gateway.run("nft", "delete", "table", "inet", "bmi_boot").returncode == 0
    assert tftp_get(stranger, full.gateway.address, path) == SCRIPT_TEXT.encode()


def test_full_dhcp_advertises_the_networks_ipv6_prefix_but_no_router(full):
    """iPXE waits out its IPv6 set-up before it boots: without a router advertisement, ~13 s."""
    host = full.host("v6")
    host.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=2", check=True, timeout=10)
    host.run("ip", "link", "set", "eth0", "down", check=True, timeout=10)   # it solicits again
    host.run("ip", "link", "set", "eth0", "up", check=True, timeout=10)

    def ipv6(*what):
        return host.run("ip", "-6", *what, capture_output=True, text=True, check=True, timeout=10).stdout

    def autoconfigured():
        network = ipaddress.IPv6Network(full.ipv6_prefix + "/64")
        return [word for word in ipv6("addr", "show", "dev", "eth0").split()
                if "/" in word and ipaddress.ip_interface(word).ip in network]

    deadline = time.monotonic() + 15
    while not autoconfigured() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert autoconfigured(), full.dnsmasq_log()[-2000:]
    assert "default" not in ipv6("route", "show")   # router lifetime 0: not a way out


def test_proxy_dhcp_gives_the_boot_file_beside_the_sites_addresses(tmp_path):
    with BootNetwork(tmp_path, mode="proxy") as net:
        service = net.boot_service()
        service.publish("node-a", [NODE_MAC], SCRIPT_TEXT)
        net.site_dhcp()
        net.start_dnsmasq(service)
        prober = net.host("probe")
        for arch, ipxe, boot_file in ((0, False, BIOS_LOADER), (7, False, EFI_LOADER), (0, True, SCRIPT)):
            replies = {reply["server"]: reply for reply in probe_from(prober, NODE_MAC, arch, ipxe, seconds=5, count=2)}
            assert sorted(replies) == sorted([net.site.address, net.gateway.address]), replies
            site, bmi = replies[net.site.address], replies[net.gateway.address]
            assert site["yiaddr"].startswith(net.subnet + ".") and site["boot_file"] == ""
            assert bmi["yiaddr"] == "0.0.0.0" and bmi["vendor_class"] == "PXEClient", bmi
            assert bmi["boot_file"] in ("", boot_file), bmi
            # the file, where the firmware asks for it next: bmi's port 4011
            acks = probe_from(prober, NODE_MAC, arch, ipxe, seconds=3, count=1, server=net.gateway.address)
            assert [(ack["type"], ack["yiaddr"], ack["boot_file"]) for ack in acks] == [(5, "0.0.0.0", boot_file)]
        # a MAC of no node: the site's address, nothing of bmi's
        assert [reply["server"] for reply in probe_from(prober, STRANGER_MAC, 0, seconds=4)] == [net.site.address]
        assert probe_from(prober, STRANGER_MAC, 0, seconds=2, server=net.gateway.address) == []
        node = net.host("node", mac=NODE_MAC)
        assert tftp_get(node, net.gateway.address, SCRIPT) == SCRIPT_TEXT.encode()
        stranger = net.host("stranger", mac=STRANGER_MAC)
        assert tftp_get(stranger, net.gateway.address, "%s/%s" % (mac_directory(NODE_MAC), SCRIPT), 2) is None


# --- virtual nodes: slow (TCG), about a minute each ------------------------------------------------

BOOT_SECONDS = 240


def exported_disk(tgtd, path, marker, iqn, firmware):
    """A disk that prints marker on serial when it boots (BIOS: testkit/bootdisk.py's boot sector; UEFI:
    an EFI application on a FAT file system) as LUN 1 of target iqn on tgtd, open to every initiator."""
    (write_efi_boot_image if firmware == "uefi" else write_boot_image)(str(path), marker)
    tid = max(tgtd.targets(), default=0) + 1
    for args in (("--op", "new", "--mode", "target", "--tid", str(tid), "--targetname", iqn),
                 ("--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", "1", "--backing-store", str(path)),
                 ("--op", "bind", "--mode", "target", "--tid", str(tid), "--initiator-address", "ALL")):
        done = tgtd.admin(*args)
        assert done.returncode == 0, done.stderr


def boots(tmp_path, tgtd, firmware, mac, marker, mode="full"):
    """A VM of firmware with MAC mac boots through the boot service in mode (full DHCP; proxy: beside
    the site's DHCP server): its serial log and dnsmasq's."""
    iqn = "iqn.2026-11.io.bmi-rpc:boot-%s" % firmware
    exported_disk(tgtd, tmp_path / "disk.raw", marker, iqn, firmware)
    with BootNetwork(tmp_path, mode=mode) as net:
        if mode == "proxy":
            net.site_dhcp()
        service = net.boot_service()
        net.start_dnsmasq(service)
        net.relay(tgtd.port)
        service.publish("node-" + firmware, [mac], "#!ipxe\necho BMI-SCRIPT-%s\nsanboot iscsi:%s::%d:1:%s\n" % (
            firmware, net.gateway.address, 3260, iqn))
        started = time.monotonic()
        vm = net.vm(mac, firmware, max_runtime=BOOT_SECONDS + 30)
        booted = vm.wait_for(marker, BOOT_SECONDS)
        seconds = time.monotonic() - started
        vm.stop()
        print("%s boot: %.0f s" % (firmware, seconds))
        return booted, vm.serial(), net.dnsmasq_log()


def sent(log, mac, name):
    """dnsmasq's log says it sent name by TFTP from mac's own root."""
    return any("dnsmasq-tftp" in line and " sent " in line and "/%s/%s to " % (mac_directory(mac), name) in line
               for line in log.splitlines())


@pytest.mark.boot
def test_a_bios_node_with_ipxe_firmware_boots_its_script(tmp_path, tgtd):
    """SeaBIOS with qemu's iPXE ROM: the firmware is iPXE, so it gets its script at once."""
    mac = "52:54:00:b1:05:01"
    booted, serial, log = boots(tmp_path, tgtd, "bios", mac, "BMI-BOOT-BIOS")
    assert booted, "no marker on serial:\n%s\ndnsmasq:\n%s" % (serial[-2000:], log[-4000:])
    assert sent(log, mac, SCRIPT) and not sent(log, mac, BIOS_LOADER)


@pytest.mark.boot
def test_a_uefi_node_gets_ipxe_then_its_script(tmp_path, tgtd):
    """OVMF's own PXE gets snponly.efi, which gets the script, whose sanboot runs the disk's EFI
    application."""
    mac = "52:54:00:b1:0e:01"
    booted, serial, log = boots(tmp_path, tgtd, "uefi", mac, "BMI-BOOT-UEFI")
    assert booted, "no marker on serial:\n%s\ndnsmasq:\n%s" % (serial[-3000:], log[-4000:])
    assert "BMI-SCRIPT-uefi" in serial and "Registered SAN device 0x80" in serial
    assert sent(log, mac, EFI_LOADER) and sent(log, mac, SCRIPT)


@pytest.mark.boot
def test_a_uefi_node_boots_beside_the_sites_dhcp_server(tmp_path, tgtd):
    """proxyDHCP: the site's server gives the address, bmi's dnsmasq only the boot files (OVMF's PXE
    asks for its loader on 4011/udp, iPXE for its script)."""
    mac = "52:54:00:b1:0e:02"
    booted, serial, log = boots(tmp_path, tgtd, "uefi", mac, "BMI-BOOT-UEFI", mode="proxy")
    assert booted, "no marker on serial:\n%s\ndnsmasq:\n%s" % (serial[-3000:], log[-4000:])
    assert "BMI-SCRIPT-uefi" in serial
    assert sent(log, mac, EFI_LOADER) and sent(log, mac, SCRIPT)
    assert "DHCPACK" not in log   # the addresses are the site's
