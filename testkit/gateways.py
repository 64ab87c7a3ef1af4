"""Several gateways of one service, on loopback: each a main server with a tgtd and a state directory
of its own, all on one name server, one key and one Ceph pool (rbd settings)."""
import json
import os

from testkit.daemons import Tgtd, free_port, stop_process, wait_until
from testkit.service import Service, detach_every_node, variant


class GatewayGroup:
    def __init__(self, settings, workdir):
        """settings: the service's rbd settings; each gateway changes its own from them."""
        self.base = settings
        self.workdir = workdir
        self.names = Service(settings, workdir)   # the name server of them all
        self.tgtds, self.services = {}, {}

    def add(self, name):
        """A gateway more, its tgtd started: its own tgtd, state directory and port."""
        directory = os.path.join(self.workdir, name)
        os.makedirs(directory, exist_ok=True)
        tgtd = self.tgtds[name] = Tgtd(os.path.join(directory, "tgtd.log"))
        tgtd.start()
        self.services[name] = Service(variant(
            self.base, BMI_GATEWAY=name, BMI_STATE_DIR=os.path.join(directory, "state"), BMI_SERVER_PORT=free_port(),
            BMI_TGT_CONTROL_PORT=tgtd.control, BMI_ISCSI_PORTAL=tgtd.portal,
            # what a test VM on qemu's user-mode network sees of this host's loopback
            BMI_BOOT_PORTAL="10.0.2.2:%d" % tgtd.port), directory)

    def settings(self, name):
        return self.services[name].settings

    def start(self, name):
        """Start a gateway's main server (and its tgtd, if it is down); wait until it answers."""
        tgtd = self.tgtds[name]
        if tgtd.proc.poll() is not None:
            tgtd.start()   # the same control port and portal again
        self.services[name].start_mainserver()
        wait_until(lambda: self.client(name, "ping").returncode == 0, 60, "gateway %s answers" % name)

    def start_all(self, *names):
        self.names.start_nameserver()
        for name in names:
            self.add(name)
            self.start(name)

    def kill(self, name):
        """The gateway's host dies: SIGKILL to its main server and its tgtd."""
        self.services[name].mainserver.kill()
        self.services[name].mainserver.wait(10)
        self.tgtds[name].stop()

    def client(self, name, *args):
        """mainclient, through gateway name."""
        return self.services[name].client("--gateway", name, *args)

    def listing(self, name):
        done = self.client(name, "--json", "list_all_images")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def exported(self, name):
        """The IQNs that gateway name's tgtd exports."""
        return sorted(self.tgtds[name].targets().values())

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
        if self.names.nameserver is not None:
            stop_process(self.names.nameserver)
