"""Values in the scripts are data, never program text: file names of every byte reach lib.sh's
open_image (run here directly: it needs qemu-img, no daemon), which must name the file as given,
run nothing the name spells, and open the very file named (a trailing newline included)."""
import os
import subprocess

import hypothesis
import pytest
from hypothesis import HealthCheck, strategies as st

from config import ROOT
from testkit.daemons import require_command

LIB = os.path.join(ROOT, "scripts", "lib.sh")
# a qcow2 header qemu-img refuses, with a message naming the file it opened (/dev/fd/3)
BROKEN = b"QFI\xfb\x00\x00\x00\x03" + b"\xff" * 1016
QEMU_SAYS = b"Could not open '%s': Unsupported cluster size: 2^4294967295"

# Names that change a sed program built around them (s|...|NAME|g), or a shell that reads them.
EXPLOITS = [
    b"a|;1e touch pwned\n#",          # sed: end the s command, then run "touch pwned" (e command)
    b"x|e", b"x|e;", b"x|w pwned", b"x|g;e touch pwned\n", b"&", b"a&b\\1\\&", b"\\", b"x\\|y",
    b"$(touch pwned)", b"`touch pwned`", b"a;touch pwned", b"'", b'"', b"a\nb", b"\n", b"a\n", b"a\n\n",
    b"-e", b"-n", b"--", b"%s%n%d", b"\\n\\c", b"*", b"?", b"[a]", b"~", b"!", b"#", b"{a,b}", b"\r", b"\t",
    b"/dev/fd/3", b"\xff\xfe", b"\x1b[31m",
]
SHELL_AND_SED = b"/&\\|;$`'\"\n#!*?[]{}()<>~% \t\rew"   # every metacharacter, and sed's flags e and w


def component():
    """One file name: random bytes, metacharacters, or a known exploit (no / or NUL: those split paths)."""
    raw = st.one_of(st.binary(min_size=1, max_size=30),
                    st.lists(st.sampled_from([bytes([c]) for c in SHELL_AND_SED] + [b"a", b"e", b"touch pwned"]),
                             min_size=1, max_size=12).map(b"".join),
                    st.sampled_from(EXPLOITS))
    return raw.map(lambda b: b.replace(b"\0", b"_")).filter(lambda b: b not in (b".", b".."))


def paths():
    """A path below the test's directory: / anywhere in it, as directories."""
    return st.lists(component(), min_size=1, max_size=3).map(
        lambda parts: [p for part in parts for p in part.split(b"/") if p not in (b"", b".", b"..")] or [b"x"])


def open_image(path, cwd):
    """Run open_image PATH in bash as the scripts do; (exit code, stdout, stderr) as bytes."""
    done = subprocess.run(["bash", "-c", 'source "$1"; open_image "$2"; printf "%s %s\\n" "$image_format" "$image_size"',
                           "bash", LIB, path], cwd=cwd, capture_output=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8", "BMI_IMAGE_SIZE_CAP": str(1 << 44)})
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    require_command("qemu-img", "qemu-utils")
    require_command("jq", "jq")
    return tmp_path_factory.mktemp("names")


SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@hypothesis.settings(max_examples=150, deadline=None, database=None, suppress_health_check=SLOW)
@hypothesis.given(parts=paths(), unreadable=st.booleans())
@hypothesis.example(parts=[b"a|;1e touch pwned\n#"], unreadable=True)
@hypothesis.example(parts=[b"x|w pwned"], unreadable=True)
@hypothesis.example(parts=[b"a&b\\1\\&"], unreadable=True)
@hypothesis.example(parts=[b"disk.raw\n"], unreadable=False)
@hypothesis.example(parts=[b"d\n", b"disk.raw\n\n"], unreadable=False)
def test_a_file_name_is_data_and_names_the_file_it_names(scratch, parts, unreadable):
    work = scratch / ("run-%d" % len(os.listdir(scratch)))
    os.mkdir(work)
    directory = os.path.join(os.fsencode(work), *parts[:-1]) if len(parts) > 1 else os.fsencode(work)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, parts[-1])
    hypothesis.assume(not os.path.isdir(path))
    # the file named, and its neighbour with the trailing newlines cut off (command substitution's cut)
    neighbour = path.rstrip(b"\n")
    if neighbour != path and not neighbour.endswith(b"/"):
        hypothesis.assume(not os.path.isdir(neighbour))
        with open(neighbour, "wb") as f:
            f.write(b"\0" * 4096)
    with open(path, "wb") as f:
        f.write(BROKEN if unreadable else b"\1" * 1536)
    before = sorted(os.walk(work))

    code, out, err = open_image(path, cwd=work)

    if unreadable:
        assert (code, out) == (1, b"")
        assert err == b"%s is not a disk image qemu-img can read: %s\n" % (path, QEMU_SAYS % path)
    else:
        assert (code, out, err) == (0, b"raw 1536\n", b"")   # that very file, not its neighbour
    assert sorted(os.walk(work)) == before   # nothing ran that the name spells
    assert not os.path.exists(os.path.join(os.fsencode(work), b"pwned"))
