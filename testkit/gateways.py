"""Several gateways of one service, on loopback: each a main server with a tgtd and a state directory
of its own, all on one name server (or several), one key and one Ceph pool (rbd settings)."""
import contextlib
import json
import os
import subprocess
import sys

from bmi.placement import placed
from config import ROOT
from testkit.daemons import Tgtd, free_port, rbd_images, stop_process, wait_until
from testkit.images import MiB, make_image_file
from testkit.service import Service, detach_every_node, variant


@contextlib.contextmanager
def running_gateways(settings, workdir, names, name_servers=1):
    """A GatewayGroup of the gateways names, running, with golden image "golden" (1 MiB of random
    bytes, group.golden) imported; stopped at the end."""
    group = GatewayGroup(settings, str(workdir), name_servers)
    try:
        group.start_all(*names)
        group.golden = make_image_file(os.path.join(str(workdir), "golden.raw"), MiB)
        done = group.client(names[0], "import_image", "golden", os.path.join(str(workdir), "golden.raw"))
        assert done.returncode == 0, done.stderr
        yield group
    finally:
        group.stop()


class GatewayGroup:
    def __init__(self, settings, workdir, name_servers=1):
        """settings: the service's rbd settings; each gateway changes its own from them. With several
        name servers (each a port of its own), every program is given them all in BMI_NS_HOST, each
        name server its own first (where it listens)."""
        addresses = ["127.0.0.1:%d" % (settings.BMI_NS_PORT if i == 0 else free_port()) for i in range(name_servers)]
        self.base = variant(settings, BMI_NS_HOST=",".join(addresses)) if name_servers > 1 else settings
        self.workdir = workdir
        self.name_servers = [Service(variant(self.base, BMI_NS_HOST=",".join(addresses[i:] + addresses[:i])),
                                     workdir if i == 0 else _directory(workdir, "ns-%d" % i))
                             for i in range(name_servers)]
        self.names = self.name_servers[0]
        self.tgtds, self.services = {}, {}

    def add(self, name):
        """A gateway more, its tgtd started: its own tgtd, state directory and port."""
        directory = _directory(self.workdir, name)
        tgtd = self.tgtds[name] = Tgtd(os.path.join(directory, "tgtd.log"))
        tgtd.start()
        self.services[name] = Service(variant(
            self.base, BMI_GATEWAY=name, BMI_STATE_DIR=os.path.join(directory, "state"), BMI_SERVER_PORT=free_port(),
            BMI_TGT_CONTROL_PORT=tgtd.control, BMI_ISCSI_PORTAL=tgtd.portal,
            # what a test VM on qemu's user-mode network sees of this host's loopback
            BMI_BOOT_PORTAL="10.0.2.2:%d" % tgtd.port), directory)

    def settings(self, name):
        return self.services[name].settings

    def start(self, name, with_tgtd=True):
        """Start a gateway's main server (and, with_tgtd, its tgtd if it is down); wait until it answers."""
        tgtd = self.tgtds[name]
        if with_tgtd and tgtd.proc.poll() is not None:
            tgtd.start()   # the same control port and portal again
        self.services[name].start_mainserver()
        wait_until(lambda: self.client(name, "ping").returncode == 0, 60, "gateway %s answers" % name)

    def start_all(self, *names):
        for name_server in self.name_servers:
            name_server.start_nameserver()
        for name in names:
            self.add(name)
            self.start(name)

    def kill(self, name):
        """The gateway's main server and its tgtd die (SIGKILL). Its watch helper, which dies with
        the server (--pdeathsig), still ends the watch; were the host gone, Ceph would drop it only
        after its timeout (scripts/records/rados)."""
        self.services[name].mainserver.kill()
        self.services[name].mainserver.wait(10)
        self.tgtds[name].stop()

    def client(self, name, *args):
        """mainclient, through gateway name."""
        return self.services[name].client("--gateway", name, *args)

    def provisions(self, name, nodes, *options):
        """mainclient provision golden NODE for each of nodes, all at once, with gateway name's
        settings (and options): the processes, their output piped."""
        return {node: subprocess.Popen([sys.executable, os.path.join(ROOT, "mainclient.py"), *options, "provision",
                                        "golden", node], env=self.services[name].env, cwd=ROOT,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for node in nodes}

    def whole(self, through):
        """Whether every node is either ready and exported by exactly the gateways its record places
        it on, or gone from everywhere (no disk): nothing half made. Listed through gateway through."""
        return not self.half_made(through)

    def half_made(self, through):
        """What is not whole (see whole), in words: [] when nothing."""
        paths = {n["node"]: n["paths"] for n in self.listing(through)["nodes"]}
        disks = {image[len("node."):] for image in rbd_images(self.base.environment()) if image.startswith("node.")}
        found = ["disks without records: %s" % sorted(disks - set(paths))] if disks - set(paths) else []
        found += ["records without disks: %s" % sorted(set(paths) - disks)] if set(paths) - disks else []
        for name in self.services:
            if self.services[name].mainserver.poll() is None:
                exported = set(self.exported(name))
                placed_here = {"%s:%s" % (self.base.BMI_IQN_PREFIX, node) for node, placement in paths.items()
                               if name in placement}
                found += ["%s exports %s, placed on it are %s" % (name, sorted(exported), sorted(placed_here))
                          ] if exported != placed_here else []
        return found

    def listing(self, name):
        done = self.client(name, "--json", "list_all_images")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def exported(self, name):
        """The IQNs that gateway name's tgtd exports."""
        return sorted(self.tgtds[name].targets().values())

    def placed_over(self, live, nodes, paths=2):
        """Whether each of nodes is exported at exactly the gateways placed for it over live (bmi/placement.py),
        and every live gateway's boot script of it names their portals, in the placement's order."""
        placements = {node: placed(node, live, paths) for node in nodes}
        return all(self.exported(name) == ["%s:%s" % (self.base.BMI_IQN_PREFIX, node) for node in nodes
                                           if name in placements[node]]
                   and all(self.boot_portals(name, node) == [self.settings(g).BMI_BOOT_PORTAL for g in placements[node]]
                           for node in nodes)
                   for name in live)

    def boot_portals(self, name, node):
        """The portals (HOST:PORT) that node's boot script at gateway name names, in its order; [] if it has none."""
        try:
            with open(os.path.join(self.settings(name).BMI_STATE_DIR, "boot", node + ".ipxe")) as f:
                sanboot = f.read().splitlines()[-1].split()
        except FileNotFoundError:
            return []
        assert sanboot[0] == "sanboot", sanboot
        return ["%s:%s" % tuple(uri.split(":")[1:4:2]) for uri in sanboot[1:]]   # iscsi:HOST::PORT:1:IQN

    def stop(self):
        """Detach every node (through a gateway that runs), then stop every main server, tgtd and
        the name server."""
        running = [s for s in self.services.values() if s.mainserver is not None and s.mainserver.poll() is None]
        if running:
            detach_every_node(running[0])
        for service in self.services.values():
            service.stop()
        for tgtd in self.tgtds.values():
            tgtd.stop()
        for name_server in self.name_servers:
            if name_server.nameserver is not None:
                stop_process(name_server.nameserver)


def _directory(workdir, name):
    directory = os.path.join(workdir, name)
    os.makedirs(directory, exist_ok=True)
    return directory
