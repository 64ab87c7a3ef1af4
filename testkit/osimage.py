"""A small bootable test OS whose root filesystem is the iSCSI disk it boots from.

``build_os_image(path)`` writes a sparse raw disk image (1 GiB by default) that a node boots with
iPXE ``sanboot`` from a tgtd target, on legacy BIOS (SeaBIOS) and on UEFI (OVMF) alike:

    GPT, 1 MiB aligned
    MBR boot code   syslinux's gptmbr.bin: on BIOS it chains the partition marked "legacy BIOS
                    bootable", partition 1
    partition 1     "ESP", FAT16, 64 MiB: EFI system partition for UEFI and syslinux's boot
                    partition for BIOS, so one partition serves both firmwares
                      \\EFI\\BOOT\\BOOTX64.EFI       systemd-boot (systemd-boot-efi)
                      \\loader\\loader.conf, \\loader\\entries\\bmi.conf   timeout 0, one entry
                      \\ldlinux.sys, \\ldlinux.c32, \\syslinux.cfg   syslinux (BIOS)
                      \\vmlinuz, \\initrd.img       Debian's stock kernel, the initramfs below
    partition 2     "bmi-root", ext4 labelled bmi-root: the root filesystem (busybox); /boot also
                    carries the kernel and initramfs

The initramfs is made by hand (cpio newc written here, gzip): busybox-static, the kernel modules for
the NIC, iSCSI, sd, virtio-blk, ext4 and dm-multipath (loaded with insmod in dependency order, from
modules.dep), ``iscsistart`` from open-iscsi, and ``multipath`` and ``kpartx`` from multipath-tools,
with the shared libraries they need.  Its /init logs in to the targets of the iBFT that iPXE's
sanboot leaves (``iscsistart -N`` brings up the NIC from it, ``iscsistart -b`` logs in, with the
CHAP secret iPXE put there): iPXE puts there each portal of sanboot's URIs, so a node placed on two
gateways logs in to both, one path each to the one disk.  ``multipath`` makes the map ``mpatha``
over them (failover: one path in use; a path whose connection breaks fails its I/O after 5 s, and
the kernel's dm-multipath gives it to the next), ``kpartx`` its partitions; /init mounts the one
labelled bmi-root, prints on the serial console (ttyS0)

    BMI-ROOT source=/dev/mapper/mpatha-part2 fstype=ext4 iscsi=IQN

(with one path or several alike) and switch_roots to the disk, whose /init gives a shell on ttyS0
with the prompt ``BMI# `` (testkit/console.py types commands into it).  A write there lands on the
iSCSI disk.  Booted from a local disk instead (a virtio disk of the VM: no sanboot, so no iBFT),
/init logs in nowhere and mounts bmi-root from that disk: ``BMI-ROOT source=/dev/vda2 fstype=ext4
iscsi=`` (the boot benchmark's baseline, benchmarks/boot.py).  No multipathd runs: nothing brings
a failed path back, and with no path left I/O fails rather than waits.

The guest's packages (linux-image-*, GUEST_PACKAGES) are fetched
with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into CACHE, never installed; the
host needs only PACKAGES.  Unpacked packages and the kernel+initramfs are kept there, keyed by
version, made once under a lock, written under a partial name and renamed when complete.  The disk
itself is made anew each call (a few seconds, no mounts, no loop devices): mke2fs -d and mkfs.vfat
write into the image file at the partition's offset, mtools and syslinux too.

    python3 -m testkit.osimage /tmp/os.img      # prints what build_os_image returns
"""
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile

# What the host needs to build the image (tools/setup can apt-get them); the guest's own packages
# are downloaded, not installed (GUEST_PACKAGES).
PACKAGES = ["apt", "dpkg", "kmod", "e2fsprogs", "dosfstools", "mtools", "gdisk",
            "syslinux", "syslinux-common", "systemd-boot-efi", "libssl3", "libkmod2"]
# What a boot test needs besides: tgtd, qemu, iPXE's ROMs and its EFI build, OVMF.
TEST_PACKAGES = ["tgt", "qemu-system-x86", "ipxe-qemu", "ipxe", "ovmf"]
KERNEL_META = "linux-image-amd64"
GUEST_PACKAGES = ["busybox-static", "open-iscsi", "libopeniscsiusr", "multipath-tools", "kpartx",
                  "libdevmapper1.02.1", "libaio1", "liburcu8"]
# multipath-tools' programs in the initramfs, and their plug-ins (path checkers, prioritizers), which
# libmultipath loads by name from /lib/multipath: no ldd shows them
MULTIPATH_PROGRAMS = [("multipath-tools", "sbin/multipath"), ("kpartx", "sbin/kpartx")]
MULTIPATH_PLUGINS = ["libchecktur.so", "libcheckdirectio.so", "libprioconst.so"]

CACHE = os.environ.get("BMI_OSIMAGE_CACHE", "/var/cache/bmi-rpc/osimage")
ROOT_LABEL = "bmi-root"
PROMPT = "BMI# "
MiB = 1 << 20
ESP_SIZE = 64 * MiB
SECTOR = 512
CMDLINE = "console=ttyS0,115200 panic=10 loglevel=5"

SYSTEMD_BOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
GPTMBR = "/usr/lib/syslinux/mbr/gptmbr.bin"

# Loaded in this order (each after its modules.dep dependencies).  The crc ones are looked up by
# name through the crypto API at run time, which no modules.dep shows: without crc32c ext4 cannot
# check metadata_csum, and mounting fails.
MODULES = ["virtio_pci", "virtio_net", "e1000", "e1000e",
           "crc32c_generic", "crct10dif_generic", "crc64_rocksoft_generic",
           "scsi_transport_iscsi", "libiscsi", "iscsi_tcp", "sd_mod", "iscsi_ibft", "virtio_blk", "ext4",
           "dm_mod", "dm_multipath", "dm_round_robin"]

# dm-multipath over the paths to the one disk of the iBFT's targets.  No udev here: the WWID that
# groups the paths comes from sysfs (uid_attribute ""), and every path is taken (find_multipaths no).
# failover: one path at a time (each gateway's tgtd has its own librbd and its cache: two paths in
# use at once would read through one what was written through the other).  Without multipathd,
# multipath leaves queue_if_no_path out of the map whatever no_path_retry says: none is set.
MULTIPATH_CONF = """defaults {
    find_multipaths no
    user_friendly_names yes
    uid_attribute ""
    path_grouping_policy failover
    path_selector "round-robin 0"
}
"""
# seconds an iSCSI path whose connection broke holds its I/O before failing it (open-iscsi's default
# is 120): then dm-multipath gives it to another path
RECOVERY_TMO = 5

INITRAMFS_INIT = r"""#!/bin/sh
# initramfs /init (testkit/osimage.py): iSCSI login from the iBFT (if any), mount bmi-root, switch_root.
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
fail() { echo "BMI-INITRAMFS-FAIL $*"; exec sh; }
for m in $(cat /etc/modules); do
    insmod /lib/modules/$m.ko 2>/dev/null || echo "initramfs: insmod $m failed"
done
# booted by iPXE's sanboot: iscsi_ibft shows the iBFT it left in sysfs; booted from a local disk
# (no iBFT): no login, the root is on that disk
if [ -d /sys/firmware/ibft ]; then
    # the iBFT names the NIC by MAC; wait for that NIC
    i=0
    until [ -d /sys/firmware/ibft/ethernet0 ] && ls /sys/class/net | grep -qv '^lo$'; do
        i=$((i+1)); [ $i -gt 100 ] && fail "no iBFT or no NIC"; sleep 0.1
    done
    ip link set lo up
    iscsistart -N || fail "iscsistart -N (network from iBFT)"
    # logs in to every target of the iBFT: iPXE puts there each portal of sanboot's URIs, each a
    # path to the one disk
    iscsistart -b || fail "iscsistart -b (login from iBFT)"
    sessions=$(ls -d /sys/class/iscsi_session/session* | wc -l)
    i=0
    until [ $(ls -d /sys/class/iscsi_session/session*/device/target*/*/block/* 2>/dev/null | wc -l) -ge $sessions ]; do
        i=$((i+1)); [ $i -gt 300 ] && fail "no disk on each of $sessions iSCSI sessions"; sleep 0.1
    done
    for t in /sys/class/iscsi_session/session*/recovery_tmo; do echo @RECOVERY_TMO@ > $t; done
    # no udevd here: libudev, through which multipath sees devices, takes one that udev's database
    # does not list for one udev has not set up yet, and multipath skips it; list each disk
    mkdir -p /run/udev/data
    for d in /sys/block/sd*; do echo I:1 > /run/udev/data/b$(cat $d/dev); done
    multipath -v0 || fail "multipath"
    map=$(grep -l '^mpath-' /sys/block/dm-*/dm/uuid | head -n 1 | cut -d/ -f4)
    [ -n "$map" ] || fail "no multipath map"
    kpartx -a -p -part /dev/$map || fail "kpartx /dev/$map"
    # the root is on the map (kpartx's partition of it), never on one path's /dev/sdX, which findfs
    # could give: the partition whose ext4 label (16 bytes at 1144) is @LABEL@
    for part in /dev/mapper/*-part*; do
        [ "$(dd if=$part bs=1 skip=1144 count=16 2>/dev/null | tr -d '\000')" = @LABEL@ ] && root=$part
    done
    [ -n "$root" ] || fail "no partition of the multipath map labelled @LABEL@"
fi
i=0
until [ -n "$root" ] || root=$(findfs LABEL=@LABEL@ 2>/dev/null); do
    i=$((i+1)); [ $i -gt 300 ] && fail "no partition labelled @LABEL@"; sleep 0.1
done
mkdir -p /newroot
mount -t ext4 -o rw "$root" /newroot || fail "mount $root"
fstype=$(awk '$2 == "/newroot" {print $3}' /proc/mounts)
iqn=$(cat /sys/class/iscsi_session/session*/targetname 2>/dev/null | head -n 1)
echo "BMI-ROOT source=$root fstype=$fstype iscsi=$iqn"
# the map's name as this multipath chose it, for the root's (bmi-paths)
[ -f /etc/multipath/bindings ] && cp /etc/multipath/bindings /newroot/etc/multipath/bindings
for d in dev proc sys; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /init
"""

# seconds between the path keeper's looks at the node's boot script
PATHS_SECONDS = 2
PATHS_LOG = "/tmp/bmi-paths.log"
PATHS_KEEPER = r"""#!/bin/sh
# bmi-paths (testkit/osimage.py): the node's paths to its disk, kept as its boot script names them.
# Every @PATHS_SECONDS@ s it fetches the script from its boot server (TFTP "boot.ipxe" from the DHCP
# server of the iBFT, as the boot service serves each MAC its node's) and logs in to each portal
# there that no live session goes to: a gateway the node was placed on anew, or one come back.
# multipath then takes the new path into the root's map. What it did goes to @PATHS_LOG@.
ibft=/sys/firmware/ibft
[ -d $ibft/target0 ] || exit 0   # booted from a local disk
server=$(cat $ibft/ethernet0/dhcp)
initiator=$(cat $ibft/initiator/initiator-name)
say() { echo "$*" >> @PATHS_LOG@; }
live_portals() {
    for s in /sys/class/iscsi_session/session*; do
        [ "$(cat $s/state)" = LOGGED_IN ] || continue
        for c in $s/device/connection*/iscsi_connection/connection*; do
            echo "$(cat $c/persistent_address):$(cat $c/persistent_port)"
        done
    done
}
say "watching boot.ipxe at $server"
while sleep @PATHS_SECONDS@; do
    tftp -g -l /tmp/boot.ipxe -r boot.ipxe "$server" 2>/dev/null || continue
    user=$(sed -n 's/^set username //p' /tmp/boot.ipxe)
    secret=$(sed -n 's/^set password //p' /tmp/boot.ipxe)
    for uri in $(sed -n 's/^sanboot //p' /tmp/boot.ipxe); do
        # iscsi:HOST::PORT:LUN:IQN (bmi/bootscripts.py)
        host=$(echo $uri | cut -d: -f2) port=$(echo $uri | cut -d: -f4) iqn=$(echo $uri | cut -d: -f6-)
        live_portals | grep -qxF "$host:$port" && continue
        before=$(ls /sys/block | grep '^sd' | sort)
        if ! iscsistart -i "$initiator" -t "$iqn" -g 1 -a "$host" -p "$port" -u "$user" -w "$secret" \
                >> @PATHS_LOG@ 2>&1; then
            say "BMI-PATH-FAILED $host:$port"
            continue
        fi
        i=0
        until [ "$(ls /sys/block | grep '^sd' | sort)" != "$before" ]; do
            i=$((i+1)); [ $i -gt 300 ] && break; sleep 0.1
        done
        for t in /sys/class/iscsi_session/session*/recovery_tmo; do echo @RECOVERY_TMO@ > $t; done
        # no udevd: each disk listed for libudev, as in the initramfs
        for d in /sys/block/sd*; do echo I:1 > /run/udev/data/b$(cat $d/dev); done
        multipath -v0 >> @PATHS_LOG@ 2>&1
        say "BMI-PATH-ADDED $host:$port $(ls /sys/block/$(grep -l ^mpath- /sys/block/dm-*/dm/uuid | head -n 1 | cut -d/ -f4)/slaves | tr '\n' ' ')"
    done
done
"""

ROOT_INIT = r"""#!/bin/sh
# The test OS's init (testkit/osimage.py): a root shell on the serial console, again and again.
export PATH=/bin HOME=/root PS1='@PROMPT@'
mount -t tmpfs tmp /tmp
hostname bmi-node
echo 1 > /proc/sys/kernel/printk   # keep kernel messages off the console the tests read
# a wide terminal: ash's line editing would redraw commands longer than 80 columns
stty -F /dev/console cols 250 rows 50 2>/dev/null
mkdir -p /run/udev/data
bmi-paths &
cd /
while true; do
    # cttyhack makes the console the shell's controlling tty (job control, ^C)
    setsid cttyhack sh -i
done
"""

SYSLINUX_CFG = "DEFAULT bmi\nPROMPT 0\nTIMEOUT 0\nLABEL bmi\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {cmdline}\n"
LOADER_CONF = "default bmi.conf\ntimeout 0\neditor no\n"
LOADER_ENTRY = "title BMI test OS\nlinux /vmlinuz\ninitrd /initrd.img\noptions {cmdline}\n"


class BuildError(RuntimeError):
    """A build command failed; the message carries its stderr."""


def run(*argv, cwd=None, env=None):
    """Run argv (a list, no shell); return its stdout, or raise BuildError with its stderr."""
    try:
        out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=600)
    except FileNotFoundError as e:
        raise BuildError("%s: not found (install %s)" % (argv[0], " ".join(PACKAGES))) from e
    if out.returncode != 0:
        raise BuildError("%s failed (exit %d): %s" % (" ".join(map(str, argv)), out.returncode,
                                                       (out.stderr or out.stdout).strip()[-3000:]))
    return out.stdout


# --- the cache -------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(cache):
    """One builder at a time in the cache (flock on CACHE/.lock), across processes."""
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cached(cache, name, make):
    """CACHE/name, made by make(partial_dir) into a partial directory renamed when complete (a
    crash leaves no half entry that looks whole).  Call with the lock held."""
    final = os.path.join(cache, name)
    if os.path.isdir(final):
        return final
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # a builder that died; we hold the lock
    os.makedirs(partial)
    make(partial)
    os.rename(partial, final)
    return final


def _candidate(package):
    """The version apt would download of package."""
    out = run("apt-cache", "show", "--no-all-versions", package)
    match = re.search(r"^Version: (\S+)", out, re.M)
    if not match:
        raise BuildError("apt-cache show %s: no version (apt-get update?)" % package)
    return match.group(1)


def kernel_package():
    """The package linux-image-amd64 depends on, e.g. linux-image-6.1.0-57-amd64."""
    out = run("apt-cache", "depends", KERNEL_META)
    match = re.search(r"^\s*Depends: (linux-image-\S+)", out, re.M)
    if not match:
        raise BuildError("apt-cache depends %s: no linux-image dependency:\n%s" % (KERNEL_META, out))
    return match.group(1)


def _unpacked(cache, package):
    """The package's files, from apt-get download + dpkg-deb -x, in CACHE/pkg/NAME_VERSION."""
    version = _candidate(package)

    def make(partial):
        debs = tempfile.mkdtemp(dir=os.path.dirname(partial))
        try:
            run("apt-get", "download", package, cwd=debs)
            deb, = [os.path.join(debs, f) for f in os.listdir(debs) if f.endswith(".deb")]
            run("dpkg-deb", "-x", deb, partial)
        finally:
            shutil.rmtree(debs, ignore_errors=True)
    os.makedirs(os.path.join(cache, "pkg"), exist_ok=True)
    return _cached(cache, os.path.join("pkg", "%s_%s" % (package, version.replace(":", "%3a"))), make), version


# --- the initramfs ---------------------------------------------------------------------------

class Cpio:
    """A cpio archive in the kernel's "newc" format, written here so that device nodes and root
    ownership need neither root nor mknod on the host."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 0
        self.names = set()

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.out.write(header + b"\0" * (-len(header) % 4))
        self.out.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):  # parents first, each once
            sub = "/".join(parts[:i])
            if sub not in self.names:
                self.names.add(sub)
                self._entry(sub, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o644):
        name = name.strip("/")
        if "/" in name:
            self.dir(os.path.dirname(name))
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        if "/" in name.strip("/"):
            self.dir(os.path.dirname(name.strip("/")))
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor):
        self.dir(os.path.dirname(name.strip("/")))
        self._entry(name.strip("/"), stat.S_IFCHR | 0o600, rdev=(major, minor))

    def close(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def module_order(modules_dir, wanted):
    """The .ko paths (relative to modules_dir) of wanted and their dependencies, each after what
    it needs; a wanted module this kernel has built in (or lacks) is left out."""
    deps, by_name = {}, {}
    with open(os.path.join(modules_dir, "modules.dep")) as f:
        for line in f:
            path, _, needs = line.partition(":")
            deps[path] = needs.split()
            by_name[os.path.basename(path).split(".ko")[0].replace("-", "_")] = path
    order = []

    def visit(path):
        if path not in order:
            for need in reversed(deps[path]):  # modules.dep lists the deepest dependency last
                visit(need)
            order.append(path)
    for name in wanted:
        if name in by_name:
            visit(by_name[name])
    return order


def _libraries(binary, lib_dirs):
    """{path in the initramfs: file on the host} of the shared libraries binary needs (ldd)."""
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(lib_dirs))
    libs = {}
    for line in run("ldd", binary, env=env).splitlines():
        line = line.strip()
        if "not found" in line:
            raise BuildError("%s: %s" % (binary, line))
        match = re.match(r"(\S+) => (/\S+)", line) or re.match(r"(/\S+)", line)
        if not match:
            continue  # linux-vdso
        if match.re.groups == 2:
            libs["lib/x86_64-linux-gnu/" + match.group(1)] = match.group(2)
        else:  # the dynamic loader, asked for by its absolute path
            libs[match.group(1).lstrip("/")] = match.group(1)
    return libs


def _busybox_applets(busybox):
    return run(busybox, "--list").split()


def initiator_tools(packages, lib_dirs):
    """{path in the guest: (file on the host, mode)} of the initiator's programs, which the
    initramfs and the root (bmi-paths) both have: iscsistart and its libraries (libcrypto for CHAP,
    libkmod, ...) at the paths ld.so searches; multipath and kpartx, their libraries and
    libmultipath's plug-ins."""
    iscsistart = os.path.join(packages["open-iscsi"], "sbin", "iscsistart")
    tools = {"bin/iscsistart": (iscsistart, 0o755)}
    libs = _libraries(iscsistart, lib_dirs)
    for package, program in MULTIPATH_PROGRAMS:
        host = os.path.join(packages[package], program)
        tools["bin/" + os.path.basename(program)] = (host, 0o755)
        libs.update(_libraries(host, lib_dirs))
    for plugin in MULTIPATH_PLUGINS:
        host = os.path.join(packages["multipath-tools"], "lib", "multipath", plugin)
        tools["lib/multipath/" + plugin] = (host, 0o755)
        libs.update(_libraries(host, lib_dirs))
    tools.update({inside: (host, 0o755) for inside, host in libs.items()})
    return tools


def make_initramfs(kernel_dir, kernel_version, busybox, packages, lib_dirs):
    """The initramfs (gzip'd newc cpio) as bytes, and the modules it loads.  packages: {guest
    package: where it is unpacked}; lib_dirs: where those have shared libraries (ldd looks there
    before the host's)."""
    archive = Cpio()
    for d in ("dev", "proc", "sys", "newroot", "tmp", "run", "etc/iscsi", "etc/multipath", "var/lock"):
        archive.dir(d)
    archive.chardev("dev/console", 5, 1)  # init's stdio before devtmpfs is mounted
    archive.chardev("dev/null", 1, 3)
    archive.file("init", INITRAMFS_INIT.replace("@LABEL@", ROOT_LABEL).replace(
        "@RECOVERY_TMO@", str(RECOVERY_TMO)).encode(), 0o755)
    archive.file("bin/busybox", _read(busybox), 0o755)
    for applet in _busybox_applets(busybox):
        if applet != "busybox":
            archive.symlink("bin/" + applet, "busybox")
    for inside, (host, mode) in sorted(initiator_tools(packages, lib_dirs).items()):
        archive.file(inside, _read(host), mode)
    archive.file("etc/multipath.conf", MULTIPATH_CONF.encode())
    # an empty iscsid.conf: iscsistart takes its defaults and everything else from the iBFT
    archive.file("etc/iscsi/iscsid.conf", b"")
    archive.file("etc/iscsi/initiatorname.iscsi", b"")
    modules_dir = os.path.join(kernel_dir, "lib", "modules", kernel_version)
    names = []
    for path in module_order(modules_dir, MODULES):
        name = os.path.basename(path).split(".ko")[0]
        if not path.endswith(".ko"):
            raise BuildError("%s is compressed: busybox insmod loads plain .ko only" % path)
        archive.file("lib/modules/%s.ko" % name, _read(os.path.join(modules_dir, path)))
        names.append(name)
    archive.file("etc/modules", "\n".join(names).encode() + b"\n")
    # mtime 0 in the gzip header too: the same inputs give the same bytes
    return gzip.compress(archive.close(), compresslevel=9, mtime=0), names


def _recipe_hash():
    """What the cached kernel+initramfs depend on besides package versions."""
    return hashlib.sha256(json.dumps([INITRAMFS_INIT, MODULES, ROOT_LABEL, MULTIPATH_CONF, MULTIPATH_PROGRAMS,
                                           MULTIPATH_PLUGINS, RECOVERY_TMO, 3]).encode()).hexdigest()[:12]


def boot_files(cache=CACHE):
    """Build (once) and return {"vmlinuz", "initrd", "kernel_version", ...} from the cache."""
    with _locked(cache):
        kpkg = kernel_package()
        kernel_dir, kversion = _unpacked(cache, kpkg)
        unpacked = {p: _unpacked(cache, p) for p in GUEST_PACKAGES}
        kernel_version = kpkg[len("linux-image-"):]
        modules_dir = os.path.join(kernel_dir, "lib", "modules", kernel_version)
        if not os.path.exists(os.path.join(modules_dir, "modules.dep")):
            # Debian makes modules.dep in postinst; we never install, so make it in the cache
            run("depmod", "-b", kernel_dir, kernel_version)
        versions = {kpkg: kversion, **{p: v for p, (_, v) in unpacked.items()}}
        key = hashlib.sha256(json.dumps(sorted(versions.items())).encode()).hexdigest()[:12]
        name = "boot-%s-%s-%s" % (kernel_version, key, _recipe_hash())

        def make(partial):
            busybox = os.path.join(unpacked["busybox-static"][0], "bin", "busybox")
            lib_dirs = [os.path.join(d, sub) for d, _ in unpacked.values()
                        for sub in ("lib", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
                        if os.path.isdir(os.path.join(d, sub))]
            initrd, modules = make_initramfs(kernel_dir, kernel_version, busybox,
                                             {p: d for p, (d, _) in unpacked.items()}, lib_dirs)
            with open(os.path.join(partial, "initrd.img"), "wb") as f:
                f.write(initrd)
            shutil.copyfile(os.path.join(kernel_dir, "boot", "vmlinuz-" + kernel_version),
                            os.path.join(partial, "vmlinuz"))
            shutil.copy(busybox, os.path.join(partial, "busybox"))  # with its mode
            for inside, (host, mode) in initiator_tools({p: d for p, (d, _) in unpacked.items()}, lib_dirs).items():
                os.makedirs(os.path.dirname(os.path.join(partial, "tools", inside)), exist_ok=True)
                shutil.copyfile(host, os.path.join(partial, "tools", inside))
                os.chmod(os.path.join(partial, "tools", inside), mode)
            with open(os.path.join(partial, "info.json"), "w") as f:
                json.dump({"kernel_version": kernel_version, "packages": versions,
                           "modules": modules}, f, indent=1)
        boot = _cached(cache, name, make)
    with open(os.path.join(boot, "info.json")) as f:
        info = json.load(f)
    info.update(vmlinuz=os.path.join(boot, "vmlinuz"), initrd=os.path.join(boot, "initrd.img"),
                busybox=os.path.join(boot, "busybox"), tools=os.path.join(boot, "tools"), cache=boot)
    return info


# --- the disk --------------------------------------------------------------------------------

def _stage_root(directory, boot, root_files):
    """The root filesystem's tree, for mke2fs -d: busybox, its applets, the initiator's tools and
    bmi-paths, /init, /boot, and root_files ({path in the root: text})."""
    shutil.copytree(boot["tools"], directory, dirs_exist_ok=True)
    for d in ("bin", "boot", "dev", "proc", "sys", "tmp", "root", "etc/multipath", "etc/iscsi", "mnt"):
        os.makedirs(os.path.join(directory, d), exist_ok=True)
    shutil.copyfile(boot["busybox"], os.path.join(directory, "bin", "busybox"))
    os.chmod(os.path.join(directory, "bin", "busybox"), 0o755)
    for applet in _busybox_applets(boot["busybox"]):
        if applet != "busybox":
            os.symlink("busybox", os.path.join(directory, "bin", applet))
    os.symlink("bin", os.path.join(directory, "sbin"))
    with open(os.path.join(directory, "init"), "w") as f:
        f.write(ROOT_INIT.replace("@PROMPT@", PROMPT))
    os.chmod(os.path.join(directory, "init"), 0o755)
    texts = {"etc/hostname": "bmi-node\n", "etc/multipath.conf": MULTIPATH_CONF, "etc/iscsi/iscsid.conf": "",
             "etc/iscsi/initiatorname.iscsi": "", "bin/bmi-paths": PATHS_KEEPER}
    for name, text in texts.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text.replace("@PATHS_SECONDS@", str(PATHS_SECONDS)).replace("@PATHS_LOG@", PATHS_LOG)
                    .replace("@RECOVERY_TMO@", str(RECOVERY_TMO)))
    os.chmod(os.path.join(directory, "bin", "bmi-paths"), 0o755)
    shutil.copyfile(boot["vmlinuz"], os.path.join(directory, "boot", "vmlinuz"))
    shutil.copyfile(boot["initrd"], os.path.join(directory, "boot", "initrd.img"))
    for name, text in root_files.items():
        with open(os.path.join(directory, name.lstrip("/")), "w") as f:
            f.write(text)


def _make_esp(image, offset, size, boot, firmware, cmdline, scratch):
    """Partition 1: FAT16 written in place at offset (mkfs.vfat --offset, mtools' image@@offset),
    with systemd-boot for UEFI and syslinux for BIOS."""
    run("mkfs.vfat", "-F", "16", "-n", "BMI-ESP", "--offset", offset // SECTOR, image, size // 1024)
    fat = "%s@@%d" % (image, offset)
    files = {"vmlinuz": boot["vmlinuz"], "initrd.img": boot["initrd"]}
    if firmware in ("uefi", "both"):
        for name, text in (("loader.conf", LOADER_CONF), ("bmi.conf", LOADER_ENTRY.format(cmdline=cmdline))):
            with open(os.path.join(scratch, name), "w") as f:
                f.write(text)
        files.update({"EFI/BOOT/BOOTX64.EFI": SYSTEMD_BOOT,
                      "loader/loader.conf": os.path.join(scratch, "loader.conf"),
                      "loader/entries/bmi.conf": os.path.join(scratch, "bmi.conf")})
        for d in ("EFI", "EFI/BOOT", "loader", "loader/entries"):
            run("mmd", "-i", fat, "::" + d)
    if firmware in ("bios", "both"):
        with open(os.path.join(scratch, "syslinux.cfg"), "w") as f:
            f.write(SYSLINUX_CFG.format(cmdline=cmdline))
        files["syslinux.cfg"] = os.path.join(scratch, "syslinux.cfg")
    for inside, host in files.items():
        run("mcopy", "-i", fat, host, "::" + inside)
    if firmware in ("bios", "both"):
        # writes the FAT boot sector and ldlinux.sys/ldlinux.c32, through mtools: no mount
        run("syslinux", "--offset", offset, "--install", image)


def build_os_image(path, size=1 << 30, firmware="both", fmt="raw", cmdline=CMDLINE, cache=CACHE, root_files=None):
    """Write the test OS disk image to path; return a dict describing it.

    firmware: "both" (one image for BIOS and UEFI), "bios" or "uefi" (leave the other's loader
    out).  fmt: "raw" (sparse) or "qcow2" (converted by qemu-img).  root_files: {path: text} of
    files the root filesystem has besides, in directories it has (/etc, /root): two images that
    differ by a file.  The kernel and initramfs come from the cache (boot_files); the disk is made
    anew.
    """
    if firmware not in ("both", "bios", "uefi"):
        raise ValueError("firmware must be both, bios or uefi")
    if fmt not in ("raw", "qcow2"):
        raise ValueError("fmt must be raw or qcow2")
    if size % MiB or size < ESP_SIZE + 64 * MiB:
        raise ValueError("size must be a multiple of 1 MiB, at least %d MiB" % (ESP_SIZE // MiB + 64))
    boot = boot_files(cache)
    path = os.fspath(path)
    raw = path if fmt == "raw" else path + ".raw.partial"
    esp_start = MiB
    root_start = esp_start + ESP_SIZE
    root_size = size - root_start - MiB  # the last MiB holds the backup GPT
    with tempfile.TemporaryDirectory(prefix="osimage-") as scratch:
        with open(raw, "wb") as f:
            f.truncate(size)  # sparse: only what the filesystems write takes space
        s = SECTOR
        run("sgdisk",
            "-n", "1:%d:%d" % (esp_start // s, root_start // s - 1), "-t", "1:ef00", "-c", "1:ESP",
            "-A", "1:set:2",  # legacy BIOS bootable: the partition gptmbr.bin boots
            "-n", "2:%d:%d" % (root_start // s, (root_start + root_size) // s - 1),
            "-t", "2:8300", "-c", "2:" + ROOT_LABEL, raw)
        if firmware in ("bios", "both"):
            with open(GPTMBR, "rb") as f:
                code = f.read(440)  # boot code only: the partition table after it stays
            with open(raw, "r+b") as f:
                f.write(code)
        root = os.path.join(scratch, "root")
        _stage_root(root, boot, root_files or {})
        # -E offset writes the filesystem in place; nodiscard keeps mke2fs from punching the file
        run("mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-d", root,
            "-E", "offset=%d,nodiscard" % root_start, raw, "%dk" % (root_size // 1024))
        _make_esp(raw, esp_start, ESP_SIZE, boot, firmware, cmdline, scratch)
        run("sgdisk", "-v", raw)  # the filesystems left the GPT whole
    if fmt == "qcow2":
        try:
            run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path)
        finally:
            os.unlink(raw)
    return {"path": path, "format": fmt, "size": size, "firmware": firmware,
            "kernel_version": boot["kernel_version"], "packages": boot["packages"],
            "modules": boot["modules"], "cmdline": cmdline, "root_label": ROOT_LABEL,
            "prompt": PROMPT, "vmlinuz": boot["vmlinuz"], "initrd": boot["initrd"],
            "partitions": {"esp": (esp_start, ESP_SIZE), "root": (root_start, root_size)}}


if __name__ == "__main__":
    import sys

    # python3 -m testkit.osimage PATH [SIZE]: qcow2 if PATH ends in .qcow2, else raw
    print(json.dumps(build_os_image(sys.argv[1], *(int(a) for a in sys.argv[2:3]),
                                    fmt="qcow2" if sys.argv[1].endswith(".qcow2") else "raw"), indent=1))
