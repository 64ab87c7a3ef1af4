"""The demo's network of real machines (tools/demo): a testkit/bootnet.py BootNetwork, full DHCP, with
bmi-rpc's dnsmasq on it and the nodes' portal relayed to the demo's tgtd, driven by lines on
standard input, answering on standard output.

    python -m testkit.demonet WORKDIR ISCSI_PORT
      prints the boot service's settings (KEY=VALUE, for the main server), then "ready"
    boot MAC FIRMWARE      a node with that MAC and firmware (bios or uefi) powers on, boots through
                           the boot service, says what it mounted as /, and powers off; "booted" or
                           "failed: WHY" ends the answer
    (end of input)         everything stops
"""
import sys
import time

from testkit.bootnet import BootNetwork, OSNode


def boot(net, mac, firmware):
    started = time.monotonic()
    node = OSNode(net, mac, firmware)
    root = node.reach_root()
    print("node %s (%s): / is %s on %s, logged in to %s" % (mac, firmware, root["fstype"], root["source"],
                                                             root["iscsi"]))
    print("node %s says: %s" % (mac, node.console.run("grep ' / ' /proc/mounts")))
    print("node %s: power-on to its shell in %.0f s; powering off" % (mac, time.monotonic() - started))
    node.power_off()


def main(workdir, iscsi_port):
    with BootNetwork(workdir, mode="full") as net:
        net.relay(int(iscsi_port))
        net.start_dnsmasq(net.boot_service())
        for name, value in sorted(net.settings_values.items()):
            print("%s=%s" % (name, value))
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            try:
                if len(words) != 3 or words[0] != "boot":
                    raise ValueError("not a command: %r" % line)
                boot(net, words[1], words[2])
                print("booted", flush=True)
            except Exception as err:   # the demo shows it and goes on to stop everything
                print("failed: %s" % err, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
