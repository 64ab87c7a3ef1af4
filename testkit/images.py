"""Disk image files for tests and the benchmark: random, sparse with marks, in qemu-img's formats."""
import os
import subprocess

from testkit.daemons import require_command

MiB = 1024 * 1024
GiB = 1024 * MiB


def make_image_file(path, size=4 * MiB):
    """A raw disk image file of random bytes; returns them."""
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def make_random_file(path, size, chunk=64 * MiB):
    """A raw image of size random bytes, written a chunk at a time (for sizes a test does not hold)."""
    with open(path, "wb") as f:
        for offset in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - offset)))


def make_sparse_image(path, size, marks):
    """A sparse raw image of size bytes, holes but for marks: {offset: (byte, length)}."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, (byte, length) in marks.items():
            f.seek(offset)
            f.write(bytes([byte]) * length)


def convert(source, target, fmt, *options):
    """source (raw) converted by qemu-img into target, in fmt (qcow2, vmdk, ...) with options."""
    require_command("qemu-img", "qemu-utils")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(source), str(target)],
                   check=True, capture_output=True, timeout=300)
    return target
