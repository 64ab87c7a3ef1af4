"""The one way bmi-rpc writes a file that must appear whole or not at all, readable by root alone."""
import os
import tempfile


def write_private(path, text, replace=True, sync=True):
    """Write text to path, mode 0600: into a hidden partial file beside it, then renamed into place,
    so a reader or a crash sees the old file or the new one, never half of one.

    replace=False links instead of renaming: a path that exists already stays as it is, and
    FileExistsError says so. sync=False skips the flush to disk (for what a restart rewrites anyway).
    A failure raises OSError naming path, and leaves no partial file.
    """
    directory, name = os.path.split(path)
    try:
        fd, partial = tempfile.mkstemp(dir=directory or ".", prefix="." + name + ".", suffix=".partial")
    except OSError as err:
        raise OSError(err.errno, "cannot write %s: %s" % (path, err.strerror)) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if replace:
            os.replace(partial, path)
        else:
            os.link(partial, path)
    except FileExistsError:
        raise
    except OSError as err:
        raise OSError(err.errno, "cannot write %s: %s" % (path, err.strerror)) from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def remove_partials(directory):
    """Remove the partial files a crash left in directory."""
    for name in os.listdir(directory):
        if name.startswith(".") and name.endswith(".partial"):
            os.unlink(os.path.join(directory, name))
