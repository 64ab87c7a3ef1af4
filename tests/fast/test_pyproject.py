"""pyproject.toml against the checkout: the package needs what .venv has, and each of its commands
is a function there (tests/test_package.py installs it and runs them)."""
import importlib
import os
import tomllib

from config import ROOT


def project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_the_package_pins_what_requirements_txt_pins():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pinned = set(f.read().splitlines())
    dependencies = project()["dependencies"]
    assert dependencies and set(dependencies) <= pinned


def test_each_command_is_a_function_of_the_checkout():
    scripts = project()["scripts"]
    assert {"bmi", "bmi-nameserver", "bmi-mainserver"} <= set(scripts)
    for command, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), command
