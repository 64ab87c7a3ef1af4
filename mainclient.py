"""bmi-rpc client: python mainclient.py [--json] [--ns-host H] [--ns-port P] OPERATION ARGS...

Exit codes: 0 done; 1 the server refused or the operation failed; 2 usage error;
3 the name server or the main server cannot be reached.
"""
import json
import sys

import Pyro4
import Pyro4.errors

import config
from bmi import names, pyrosetup

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# operation: (arguments, what it does)
OPERATIONS = {
    "import_image": (["IMAGE", "PATH"], "copy the raw disk image file PATH (on the server host) in as golden image IMAGE"),
    "provision": (["IMAGE", "NODE"], "give NODE a copy-on-write clone of IMAGE, its iSCSI target and iPXE boot script"),
    "detach_node": (["NODE"], "take NODE's target, disk and boot script away (--force: even while it is in use)"),
    "create_snapshot": (["NODE", "SNAPSHOT"], "turn NODE's current disk into the new golden image SNAPSHOT"),
    "list_all_images": ([], "list the golden images and the provisioned nodes"),
    "ping": ([], "check that the main server answers"),
}
CHECKS = {"IMAGE": names.check_image, "SNAPSHOT": names.check_image, "NODE": names.check_node,
          "PATH": names.check_path}


class UsageError(Exception):
    pass


def usage():
    lines = [__doc__.splitlines()[0], "", "operations:"]
    for operation, (arguments, text) in OPERATIONS.items():
        flag = " [--force]" if operation == "detach_node" else ""
        lines.append("  %-40s %s" % (" ".join([operation] + arguments) + flag, text))
    lines += ["", "options:", "  --json          print the result as one JSON object",
              "  --ns-host HOST  name server host (BMI_NS_HOST)",
              "  --ns-port PORT  name server port (BMI_NS_PORT)"]
    return "\n".join(lines)


def parse(argv):
    """Return (operation, arguments, keyword arguments, print as JSON, settings overrides)."""
    words, overrides, as_json, force = [], {}, False, False
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            as_json = True
        elif arg == "--force":
            force = True
        elif arg in ("--ns-host", "--ns-port"):
            value = next(args, None)
            if value is None:
                raise UsageError("%s needs a value" % arg)
            overrides["BMI_" + arg[2:].upper().replace("-", "_")] = value
        elif arg.startswith("-"):
            raise UsageError("unknown option %r (see --help)" % arg)
        else:
            words.append(arg)
    if not words:
        raise UsageError("no operation given (see --help)")
    operation, arguments = words[0], words[1:]
    if operation not in OPERATIONS:
        raise UsageError("unknown operation %r: one of %s" % (operation, ", ".join(OPERATIONS)))
    expected = OPERATIONS[operation][0]
    if len(arguments) != len(expected):
        raise UsageError("usage: %s" % " ".join([operation] + expected))
    if force and operation != "detach_node":
        raise UsageError("--force goes with detach_node only")
    for kind, value in zip(expected, arguments):
        try:
            CHECKS[kind](value)
        except ValueError as err:
            raise UsageError(str(err))
    return operation, arguments, {"force": True} if force else {}, as_json, overrides


def show(operation, result):
    """The result for a person to read."""
    if operation == "provision":
        return "\n".join(["provisioned node %(node)s from image %(image)s" % result] +
                         ["  %-12s %s" % (key + ":", result[key]) for key in ("iqn", "portal", "lun", "boot_script")])
    if operation == "detach_node":
        return "detached node %(node)s (image %(image)s, target %(iqn)s)" % result
    if operation == "create_snapshot":
        return "created golden image %(image)s from node %(node)s" % result
    if operation == "import_image":
        return "imported golden image %(image)s from %(path)s" % result
    if operation == "ping":
        return result
    lines = ["golden images:"] + ["  %-30s %14d bytes" % (i["name"], i["size_bytes"]) for i in result["images"]]
    lines += ["provisioned nodes:"] + ["  %-30s %-30s %s" % (n["node"], n["image"], n["iqn"]) for n in result["nodes"]]
    return "\n".join(lines)


def call(settings, operation, arguments, options):
    where = "%s:%s" % (settings.BMI_NS_HOST, settings.BMI_NS_PORT)
    try:
        with pyrosetup.locate_ns(settings) as ns:
            uri = ns.lookup(settings.BMI_OBJECT_NAME)
    except Pyro4.errors.PyroError as err:
        refused(err, settings)
        if "unknown name" in str(err):
            raise ConnectionError("the main server is not registered with the name server at %s" % where)
        raise ConnectionError("cannot reach the name server at %s" % where)
    try:
        with pyrosetup.proxy(uri) as server:
            return getattr(server, operation)(*arguments, **options)
    except Pyro4.errors.CommunicationError as err:
        refused(err, settings)
        raise ConnectionError("cannot reach the main server at %s:%s (%s)" % (uri.host, uri.port, err))


def refused(err, settings):
    """Say so plainly when the servers refused our messages for their authentication."""
    if "hmac" in "%s %s" % (err, err.__cause__):
        raise ConnectionError("authentication failed: the servers refused the key in %s" % settings.BMI_KEY_FILE)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return EXIT_OK if argv else EXIT_USAGE
    try:
        operation, arguments, options, as_json, overrides = parse(argv)
        settings = config.Settings(**overrides)
    except (UsageError, ValueError) as err:
        print("mainclient: %s" % err, file=sys.stderr)
        return EXIT_USAGE
    try:
        pyrosetup.configure(settings)
    except (OSError, ValueError) as err:   # no usable key file, or TLS half configured
        print("mainclient: authentication failed: %s" % err, file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        result = call(settings, operation, arguments, options)
    except ConnectionError as err:
        print("mainclient: %s" % err, file=sys.stderr)
        return EXIT_UNREACHABLE
    except (ValueError, TypeError) as err:   # the server's own check of the arguments
        print("mainclient: %s" % err, file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        print("mainclient: %s failed: %s" % (operation, err), file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, sort_keys=True) if as_json else show(operation, result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
