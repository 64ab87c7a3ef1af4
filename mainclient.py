"""bmi-rpc client: python mainclient.py [OPTIONS] OPERATION ARGS...

Exit codes: 0 done; 1 the operation failed; 2 usage error or bad input; 3 the name server or the
main server cannot be reached; 4 not found; 5 already exists; 6 in use; 7 refused; 8 something the
server needs did not answer in time.
"""
import collections
import json
import random
import sys
import time

import Pyro4
import Pyro4.errors

import config
from bmi import errors, names, pyrosetup

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3   # and each errors kind's exit_code

# operation: (arguments, what it does)
OPERATIONS = {
    "import_image": (["IMAGE", "PATH"], "copy the disk image file PATH (on the server host; raw, qcow2, vmdk, vdi "
                                        "or vhdx) in as golden image IMAGE, stored raw"),
    "provision": (["IMAGE", "NODE"], "give NODE a copy-on-write clone of IMAGE, its iSCSI target and iPXE boot script; "
                                     "--mac MAC (one for each of its network cards) lets the boot service know it"),
    "detach_node": (["NODE"], "take NODE's target, disk and boot script away"),
    "create_snapshot": (["NODE", "SNAPSHOT"], "turn NODE's current disk into the new golden image SNAPSHOT"),
    "delete_image": (["IMAGE"], "remove the golden image IMAGE (refused while nodes are provisioned from it)"),
    "list_all_images": ([], "list the golden images, the provisioned nodes and the gateways"),
    "remove_gateway": (["GATEWAY"], "forget a gateway that is gone for good (refused while it answers)"),
    "ping": ([], "check that the main server answers"),
    "status": ([], "show whether the name server, every gateway and what each needs (its tgtd, its storage or "
                   "Ceph, its boot service) are up; exit code 8 when something is down"),
}
CHECKS = {"IMAGE": names.check_image, "SNAPSHOT": names.check_image, "NODE": names.check_node,
          "PATH": names.check_path, "GATEWAY": names.check_gateway}
Call = collections.namedtuple("Call", "operation arguments options as_json overrides gateway")


class UsageError(Exception):
    pass


class Unreachable(Exception):
    pass


OPTIONS = [("--json", "print the result as one JSON object"),
           ("--ns-host HOST", "the name server's address (sets BMI_NS_HOST)"),
           ("--ns-port PORT", "the name server's port (sets BMI_NS_PORT)"),
           ("--gateway NAME", "call that gateway (by default, any that answers)"),
           ("--mac MAC", "provision: a MAC address of the node's (again for each network card)"),
           ("-h, --help", "this help; after an operation, that operation's")]
VALUE_OPTIONS = {"--ns-host": "BMI_NS_HOST", "--ns-port": "BMI_NS_PORT", "--gateway": "gateway", "--mac": "macs"}
REPEATED = {"macs"}   # options given once for each value
FLAGS = {"--json", "--force"}


def usage(operation):
    flag = {"detach_node": " [--force]", "provision": " [--mac MAC]..."}.get(operation, "")
    return " ".join([operation] + OPERATIONS[operation][0]) + flag


def help_text(operation=None):
    if operation:
        lines = ["usage: mainclient.py [OPTIONS] " + usage(operation), "", OPERATIONS[operation][1]]
        if operation == "detach_node":
            lines.append("--force: even while an initiator is logged in to the node's target")
    else:
        lines = ["usage: mainclient.py [OPTIONS] OPERATION ARGS...", "",
                 "bmi-rpc client: calls one operation of the main server.", "", "operations:"]
        lines += ["  %-40s %s" % (usage(name), text) for name, (_, text) in OPERATIONS.items()]
    lines += ["", "options (before or after the operation; -- ends them):"]
    lines += ["  %-40s %s" % option for option in OPTIONS]
    if not operation:
        lines += ["", __doc__.split("\n\n", 1)[1].strip(), "", config.describe(config.CLIENT)]
    return "\n".join(lines)


def read_options(argv):
    """Split argv into (words, flags, settings overrides, help asked for, problems), as getopt_long
    does: options anywhere, --opt=value or --opt value, and -- ends them."""
    words, flags, overrides, wants_help, problems = [], set(), {}, False, []
    args = iter(argv)
    for arg in args:
        option, equals, value = arg.partition("=")
        if arg == "--":
            words.extend(args)
        elif arg in ("-h", "--help"):
            wants_help = True
        elif arg in FLAGS:
            flags.add(arg)
        elif option in VALUE_OPTIONS:
            value = value if equals else next(args, None)
            if value is None:
                problems.append("%s needs a value" % option)
            if VALUE_OPTIONS[option] in REPEATED:
                overrides.setdefault(VALUE_OPTIONS[option], []).append(value)
            else:
                overrides[VALUE_OPTIONS[option]] = value
        elif arg.startswith("-") and arg != "-":
            problems.append("unknown option %r (see --help)" % arg)
        else:
            words.append(arg)
    return words, flags, overrides, wants_help, problems


def parse(argv):
    """Return the Call argv asks for; its operation None when it asks for help."""
    words, flags, overrides, wants_help, problems = read_options(argv)
    gateway = overrides.pop("gateway", None)
    macs = overrides.pop("macs", [])
    if wants_help:   # whatever else is wrong
        return Call(None, words[:1], {}, False, {}, None)
    if problems:
        raise UsageError(problems[0])
    if not words:
        raise UsageError("no operation given (see --help)")
    operation, arguments = words[0], words[1:]
    if operation not in OPERATIONS:
        raise UsageError("unknown operation %r: one of %s" % (operation, ", ".join(OPERATIONS)))
    expected = OPERATIONS[operation][0]
    if len(arguments) != len(expected):
        raise UsageError("usage: mainclient.py %s" % usage(operation))
    if "--force" in flags and operation != "detach_node":
        raise UsageError("--force goes with detach_node only")
    if macs and operation != "provision":
        raise UsageError("--mac goes with provision only")
    options = {"force": True} if "--force" in flags else {}
    try:
        for kind, value in zip(expected + ["GATEWAY"], arguments + ([gateway] if gateway is not None else [])):
            CHECKS[kind](value)
        if macs:
            options["macs"] = list(names.check_macs(macs))
    except ValueError as err:
        raise UsageError(str(err))
    return Call(operation, arguments, options, "--json" in flags, overrides, gateway)


def show(operation, result):
    """The result for a person to read."""
    if operation == "provision":
        portals = ", ".join("%s (%s)" % (portal, gateway) for gateway, portal in sorted(result["portals"].items()))
        lines = ["provisioned node %(node)s from image %(image)s" % result] + [
            "  %-12s %s" % (key + ":", value) for key, value in (
                ("iqn", result["iqn"]), ("portal", result["portal"]), ("lun", result["lun"]),
                ("macs", ", ".join(result["macs"]) or "none (the boot service does not know it)"),
                ("boot_script", result["boot_script"]), ("exported at", portals))]
        if result["down"]:
            lines.append("  %-12s %s (not answering: they export it once they are back)" % ("down:", ", ".join(result["down"])))
        return "\n".join(lines)
    if operation == "remove_gateway":
        return "removed gateway %(gateway)s" % result
    if operation == "detach_node":
        return "detached node %(node)s (image %(image)s, target %(iqn)s)" % result
    if operation == "create_snapshot":
        return "created golden image %(image)s from node %(node)s" % result
    if operation == "import_image":
        return "imported golden image %(image)s from %(path)s" % result
    if operation == "delete_image":
        return "deleted golden image %(image)s" % result
    if operation == "ping":
        return result
    if operation == "status":
        lines = ["name server %s: up" % result["name server"]]
        for name, gateway in sorted(result["gateways"].items()):
            lines.append("gateway %s: %s%s" % (name, "up" if gateway["up"] else "DOWN",
                                               "" if "parts" in gateway else " (%s)" % gateway["detail"]))
            lines += ["  %-14s %s (%s)" % (part + ":", "up" if p["up"] else "DOWN", p["detail"])
                      for part, p in sorted(gateway.get("parts", {}).items())]
        return "\n".join(lines)
    lines = ["golden images:"] + ["  %-30s %14d bytes" % (i["name"], i["size_bytes"]) for i in result["images"]]
    lines += ["provisioned nodes:"] + ["  %-30s %-30s %s  at %s%s" % (
        n["node"], n["image"], n["iqn"], ", ".join(n["gateways"]), "  macs " + ", ".join(n["macs"]) if n["macs"] else "")
        for n in result["nodes"]]
    lines += ["gateways:"] + ["  %-30s %-30s %s" % (g["name"], g["portal"], "up" if g["up"] else "DOWN")
                              for g in result["gateways"]]
    return "\n".join(lines)


def causes(err):
    """err and what it was raised from, and so on: Pyro4 wraps what happened underneath."""
    while err is not None:
        yield err
        err = err.__cause__


def unreachable(err, what, where, settings):
    """The error to tell for a Pyro4 error met reaching what (the name server, the main server)."""
    for cause in causes(err):
        if isinstance(cause, Pyro4.errors.SecurityError):
            return Unreachable("authentication failed: the servers refused the key in %s" % settings.BMI_KEY_FILE)
        if isinstance(cause, (Pyro4.errors.TimeoutError, TimeoutError)):   # a socket's timeout is the latter
            return Unreachable("the %s at %s did not answer within %g s (BMI_CLIENT_TIMEOUT)"
                               % (what, where, settings.BMI_CLIENT_TIMEOUT))
    if what == "name server":
        return Unreachable("cannot reach the name server at %s" % where)
    return Unreachable("cannot reach the main server at %s (%s)" % (where, err))


class ProgressMeter:
    """How far a long operation got, on stderr, as qemu-img convert -p and rbd show it."""

    def __init__(self, operation):
        self.operation = operation
        self.started = time.monotonic()
        self.shown = False

    def show(self, progress):
        if not progress or not progress["total"]:
            return
        done, total = progress["done"], progress["total"]
        rate = done / max(time.monotonic() - self.started, 1e-3)
        sys.stderr.write("\r%s: %3d%% (%s of %s, %s/s)  " % (self.operation, 100 * done // total, size(done),
                                                            size(total), size(rate)))
        sys.stderr.flush()
        self.shown = True

    def end(self):
        if self.shown:
            sys.stderr.write("\n")


def size(count):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return "%.1f %s" % (count, unit) if unit != "B" else "%d B" % count
        count /= 1024
    return "%.1f TiB" % count


def call(settings, request, meter=None):
    """Call the operation of request at its gateway, or at any that answers, through the main
    server's follow (pings directly), showing progress on meter if given; every wait is bounded by
    BMI_CLIENT_TIMEOUT."""
    where = "%s:%s" % (settings.BMI_NS_HOST, settings.BMI_NS_PORT)
    try:
        with pyrosetup.locate_ns(settings) as ns:
            gateways = pyrosetup.gateways(ns, settings.BMI_OBJECT_NAME)
    except Pyro4.errors.PyroError as err:
        raise unreachable(err, "name server", where, settings)
    if not gateways:
        raise Unreachable("the main server is not registered with the name server at %s" % where)
    if request.gateway and request.gateway not in gateways:
        raise Unreachable("gateway %s is not registered with the name server at %s (these are: %s)"
                          % (request.gateway, where, ", ".join(sorted(gateways))))
    uris = [gateways[request.gateway]] if request.gateway else random.sample(list(gateways.values()), len(gateways))
    try:
        with connected(uris, settings) as server:
            if request.operation == "ping":
                return server.ping()
            if request.operation == "status":
                return status(server, gateways, settings)
            for item in server.follow(request.operation, request.arguments, request.options):
                if "result" in item:
                    return item["result"]
                if meter:
                    meter.show(item["progress"])
    except Pyro4.errors.CommunicationError as err:
        raise unreachable(err, "main server", "%s:%s" % (server._pyroUri.host, server._pyroUri.port), settings)
    finally:
        if meter:
            meter.end()


def status(server, registered, settings):
    """{"up": all up, "name server": where, "gateways": {name: health or {"up": False, "detail": why}}}:
    every gateway the records know (as listed by server) and every one registered, each asked."""
    known = {g["name"] for g in server.list_all_images()["gateways"]} | set(registered)
    gateways = {}
    for name in sorted(known):
        if name not in registered:
            gateways[name] = {"up": False, "detail": "not registered with the name server"}
            continue
        try:
            with pyrosetup.proxy(registered[name]) as peer:
                parts = peer.health()["parts"]
            gateways[name] = {"up": all(part["up"] for part in parts.values()), "parts": parts}
        except Pyro4.errors.CommunicationError as err:
            gateways[name] = {"up": False, "detail": str(unreachable(err, "main server", registered[name].location,
                                                                     settings))}
    return {"up": all(g["up"] for g in gateways.values()),
            "name server": "%s:%s" % (settings.BMI_NS_HOST, settings.BMI_NS_PORT), "gateways": gateways}


def connected(uris, settings):
    """A proxy connected to the first of uris that takes the connection. If none does, the last's
    error; if one refuses the key, its error at once: the others would refuse it too."""
    for uri in uris:
        server = pyrosetup.proxy(uri)
        try:
            server._pyroBind()
            return server
        except Pyro4.errors.CommunicationError as err:
            server._pyroRelease()
            if uri == uris[-1] or any(isinstance(cause, Pyro4.errors.SecurityError) for cause in causes(err)):
                raise unreachable(err, "main server", "%s:%s" % (uri.host, uri.port), settings)


def main(argv):
    try:
        request = parse(argv)
        if request.operation is None:
            print(help_text(request.arguments[0] if request.arguments[:1] and request.arguments[0] in OPERATIONS
                            else None))
            return EXIT_OK
        settings = config.Settings(**request.overrides)
    except (UsageError, ValueError) as err:
        print("mainclient: %s" % err, file=sys.stderr)
        return EXIT_USAGE
    try:
        pyrosetup.configure(settings, timeout=settings.BMI_CLIENT_TIMEOUT)
    except (OSError, ValueError) as err:   # no usable key file, or TLS half configured
        print("mainclient: authentication failed: %s" % err, file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        meter = ProgressMeter(request.operation) if sys.stderr.isatty() and not request.as_json else None
        result = call(settings, request, meter)
    except Unreachable as err:
        print("mainclient: %s" % err, file=sys.stderr)
        return EXIT_UNREACHABLE
    except errors.BadInput as err:   # the server's own check of the arguments
        print("mainclient: %s" % err, file=sys.stderr)
        return err.exit_code
    except errors.ServiceError as err:
        print("mainclient: %s failed: %s" % (request.operation, err), file=sys.stderr)
        return err.exit_code
    except Exception as err:
        print("mainclient: %s failed: %s" % (request.operation, err), file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, sort_keys=True) if request.as_json else show(request.operation, result))
    if request.operation == "status" and not result["up"]:
        return errors.Unavailable.exit_code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
