"""Nodes' iPXE boot scripts: BMI_STATE_DIR/boot/NODE.ipxe, which a node loads over TFTP or HTTP."""
import os

from bmi.files import remove_partials, write_private


class BootScripts:
    def __init__(self, directory):
        self.directory = directory

    def open(self):
        os.makedirs(self.directory, exist_ok=True)
        remove_partials(self.directory)

    def path(self, node):
        return os.path.join(self.directory, node + ".ipxe")

    def exists(self, node):
        return os.path.exists(self.path(node))

    def nodes(self):
        """The nodes that have a boot script here."""
        return [name[:-len(".ipxe")] for name in os.listdir(self.directory)
                if name.endswith(".ipxe") and not name.startswith(".")]

    def write(self, record, portals):
        """Write the node's script (text). Mode 0600: it holds the node's CHAP secret."""
        write_private(self.path(record.node), self.text(record, portals), sync=False)

    @staticmethod
    def text(record, portals):
        """The script that logs the node in with its CHAP account and boots LUN 1 of its target, at
        whichever of the portals (HOST:PORT, one a gateway) answers: iPXE's sanboot takes several
        URIs of one disk (multipath). iPXE that got the script by DHCP has its address already (a
        second DHCP under UEFI's SNP waits for answers that never come): it asks only when it has none."""
        uris = ["iscsi:%s::%s:1:%s" % (*portal.rsplit(":", 1), record.iqn) for portal in portals]
        return "#!ipxe\nisset ${ip} || dhcp\nset username %s\nset password %s\nsanboot %s\n" % (
            record.chap_user, record.chap_secret, " ".join(uris))

    def remove(self, node):
        try:
            os.unlink(self.path(node))
        except FileNotFoundError:
            pass
