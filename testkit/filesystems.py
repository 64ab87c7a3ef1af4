"""Small filesystems that fill up, for tests of what a full disk does."""
import contextlib
import errno
import os
import subprocess

from testkit.images import MiB


def fill_up(path):
    """Write a file that takes every byte its filesystem has left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (MiB, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs(directory, size):
    """A tmpfs of size bytes mounted on directory (made if missing), unmounted afterwards."""
    os.makedirs(directory, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk,mode=0700" % (size // 1024), "tmpfs", directory],
                   check=True, timeout=30)
    try:
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True, timeout=30)
