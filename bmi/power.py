"""Power control of nodes through their BMCs (README, Power).

A driver is a script of scripts/power/, named by the BMC's driver: a new driver is one new script.
It answers three commands (scripts/README), `status`, `on` and `off`, each with the BMC's address
and user as arguments and its password in the environment (BMI_BMC_PASSWORD), which no command line
shows. Power builds the rest on those three, as Ironic's power interfaces do: after on or off it
waits until the BMC reports the state (a BMC takes the request before the machine gets there), and a
cycle is off, then on.
"""
import logging
import re
import time

from bmi import runner
from bmi.errors import BadInput, Unavailable
from bmi.nodes import Bmc
from config import script_in

log = logging.getLogger("bmi.power")
ACTIONS = ("on", "off", "cycle", "status")
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")
_USER = re.compile(r"[A-Za-z0-9._@-]{1,64}")
POLL_SECONDS = 0.5   # how often a change of state is looked for


def bmc_from(value):
    """The Bmc that value, a dict of driver, address, user and password, describes; BadInput, which
    never repeats the password, if it is not one."""
    if not isinstance(value, dict) or set(value) != {"driver", "address", "user", "password"}:
        raise BadInput("a BMC is given by its driver, address, user and password, all four")
    driver, address, user, password = (value[key] for key in ("driver", "address", "user", "password"))
    if not all(isinstance(part, str) for part in (driver, address, user, password)):
        raise BadInput("a BMC's driver, address, user and password are text")
    try:
        script_in("power")(driver)
    except ValueError as err:
        raise BadInput("BMC driver %r %s" % (driver, err)) from None
    address_match = _ADDRESS.fullmatch(address)
    if not address_match or not 1 <= int(address_match.group(2) or 1) <= 65535:
        raise BadInput("invalid BMC address %r: HOST, HOST:PORT or [IPV6]:PORT" % address)
    if not _USER.fullmatch(user):
        raise BadInput("invalid BMC user %r: 1 to 64 letters, digits, '.', '_', '@' or '-'" % user)
    if not 1 <= len(password) <= 128 or not password.isprintable():
        raise BadInput("a BMC password is 1 to 128 printable characters")
    return Bmc(driver, address, user, password)


class Power:
    """The power of nodes, by their records' BMCs, each call bounded in time: the driver's own
    wait for its BMC (BMI_BMC_TIMEOUT), the script's (BMI_SCRIPT_TIMEOUT), and the wait for a
    state to show (BMI_POWER_TIMEOUT)."""

    def __init__(self, settings):
        self.settings = settings

    def act(self, record, action):
        """Do action (ACTIONS) to record's node: its power state afterwards, "on" or "off". A change
        is logged with its time: the BMC's answers and the wait for the state, which are the
        machine's, not the service's (the move benchmark takes them from an operation's time)."""
        if action == "status":
            return self.status(record.bmc)
        started = time.monotonic()
        if action == "cycle" and self.status(record.bmc) == "on":
            self.turn(record, "off")
        state = self.turn(record, "on" if action == "cycle" else action)
        log.info("node %s: power %s, now %s, in %.3f s at its BMC", record.node, action, state,
                 time.monotonic() - started)
        return state

    def status(self, bmc):
        state = self._driver(bmc, "status").strip()
        if state not in ("on", "off"):
            raise runner.CommandFailed("the BMC at %s gave no power state" % bmc.address)
        return state

    def turn(self, record, state):
        """Turn record's node on or off, and wait until its BMC says it is."""
        self._driver(record.bmc, state)
        deadline = time.monotonic() + self.settings.BMI_POWER_TIMEOUT
        while self.status(record.bmc) != state:
            if time.monotonic() >= deadline:
                raise Unavailable("node %s is not %s %g s after its BMC at %s took the request (BMI_POWER_TIMEOUT)"
                                  % (record.node, state, self.settings.BMI_POWER_TIMEOUT, record.bmc.address))
            time.sleep(POLL_SECONDS)
        return state

    def _driver(self, bmc, command):
        script = runner.Script("power", bmc.driver, self.settings)
        return runner.run([script.path, command, bmc.address, bmc.user], script.timeout,
                          dict(script.env, BMI_BMC_PASSWORD=bmc.password))
