"""bmi-rpc name server: where the main server registers and the client looks it up."""
import argparse
import logging
import sys

import config
from bmi import pyrosetup


def main(argv=None):
    parser = argparse.ArgumentParser(description="bmi-rpc name server (Pyro4)")
    for flag, name in pyrosetup.COMMON_FLAGS[:2]:
        parser.add_argument(flag, dest=name, help="overrides %s" % name)
    settings = config.Settings(**vars(parser.parse_args(argv)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nameserver %(levelname)s %(message)s")
    try:
        pyrosetup.configure(settings, create_key=True)
    except (OSError, ValueError) as err:
        sys.exit("nameserver: %s" % err)

    uri, daemon = pyrosetup.start_name_server(settings)
    pyrosetup.serve(daemon, uri, logging.getLogger("bmi.nameserver"))


if __name__ == "__main__":
    main()
