"""Boot a virtual bare-metal node over iPXE for end-to-end tests.

The node is qemu (TCG, no KVM) with one e1000 NIC running the iPXE ROM from
Debian's ipxe-qemu and no local disk.  qemu's user-mode network serves DHCP
and TFTP (``tftp_dir``/``boot_file``, e.g. an iPXE script doing ``sanboot``);
the guest reaches the host's 127.0.0.1 as 10.0.2.2.  Guest serial (COM1)
goes to ``serial_log``; the boot disk from ``testkit/bootdisk.py`` prints its
marker there.  iPXE itself prints only to VGA (these ROMs have no serial
console), so a failed sanboot shows only as a missing marker; the node then
exits by itself within seconds (see ``-boot`` below).

    with booted_node(tftp_dir, "node-a.ipxe", log) as proc:
        assert wait_for_marker(log, "BMI-BOOT-OK-1", 120, proc=proc)
"""

import contextlib
import os
import signal
import subprocess
import tempfile
import time

QEMU = "qemu-system-x86_64"
IPXE_ROM = "/usr/lib/ipxe/qemu/pxe-e1000.rom"  # BIOS ROM; efi-* need OVMF
MAX_RUNTIME = 600  # seconds; hard cap in case a test never stops the node


def node_command(tftp_dir, boot_file, serial_log, memory_mb=128,
                 netdev_opts=""):
    """Return the qemu argv for a diskless node that network-boots.

    ``netdev_opts`` is appended to ``-netdev user,...``, e.g.
    ",restrict=on,guestfwd=tcp:10.0.2.100:3260-tcp:127.0.0.1:PORT" to cut
    the guest off from the host except for one forwarded portal (the
    chardev connects once, at qemu start: the portal must be up by then).
    """
    return [
        QEMU,
        "-machine", "pc,accel=tcg",
        "-m", str(memory_mb),
        "-nodefaults",          # no default VGA/NIC/serial/monitor
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{serial_log}",
        # No restrict=on: it also resets the guest's TCP to 10.0.2.2, so
        # the host-loopback iSCSI portal would be unreachable.
        "-netdev", f"user,id=n0,net=10.0.2.0/24,"
                   f"tftp={tftp_dir},bootfile={boot_file}{netdev_opts}",
        "-device", f"e1000,netdev=n0,romfile={IPXE_ROM}",
        # On "No bootable device" SeaBIOS reboots at once, and -no-reboot
        # turns that (and a triple fault) into qemu exiting: a failed boot
        # ends the node quickly instead of hanging.
        "-boot", "order=n,reboot-timeout=0",
        "-no-reboot",
    ]


def start_node(tftp_dir, boot_file, serial_log, memory_mb=128,
               netdev_opts="", max_runtime=MAX_RUNTIME, extra_args=(), host=None):
    """Start the node; return its Popen.  Stop it with ``stop_node``.
    With ``host`` (testkit/netns.py) the node runs in that test host: its
    network is the host's.

    qemu runs under ``timeout`` in a new session, so it dies after
    ``max_runtime`` even if the test crashes, and ``stop_node`` can signal
    the whole group by the Popen's PID.
    """
    tftp_dir = os.path.abspath(tftp_dir)
    if not os.path.isfile(os.path.join(tftp_dir, boot_file)):
        raise FileNotFoundError(os.path.join(tftp_dir, boot_file))
    with open(serial_log, "wb"):
        pass  # start empty so an old marker can't match
    argv = ["timeout", "-k", "5", str(max_runtime),
            *node_command(tftp_dir, boot_file, serial_log, memory_mb,
                          netdev_opts),
            *extra_args]
    if host is not None:
        argv = host.command(*argv)
    # stderr goes to a file, not a pipe nobody drains while qemu runs.
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)
    proc.qemu_stderr = err
    return proc


def wait_for_marker(serial_log, marker, timeout, proc=None, interval=0.2):
    """Poll ``serial_log`` until it contains ``marker``; False on timeout.

    With ``proc``, also give up early once the node has exited.
    """
    needle = marker.encode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(serial_log, "rb") as f:
                if needle in f.read():
                    return True
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            return False
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(interval)


def stop_node(proc, grace=5):
    """Stop the node by its Popen's PID (process group).

    Idempotent; returns qemu's stderr (also kept as ``proc.stderr_text``).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # timeout forwards to qemu
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    err = getattr(proc, "qemu_stderr", None)
    if err is not None and not err.closed:
        err.seek(0)
        proc.stderr_text = err.read().decode(errors="replace")
        err.close()
    return getattr(proc, "stderr_text", "")


@contextlib.contextmanager
def booted_node(tftp_dir, boot_file, serial_log, **kwargs):
    """Context manager: start a node, yield its Popen, always stop it."""
    proc = start_node(tftp_dir, boot_file, serial_log, **kwargs)
    try:
        yield proc
    finally:
        stop_node(proc)


if __name__ == "__main__":
    # python -m testkit.bootvm TFTP_DIR BOOT_FILE SERIAL_LOG MARKER: boot a node until it prints MARKER
    import sys

    tftp, boot_file, log, marker = sys.argv[1:5]
    with booted_node(tftp, boot_file, log) as node:
        booted = wait_for_marker(log, marker, 180, proc=node)
    with open(log, errors="replace") as f:
        print(f.read().strip())
    sys.exit(0 if booted else 1)
