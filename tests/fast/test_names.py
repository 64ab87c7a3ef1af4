"""Names and paths: what the client and the server accept before any command runs."""
import pytest

from bmi import names


@pytest.mark.parametrize("name", ["golden", "Debian-12.raw_v2", "a", "A" * 64, "0"])
def test_valid_image_names(name):
    assert names.check_image(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "_partial.x", "a/b", "a b", "a" * 65, "golden\n", "x;y",
                                  "\u0261olden", None, 1])
def test_invalid_image_names(name):
    with pytest.raises(ValueError, match="invalid image name"):
        names.check_image(name)


@pytest.mark.parametrize("name", ["node-a", "n", "10.0.0.1", "a" * 63])
def test_valid_node_names(name):
    assert names.check_node(name) == name


@pytest.mark.parametrize("name", ["Node-A", "node_a", "-rf", "a" * 64, "node-a\n", "node-\u0430", "", ".a"])
def test_invalid_node_names(name):
    with pytest.raises(ValueError, match="invalid node name"):
        names.check_node(name)


@pytest.mark.parametrize("path, valid", [("/srv/x.raw", True), ("relative.raw", False), ("/a\0b", False),
                                         ("/" + "x" * 4095, True), ("/" + "x" * 4096, False), (None, False)])
def test_paths(path, valid):
    if valid:
        assert names.check_path(path) == path
    else:
        with pytest.raises(ValueError, match="absolute path"):
            names.check_path(path)
