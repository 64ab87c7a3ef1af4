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
from bmi.power import ACTIONS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3   # and each errors kind's exit_code

# operation: (arguments, what it does)
OPERATIONS = {
    "import_image": (["IMAGE", "PATH"], "copy the disk image file PATH (on the server host; raw, qcow2, vmdk, vdi "
                                        "or vhdx) in as golden image IMAGE, stored raw"),
    "provision": (["IMAGE", "NODE"], "give NODE a copy-on-write clone of IMAGE, its iSCSI target and iPXE boot script; "
                                     "--mac MAC (one for each of its network cards) lets the boot service know it; "
                                     "--bmc-... give its BMC, and --reboot powers it into its new disk"),
    "detach_node": (["NODE"], "take NODE's target, disk and boot script away (--power-off: once its BMC turned it off)"),
    "power": (["NODE", "ACTION"], "turn NODE on, off, or off and on (cycle) through its BMC, or show its power state "
                                  "(status)"),
    "create_snapshot": (["NODE", "SNAPSHOT"], "turn NODE's current disk into the new golden image SNAPSHOT"),
    "delete_image": (["IMAGE"], "remove the golden image IMAGE (refused while nodes are provisioned from it)"),
    "list_all_images": ([], "list the golden images, the provisioned nodes and the gateways"),
    "remove_gateway": (["GATEWAY"], "forget a gateway that is gone for good (refused while it answers)"),
    "ping": ([], "check that the main server answers"),
    "status": ([], "show whether every name server, every gateway and what each needs (its tgtd, its storage or "
                   "Ceph, its boot service) are up; exit code 8 when something is down"),
}


def check_action(action):
    if action not in ACTIONS:
        raise ValueError("unknown power action %r: one of %s" % (action, ", ".join(ACTIONS)))


CHECKS = {"IMAGE": names.check_image, "SNAPSHOT": names.check_image, "NODE": names.check_node,
          "PATH": names.check_path, "GATEWAY": names.check_gateway, "ACTION": check_action}
Call = collections.namedtuple("Call", "operation arguments options as_json overrides gateway")


class UsageError(Exception):
    pass


class Unreachable(Exception):
    pass


OPTIONS = [("--json", "print the result as one JSON object"),
           ("--ns-host HOST[:PORT],...", "the name servers, asked in turn (sets BMI_NS_HOST)"),
           ("--ns-port PORT", "the name server's port (sets BMI_NS_PORT)"),
           ("--gateway NAME", "call that gateway (by default, any that answers)"),
           ("--mac MAC", "provision: a MAC address of the node's (again for each network card)"),
           ("--bmc-driver DRIVER", "provision: the driver of the node's BMC (ipmi)"),
           ("--bmc-address HOST[:PORT]", "provision: where the node's BMC answers"),
           ("--bmc-user USER", "provision: the BMC's user"),
           ("--bmc-password-file FILE", "provision: a file whose first line is that user's password"),
           ("--reboot", "provision: power the node off and on into its new disk, once that is ready"),
           ("--project PROJECT", "import_image, provision: the project the image or node is for (by default, "
                                 "the caller's one project)"),
           ("--public", "import_image: every project may provision from the image"),
           ("--power-off", "detach_node: power the node off first, and wait until it is off"),
           ("--node NODE", "list_all_images: that node alone, and its image"),
           ("--image IMAGE", "list_all_images: that image alone, and the nodes provisioned from it"),
           ("-h, --help", "this help; after an operation, that operation's")]
VALUE_OPTIONS = {"--ns-host": "BMI_NS_HOST", "--ns-port": "BMI_NS_PORT", "--gateway": "gateway", "--mac": "macs",
                 "--bmc-driver": "bmc driver", "--bmc-address": "bmc address", "--bmc-user": "bmc user",
                 "--bmc-password-file": "bmc password file", "--project": "project", "--node": "node",
                 "--image": "image"}
BMC_OPTIONS = ("bmc driver", "bmc address", "bmc user", "bmc password file")   # all four, or none
REPEATED = {"macs"}   # options given once for each value
FLAGS = {"--json", "--force", "--reboot", "--power-off", "--public"}
FLAG_OPERATIONS = {"--force": "detach_node", "--power-off": "detach_node", "--reboot": "provision",
                   "--public": "import_image"}
PROJECT_OPERATIONS = ("import_image", "provision")   # which take --project
LIST_FILTERS = {"node": names.check_node, "image": names.check_image}   # list_all_images's --node, --image


def usage(operation):
    flag = {"detach_node": " [--force] [--power-off]", "import_image": " [--project PROJECT] [--public]",
            "provision": " [--project PROJECT] [--mac MAC]... [--bmc-driver DRIVER --bmc-address HOST[:PORT] "
                         "--bmc-user USER --bmc-password-file FILE [--reboot]]",
            "list_all_images": " [--node NODE] [--image IMAGE]"}.get(operation, "")
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
    project = overrides.pop("project", None)
    filters = {option: overrides.pop(option) for option in LIST_FILTERS if option in overrides}
    bmc = {option: overrides.pop(option) for option in BMC_OPTIONS if option in overrides}
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
    for flag in sorted(flags & set(FLAG_OPERATIONS)):
        if operation != FLAG_OPERATIONS[flag]:
            raise UsageError("%s goes with %s only" % (flag, FLAG_OPERATIONS[flag]))
    if (macs or bmc) and operation != "provision":
        raise UsageError("--%s goes with provision only" % ("mac" if macs else sorted(bmc)[0].replace(" ", "-")))
    if filters and operation != "list_all_images":
        raise UsageError("--%s goes with list_all_images only" % sorted(filters)[0])
    if project is not None and operation not in PROJECT_OPERATIONS:
        raise UsageError("--project goes with %s only" % " and ".join(PROJECT_OPERATIONS))
    if bmc and len(bmc) != len(BMC_OPTIONS) or "--reboot" in flags and not bmc:
        raise UsageError("a node's BMC needs --bmc-driver, --bmc-address, --bmc-user and --bmc-password-file%s"
                         % (", for --reboot" if not bmc else ""))
    options = {flag.lstrip("-").replace("-", "_"): True for flag in flags & set(FLAG_OPERATIONS)}
    try:
        for kind, value in zip(expected + ["GATEWAY"], arguments + ([gateway] if gateway is not None else [])):
            CHECKS[kind](value)
        if macs:
            options["macs"] = list(names.check_macs(macs))
        if project is not None:
            options["project"] = names.check_project(project)
        options.update({option: LIST_FILTERS[option](value) for option, value in filters.items()})
    except ValueError as err:
        raise UsageError(str(err))
    if bmc:
        options["bmc"] = {"driver": bmc["bmc driver"], "address": bmc["bmc address"], "user": bmc["bmc user"],
                          "password": read_password(bmc["bmc password file"])}
    return Call(operation, arguments, options, "--json" in flags, overrides, gateway)


def read_password(path):
    """The first line of the file path: a password that no command line shows."""
    try:
        with open(path) as f:
            return f.readline().rstrip("\n")
    except OSError as err:
        raise UsageError("cannot read the BMC password file %s: %s" % (path, err.strerror))


def show(operation, result):
    """The result for a person to read."""
    if operation == "provision":
        portals = ", ".join("%s (%s)" % (portal, gateway) for gateway, portal in sorted(result["portals"].items()))
        lines = ["provisioned node %(node)s from image %(image)s" % result] + [
            "  %-12s %s" % (key + ":", value) for key, value in (
                ("iqn", result["iqn"]), ("portal", result["portal"]), ("lun", result["lun"]),
                ("macs", ", ".join(result["macs"]) or "none (the boot service does not know it)"),
                ("boot_script", result["boot_script"]), ("exported at", portals))]
        if result.get("power"):
            lines.append("  %-12s %s (rebooted into its new disk)" % ("power:", result["power"]))
        if result["down"]:
            lines.append("  %-12s %s (not answering: they export it once they are back)" % ("down:", ", ".join(result["down"])))
        return "\n".join(lines)
    if operation == "remove_gateway":
        return "removed gateway %(gateway)s" % result
    if operation == "power":
        return "node %(node)s: power %(power)s" % result
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
        lines = ["name server %s: %s" % (ns["address"], "up" if ns["up"] else "DOWN (%s)" % ns["detail"])
                 for ns in result["name servers"]]
        for name, gateway in sorted(result["gateways"].items()):
            lines.append("gateway %s: %s%s" % (name, "up" if gateway["up"] else "DOWN",
                                               "" if "parts" in gateway else " (%s)" % gateway["detail"]))
            lines += ["  %-14s %s (%s)" % (part + ":", "up" if p["up"] else "DOWN", p["detail"])
                      for part, p in sorted(gateway.get("parts", {}).items())]
        return "\n".join(lines)
    lines = ["golden images:"] + ["  %-30s %14d bytes%s" % (i["name"], i["size_bytes"], owner(i)) for i in result["images"]]
    lines += ["provisioned nodes:"] + ["  %-30s %-30s %s  at %s%s%s%s" % (
        n["node"], n["image"], n["iqn"], ", ".join(n["gateways"]), "  macs " + ", ".join(n["macs"]) if n["macs"] else "",
        "  bmc %(driver)s %(user)s@%(address)s" % n["bmc"] if n.get("bmc") else "", owner(n))
        for n in result["nodes"]]
    lines += ["gateways:"] + ["  %-30s %-30s %s" % (g["name"], g["portal"], "up" if g["up"] else "DOWN")
                              for g in result["gateways"]]
    return "\n".join(lines)


def owner(listed):
    """A listed image's or node's project, and whether it is public: "" for neither (the admins')."""
    return ("  project " + listed["project"] if "project" in listed else "") + ("  public" if listed.get("public") else "")


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
    gateways = registered_gateways(settings, request.gateway)
    uris = [gateways[request.gateway]] if request.gateway else random.sample(list(gateways.values()), len(gateways))
    try:
        with connected(uris, settings) as server:
            # json reads an answer 20 times faster than serpent (a listing of 10,000 nodes, 1.5 MB:
            # 0.18 s against 3.5 s), but cannot carry a file name that is no UTF-8: serpent for a PATH
            if "PATH" not in OPERATIONS.get(request.operation, ([],))[0]:
                server._pyroSerializer = "json"
            if request.operation == "ping":
                return server.ping()
            if request.operation == "status":
                return status(server, settings)
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


def ask_name_servers(settings):
    """Each name server of BMI_NS_HOST in turn, asked for the service's gateways: (where, {gateway:
    uri}, None), or (where, None, the Unreachable error)."""
    for address in pyrosetup.name_servers(settings):
        where = "%s:%s" % address
        try:
            with pyrosetup.locate_ns(settings, address) as ns:
                gateways = pyrosetup.gateways(ns, settings.BMI_OBJECT_NAME)
        except Pyro4.errors.PyroError as err:
            yield where, None, unreachable(err, "name server", where, settings)
        else:
            yield where, gateways, None


def registered_gateways(settings, wanted=None):
    """{gateway: uri} of the first name server of BMI_NS_HOST that has the service's gateways (and
    wanted among them) registered, each asked in turn; Unreachable, saying what each said, if none."""
    problems = []
    for where, gateways, problem in ask_name_servers(settings):
        if problem is None and not gateways:
            problem = "the main server is not registered with the name server at %s" % where
        elif problem is None and wanted and wanted not in gateways:
            problem = "gateway %s is not registered with the name server at %s (these are: %s)" % (
                wanted, where, ", ".join(sorted(gateways)))
        if problem is None:
            return gateways
        problems.append(str(problem))
    raise Unreachable("; ".join(problems))


def status(server, settings):
    """{"up": all up, "name servers": [{"address": where, "up": bool, "detail": why down}], "gateways":
    {name: health or {"up": False, "detail": why}}}: every name server, every gateway the records know
    (as listed by server) and every one registered with a name server, each asked."""
    name_servers, registered = [], {}
    for where, found, problem in ask_name_servers(settings):
        name_servers.append({"address": where, "up": True} if problem is None else
                            {"address": where, "up": False, "detail": str(problem)})
        registered = dict(found or {}, **registered)   # where two differ, the first name server's
    known = {g["name"] for g in server.list_all_images()["gateways"]} | set(registered)
    gateways = {}
    for name in sorted(known):
        if name not in registered:
            gateways[name] = {"up": False, "detail": "not registered with any name server"}
            continue
        try:
            with pyrosetup.proxy(registered[name]) as peer:
                parts = peer.health()["parts"]
            gateways[name] = {"up": all(part["up"] for part in parts.values()), "parts": parts}
        except Pyro4.errors.CommunicationError as err:
            gateways[name] = {"up": False, "detail": str(unreachable(err, "main server", registered[name].location,
                                                                     settings))}
    return {"up": all(part["up"] for part in name_servers + list(gateways.values())),
            "name servers": name_servers, "gateways": gateways}


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


def main(argv=None):
    try:
        request = parse(sys.argv[1:] if argv is None else argv)   # None: this program's (the command bmi calls it so)
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
    sys.exit(main())
