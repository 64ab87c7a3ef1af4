"""bmi-rpc name server: where the main server registers and the client looks it up."""
import logging
import sys

import config
from bmi import logs, pyrosetup


def main(argv=None):
    settings = config.from_command_line("nameserver", "the bmi-rpc name server (Pyro4)", config.NAME_SERVER, argv)
    logs.configure("nameserver", settings)
    try:
        pyrosetup.configure(settings, create_key=True)
        uri, daemon = pyrosetup.start_name_server(settings)
    except (OSError, ValueError) as err:
        sys.exit("nameserver: %s" % (err.strerror if isinstance(err, OSError) and err.strerror else err))
    pyrosetup.serve(daemon, uri, logging.getLogger("bmi.nameserver"))


if __name__ == "__main__":
    main()
