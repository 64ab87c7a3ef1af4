"""An emulated Redfish BMC that really powers a test VM: sushy-tools' sushy-emulator, the emulator
Ironic is tested with, answers HTTPS on a loopback port (a certificate of its own CA, made with
openssl) with HTTP basic authentication, and powers a libvirt domain through a libvirtd of its
own, which runs the VM with qemu (TCG). The state a test reads is the VM's own: its qemu process,
by the pid file libvirt keeps for it.

    with RedfishBmc(tmp_path, "secret") as bmc:
        ... provision --bmc-driver redfish --bmc-address bmc.address --bmc-user bmc.user, BMI_BMC_CA=bmc.ca
        assert bmc.vm_pid() is not None   # once powered on

libvirtd runs as nobody, in session mode: its UNIX sockets, configuration, domain and logs lie in a
private directory; no libvirt of the host's, no network or firewall is touched, and nothing
listens on TCP. The VM is firmware only (no disk: SeaBIOS looks for one again and again).
libvirtd and sushy-emulator run under timeout and are stopped by their pids; qemu, which libvirtd
starts as a daemon of its own, is killed by its pid file.
"""
import base64
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import bcrypt
import libvirt

from testkit.bmc import free_tcp_port
from testkit.daemons import require, require_command, running_pid, stop_process, wait_until
from testkit.tls import make_ca, make_cert

USER = "admin"
DOMAIN = "bmi-node"
NOBODY = 65534   # libvirtd's user and group: unprivileged, as a session daemon is
MAX_RUNTIME = 600   # seconds libvirtd and the emulator may run at most
DOMAIN_XML = """<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>""" % DOMAIN
# its qemu logs to a file: the default, virtlogd, would be a daemon libvirtd starts and nobody stops
QEMU_CONF = 'stdio_handler = "file"\n'


class RedfishBmc:
    def __init__(self, workdir, password):
        self.dir = os.path.join(str(workdir), "redfish")
        self.password = password
        self.user = USER
        self.port = free_tcp_port()
        self.address = "127.0.0.1:%d" % self.port
        self.libvirtd = self.emulator = None

    def start(self):
        require_command("libvirtd", "libvirt-daemon-driver-qemu")
        require_command("qemu-system-x86_64", "qemu-system-x86")
        require(subprocess.run(["/usr/bin/python3", "-c", "import sushy"], capture_output=True).returncode == 0,
                "python3-sushy")
        os.makedirs(self.dir)
        self.home = tempfile.mkdtemp(prefix="bmi-libvirt-")   # a short path for the sockets
        os.makedirs(os.path.join(self.home, "config", "libvirt"))
        with open(os.path.join(self.home, "config", "libvirt", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        for directory, _, files in os.walk(self.home):
            for name in [directory, *(os.path.join(directory, file) for file in files)]:
                os.chown(name, NOBODY, NOBODY)
        self.uri = "qemu:///session?socket=%s/run/libvirt/libvirt-sock" % self.home
        self._start_libvirtd()
        self._start_emulator()
        return self

    def _start_libvirtd(self):
        env = {"PATH": os.environ["PATH"], "HOME": self.home, "XDG_RUNTIME_DIR": os.path.join(self.home, "run"),
               "XDG_CONFIG_HOME": os.path.join(self.home, "config"), "XDG_CACHE_HOME": os.path.join(self.home, "cache")}
        self.libvirtd_log = open(os.path.join(self.dir, "libvirtd.log"), "wb")
        self.libvirtd = subprocess.Popen(["timeout", "-k", "5", str(MAX_RUNTIME), "libvirtd"], env=env, cwd=self.home,
                                         user=NOBODY, group=NOBODY, extra_groups=[], stdin=subprocess.DEVNULL,
                                         stdout=self.libvirtd_log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.libvirtd.poll() is not None or self._connects(), 30, "libvirtd to answer")
        if self.libvirtd.poll() is not None:
            raise RuntimeError("libvirtd does not start: see %s" % self.libvirtd_log.name)
        with self.connection() as connection:
            self.uuid = connection.defineXML(DOMAIN_XML).UUIDString()

    def _connects(self):
        libvirt.registerErrorHandler(lambda *_: None, None)   # libvirt prints every error; this wait expects some
        try:
            libvirt.open(self.uri).close()
            return True
        except libvirt.libvirtError:
            return False

    def connection(self):
        return libvirt.open(self.uri)

    def _start_emulator(self):
        certs = Path(self.dir, "tls")
        certs.mkdir()
        ca = make_ca(certs, "bmc-ca")
        self.ca = ca[0]
        cert, key = make_cert(certs, "bmc", ca)
        # bcrypt, the one digest sushy-emulator takes; its fewest rounds: it checks every request
        htpasswd = os.path.join(self.dir, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write("%s:%s\n" % (self.user, bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4)).decode()))
        config = os.path.join(self.dir, "emulator.conf")
        with open(config, "w") as f:
            for name, value in (("LISTEN_IP", "127.0.0.1"), ("LISTEN_PORT", self.port), ("SSL_CERT", cert),
                                ("SSL_KEY", key), ("AUTH_FILE", htpasswd), ("LIBVIRT_URI", self.uri),
                                ("ALLOWED_INSTANCES", [self.uuid])):
                f.write("SUSHY_EMULATOR_%s = %r\n" % (name, value))
        self.emulator_log = open(os.path.join(self.dir, "sushy-emulator.log"), "wb")
        self.emulator = subprocess.Popen(["timeout", "-k", "5", str(MAX_RUNTIME), sys.executable, "-m",
                                          "sushy_tools.emulator.main", "--config", config],
                                         stdin=subprocess.DEVNULL, stdout=self.emulator_log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.emulator.poll() is not None or self._answers(), 30, "sushy-emulator to answer")
        if self.emulator.poll() is not None:
            raise RuntimeError("sushy-emulator does not start: see %s" % self.emulator_log.name)

    def _answers(self):
        request = urllib.request.Request("https://%s/redfish/v1/Systems/%s" % (self.address, self.uuid))
        request.add_header("Authorization", "Basic " + base64.b64encode(
            ("%s:%s" % (self.user, self.password)).encode()).decode())
        try:
            with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=self.ca), timeout=2):
                return True
        except OSError:
            return False

    def vm_pid(self):
        """The VM's qemu process while it runs (not a zombie), or None."""
        return running_pid(os.path.join(self.home, "run", "libvirt", "qemu", "run", DOMAIN + ".pid"))

    def stop(self):
        if self.emulator is not None:
            stop_process(self.emulator)
            self.emulator_log.close()
            self.emulator = None
        if self.libvirtd is not None:
            pid = self.vm_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            stop_process(self.libvirtd)
            self.libvirtd_log.close()
            self.libvirtd = None
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
