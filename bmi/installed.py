"""bmi-install-service, the installed package's command (pyproject.toml) for tools/install-service:
that script, told which commands the units run and which Python writes the settings file."""
import os
import sys

import config


def install_service():
    script = os.path.join(config.ROOT, "tools", "install-service")
    commands = os.path.dirname(os.path.abspath(sys.argv[0]))   # where pip put this command, and its others
    os.execv(script, [script, "--commands", commands, "--python", sys.executable] + sys.argv[1:])
