"""bmi-rpc name server: where the main server registers and the client looks it up."""
import logging
import sys

import config
from bmi import pyrosetup


def main(argv=None):
    settings = config.from_command_line("nameserver", "the bmi-rpc name server (Pyro4)", config.NAME_SERVER, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nameserver %(levelname)s %(message)s")
    try:
        pyrosetup.configure(settings, create_key=True)
    except (OSError, ValueError) as err:
        sys.exit("nameserver: %s" % err)

    uri, daemon = pyrosetup.start_name_server(settings)
    pyrosetup.serve(daemon, uri, logging.getLogger("bmi.nameserver"))


if __name__ == "__main__":
    main()
