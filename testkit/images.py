"""Disk image files for tests and the benchmark."""
import os


def make_image_file(path, size=4 * 1024 * 1024):
    """A raw disk image file of random bytes; returns them."""
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data
