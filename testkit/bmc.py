"""An emulated BMC that really powers a test VM: OpenIPMI's ipmi_sim (Debian openipmi) answers IPMI
over LAN on a loopback UDP port, and starts its VM, qemu with an ipmi-bmc-extern device that
connects back to it through a chardev socket, when asked to power on. Power off reaches qemu
through that device (it shuts down), and ipmi_sim reports the power on while the VM is connected:
the state a test reads is the VM's own. The VM's chardev is a UNIX socket in a private directory,
which socat takes to ipmi_sim's loopback TCP port: a VM in a network namespace of its own
(testkit/bootnet.py's vm_command) reaches it as well as one here.

    with SimulatedBmc(tmp_path, "secret") as bmc:
        ... provision with bmc.settings(): driver ipmi, bmc.address, bmc.user
        assert bmc.vm_pid() is not None   # once powered on

The VM is firmware only by default (no disk: SeaBIOS looks for one again and again), or any qemu
command line (testkit/bootvm.py node_command, say). Everything runs in one process group, ipmi_sim
at its head, stopped by its pid; qemu runs under timeout, so it dies even if the test never stops it.
"""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile

from testkit.daemons import require_command, running_pid, wait_until

USER = "admin"
FIRMWARE_ONLY = ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-display", "none",
                 "-monitor", "none"]
MAX_RUNTIME = 600   # seconds a VM may run at most


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_tcp_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SimulatedBmc:
    def __init__(self, workdir, password, vm_command=FIRMWARE_ONLY):
        self.dir = os.path.join(str(workdir), "bmc")
        self.password = password
        self.user = USER
        self.port = free_udp_port()
        self.vm_port = free_tcp_port()   # ipmi_sim listens here for its VM
        self.address = "127.0.0.1:%d" % self.port
        self.vm_pid_file = os.path.join(self.dir, "vm.pid")
        self.vm_command = list(vm_command)
        self.proc = self.relay = None

    def bmc(self, **changes):
        """The node's BMC as provision takes it, with changes (a wrong password, say)."""
        return dict({"driver": "ipmi", "address": self.address, "user": self.user, "password": self.password},
                    **changes)

    def start(self):
        require_command("ipmi_sim", "openipmi")
        require_command("ipmitool", "ipmitool")
        require_command("socat", "socat")
        os.makedirs(os.path.join(self.dir, "state"))
        self.private = tempfile.mkdtemp(prefix="bmi-bmc-")   # 0700, and a short path for the socket
        vm_socket = os.path.join(self.private, "vm.sock")
        self.relay = subprocess.Popen(["socat", "UNIX-LISTEN:%s,fork,mode=600" % vm_socket,
                                       "TCP:127.0.0.1:%d" % self.vm_port], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(vm_socket), 10, "the VM's socket to the BMC")
        vm = ["timeout", "-k", "5", str(MAX_RUNTIME), *self.vm_command, "-pidfile", self.vm_pid_file,
              "-chardev", "socket,id=ipmi0,path=%s,reconnect=1" % vm_socket,
              "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "-device", "isa-ipmi-kcs,bmc=bmc0"]
        with open(os.path.join(self.dir, "lan.conf"), "w") as f:
            f.write(LAN_CONF % {"port": self.port, "vm_port": self.vm_port, "user": self.user,
                                "password": self.password, "vm": shlex.join(vm).replace('"', '\\"')})
        with open(os.path.join(self.dir, "bmc.emu"), "w") as f:
            f.write(EMULATION)
        self.log = open(os.path.join(self.dir, "ipmi_sim.log"), "wb")
        self.proc = subprocess.Popen(["ipmi_sim", "-n", "-c", "lan.conf", "-f", "bmc.emu", "-s", "state"],
                                     cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until(lambda: self.ipmitool("chassis", "power", "status").returncode == 0, 20, "ipmi_sim to answer")
        return self

    def ipmitool(self, *args):
        """ipmitool ARGS at this BMC, as the test's own check beside bmi-rpc's driver."""
        return subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port),
                               "-U", self.user, "-E", "-N", "1", "-R", "1", *args],
                              env=dict(os.environ, IPMI_PASSWORD=self.password), capture_output=True, text=True)

    def vm_pid(self):
        """The VM's qemu process while it runs (not a zombie), or None."""
        return running_pid(self.vm_pid_file)

    def hang(self):
        """The BMC stops answering, as a hung one does: its socket stays open."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        if self.proc is not None:
            pid = self.vm_pid()
            if pid is not None:   # qemu, by the pid it wrote
                os.kill(pid, signal.SIGKILL)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGKILL)   # ipmi_sim and whatever of its VM's is left
            self.proc.wait(10)
            self.log.close()
            self.proc = None
        if self.relay is not None:   # its children go with the connections they relayed
            self.relay.kill()
            self.relay.wait(10)
            shutil.rmtree(self.private, ignore_errors=True)
            self.relay = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ipmi_sim's configuration (OpenIPMI's lanserv/lan.conf documents it): one BMC with an IPMI 2.0
# LAN channel and the VM's interface, both on loopback; one admin user.
LAN_CONF = """name "bmi-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %(port)d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 %(vm_port)d codec VM
  startcmd "%(vm)s"
  startnow false
  poweroff_wait 20
  kill_wait 5
  user 2 true "%(user)s" "%(password)s" admin 10 none md2 md5 straight
"""
# its emulation: the BMC alone
EMULATION = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""
